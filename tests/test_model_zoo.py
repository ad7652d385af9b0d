"""Trained models one call away: ``gibench export`` packs a runs directory's models (safetensors, a card each,
``models.json`` with every file's SHA-256), ``gibench.load_model`` / ``gibench load`` gives one back by name from a runs
directory, an exported folder, a weights file or a URL, exactly as the evaluators saw it, and refuses any file that
is not what its hash says (docs/models.md)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import pickle
import threading
from pathlib import Path

import pytest
import torch

import gibench
from gibench.cli import main
from gibench.running.runner import RunOptions, run_suite
from gibench.store.runs import RunStore
from gibench.submissions.model_cards import ModelSelectionError
from gibench.submissions.model_export import export_models
from gibench.submissions.model_files import ModelFileError
from gibench.suites.suite import load_suite
from gibench.training.models import build_model
from tests.conftest import write_suite

#: 2 backbones × 2 regularizers × 2 seeds of one epoch on the bundled digits; accuracy twice (whole test split and
#: its first 100 images) so that the card has to say which one is the clean accuracy.
ZOO_SUITE = dict(
    backbones=["gibench_linear", {"gibench_mlp": {"act": "softplus", "hidden": 16}}],
    regularizers=["erm", {"gradient_norm": {"weight": 1.0e-3}}],
    evaluators=["accuracy", {"accuracy": {"max_images": 100}}],
    seeds=[0, 1],
    train={"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 1.0e-2},
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """(runs directory, exported folder of every model, test images)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("zoo")
        runs = root / "runs"
        summary = run_suite(load_suite(write_suite(root, **ZOO_SUITE)), runs, RunOptions(device="cpu"))
        assert summary.ok and len(summary.jobs) == 8
        exported = export_models(runs, root / "export")
        assert len(exported.models) == 8 and not exported.left_out
        yield runs, root / "export", gibench.load_dataset("mnist_subset").test.x[:64]
    finally:
        torch.set_num_threads(threads)


def _job(runs: Path, **labels):
    """The job folder whose labels match (backbone name, variant, seed)."""
    for folder in RunStore(runs).jobs():
        job = folder.spec()
        values = {"backbone": job.labels.backbone, "variant": job.labels.variant, "seed": job.labels.seed}
        if all(values[k] == v for k, v in labels.items()):
            return folder
    raise AssertionError(f"no job {labels}")


def _as_evaluated(folder):
    """The model the job runner hands to the evaluators: build_model with the job's options, the checkpoint loaded
    through the store, eval mode."""
    spec = folder.spec().spec
    bundle = gibench.load_dataset("mnist_subset")
    return folder.load_weights(build_model(spec["backbone"]["name"], spec["backbone"]["options"], bundle)).eval()


@torch.no_grad()
def test_export_then_load_gives_the_evaluated_models_logits_bit_for_bit(zoo):
    runs, export, x = zoo
    folder = _job(runs, backbone="gibench_mlp", variant="gradient_norm(weight=0.001)", seed=1)
    evaluated = _as_evaluated(folder)
    reference = evaluated(x)
    rng = torch.get_rng_state()
    from_export = gibench.load_model(export, dataset="mnist_subset", backbone="gibench_mlp(hidden=16, act=softplus)",
                                     regularizer="gradient_norm(weight=1e-3)", seed=1)
    from_runs = gibench.load_model(runs, backbone="gibench_mlp", regularizer="gradient_norm", seed=1)
    from_file = gibench.load_model(export / folder.hash / "model.safetensors")
    assert torch.equal(torch.get_rng_state(), rng)  # building the network leaves the caller's random state alone
    for model in (from_export, from_runs, from_file):
        assert not model.training and isinstance(model.normalize, type(evaluated.normalize))
        assert torch.equal(model(x), reference)


def test_the_export_lists_every_file_with_its_hash_and_the_card_says_what_the_model_is(zoo):
    runs, export, _ = zoo
    index = json.loads((export / "models.json").read_text())
    assert index["format"] == "gibench-models" and len(index["models"]) == 8
    for entry in index["models"]:
        for name, ref in entry["files"].items():
            data = (export / ref["path"]).read_bytes()
            assert ref["path"] == f"{entry['job_hash']}/{name}"
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (ref["sha256"], ref["bytes"])
    folder = _job(runs, backbone="gibench_linear", variant="erm", seed=0)
    card = json.loads((export / folder.hash / "card.json").read_text())
    status = folder.status()
    assert card["job_hash"] == folder.hash and card["training"]["spec"] == folder.spec().spec
    assert card["row"].items() >= {"dataset": "mnist_subset", "backbone": "gibench_linear", "variant": "erm",
                                   "seed": 0, "train_label": "1 ep · adam · lr 0.01"}.items()
    model = card["model"]
    assert model["backbone"] == "gibench_linear" and (model["num_classes"], model["in_chans"]) == (10, 1)
    assert model["image_size"] == [28, 28] and "img_size=(28, 28)" in model["call"] and len(model["mean"]) == 1
    assert card["training"]["config"]["epochs"] == 1 and card["training"]["config"]["optimizer"] == "adam"
    headline = {(m["evaluator"], m["params"].get("max_images")): m for m in card["metrics"]["headline"]}
    assert set(headline) == {("accuracy", None), ("accuracy", 100)}
    assert all(m["version"] == "1" and m["status"] == "ok" for m in headline.values())
    assert card["metrics"]["clean_accuracy"]["value"] == headline["accuracy", None]["value"]  # the whole test split
    assert card["metrics"]["clean_accuracy"]["params"] == {}
    assert card["provenance"]["checkpoint"]["sha256"] == status.checkpoint_sha256
    (run,) = card["provenance"]["runs"]
    assert run["suite_name"] == "tiny" and run["environment"]["gibench_version"] == gibench.__version__
    assert set(card["files"]) == {"model.safetensors", "card.md"}
    markdown = (export / folder.hash / "card.md").read_text()
    assert card["name"] in markdown and card["files"]["model.safetensors"]["sha256"] in markdown
    published = "".join(p.read_text() for p in export.rglob("*") if p.suffix in (".json", ".md"))
    assert str(runs.parent) not in published  # no local path is published


def test_the_same_checkpoint_always_gives_the_same_weights_file(zoo, tmp_path):
    runs, export, _ = zoo
    again = export_models(runs, tmp_path / "again", seed=0, backbone="gibench_linear")
    assert len(again.models) == 2
    for model in again.models:
        name = f"{model.identity.job_hash}/model.safetensors"
        assert (tmp_path / "again" / name).read_bytes() == (export / name).read_bytes()


def test_selection_rules_and_clear_errors_for_no_match_or_several(zoo, tmp_path):
    runs, export, _ = zoo
    erm_linear_0 = _job(runs, backbone="gibench_linear", variant="erm", seed=0).hash
    for source in (runs, export):
        find = functools.partial(gibench.load_model, source)
        assert find(job=erm_linear_0[:6]) is not None
        assert find(backbone="gibench_linear", regularizer="erm", seed=0, train="1 ep · adam · lr 0.01") is not None
        with pytest.raises(ModelSelectionError) as several:
            find(regularizer="erm", seed=0)
        message = str(several.value)
        assert "2 models" in message and "backbone=" in message and erm_linear_0 in message
        with pytest.raises(ModelSelectionError, match="no model in .* matches backbone=resnet18. It holds 8"):
            find(backbone="resnet18")
        with pytest.raises(ModelSelectionError, match="no model"):
            find(backbone="gibench_mlp(act=softplus)", regularizer="erm", seed=0)  # hidden=16 is part of the label
    subset = export_models(runs, tmp_path / "subset", backbone="gibench_mlp", seed=[1])
    assert {(m.identity.variant, m.identity.seed) for m in subset.models} == {("erm", 1),
                                                                              ("gradient_norm(weight=0.001)", 1)}
    with pytest.raises(gibench.GibenchError, match="already exists; .* --overwrite"):
        export_models(runs, tmp_path / "subset", seed=0)
    assert len(export_models(runs, tmp_path / "subset", seed=0, overwrite=True).models) == 4


@pytest.fixture
def no_unpickling(monkeypatch):
    """Loading from an exported folder or a weights file must never unpickle anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model file was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)


def _html(path: Path) -> None:
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in to download</body></html>")


def _torch_save(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    path.write_bytes(buffer.getvalue())


TAMPERINGS = {
    "wrong hash": (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),
                   "its SHA-256 is [0-9a-f]{64}, not the recorded one"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "it is truncated: 1000 of the"),
    "html page": (_html, "it is an HTML page, not weights"),
    "torch.save zip": (_torch_save, "zip archive .* gibench never unpickles weights"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"weight": [0.0, 0.0]})), "Python pickle"),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_a_file_that_is_not_its_recorded_weights_is_refused_naming_it(zoo, tmp_path, tampering, no_unpickling):
    import shutil

    _, export, _ = zoo
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    entry = json.loads((copy / "models.json").read_text())["models"][0]
    weights = entry["files"]["model.safetensors"]
    change, message = TAMPERINGS[tampering]
    change(copy / weights["path"])
    with pytest.raises(ModelFileError, match=message) as refused:
        gibench.load_model(copy, job=entry["job_hash"])
    assert str(copy / weights["path"]) in str(refused.value) and weights["sha256"] in str(refused.value)
    if tampering in ("html page", "torch.save zip", "pickle"):  # also on its own, with no hash to compare
        with pytest.raises(ModelFileError, match=message):
            gibench.load_model(copy / weights["path"])


def test_a_submission_without_models_json_and_a_url_without_a_hash_are_clear_errors(tmp_path):
    (tmp_path / "submission.json").write_text("{}")
    with pytest.raises(gibench.GibenchError, match="submission without a models.json"):
        gibench.load_model(tmp_path)
    with pytest.raises(gibench.GibenchError, match="pass sha256="):
        gibench.load_model("https://example.org/model.safetensors", download=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/sign-in/"):  # what a drive service answers instead of the file
            body = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(zoo):
    """A server for the exported folder on 127.0.0.1 (a free port), shut down after the test."""
    _, export, _ = zoo
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(export)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.timeout(120)
@torch.no_grad()
def test_a_url_is_fetched_only_when_asked_into_the_cache_and_checked(zoo, http_server, tmp_path, no_unpickling):
    runs, export, x = zoo
    entry = json.loads((export / "models.json").read_text())["models"][3]
    weights = entry["files"]["model.safetensors"]
    url = f"{http_server}/{weights['path']}"
    cache = tmp_path / "cache"
    with pytest.raises(ModelFileError, match="download=True") as refused:
        gibench.load_model(url, sha256=weights["sha256"], cache_dir=cache)
    assert url in str(refused.value) and not cache.exists()
    model = gibench.load_model(url, sha256=weights["sha256"], download=True, cache_dir=cache)
    assert (cache / f"{weights['sha256']}.safetensors").is_file()
    reference = gibench.load_model(export, job=entry["job_hash"])
    assert torch.equal(model(x), reference(x))
    gibench.load_model(url, sha256=weights["sha256"], cache_dir=cache)  # in the cache now: no download needed
    index = export / "models.json"
    by_index = gibench.load_model(f"{http_server}/models.json", job=entry["job_hash"], download=True,
                                  sha256=hashlib.sha256(index.read_bytes()).hexdigest(), cache_dir=tmp_path / "c2")
    assert torch.equal(by_index(x), reference(x))

    other = "0" * 64
    with pytest.raises(ModelFileError, match=f"SHA-256 is {weights['sha256']}, not the recorded one") as wrong:
        gibench.load_model(url, sha256=other, download=True, cache_dir=cache)
    assert other in str(wrong.value) and not (cache / f"{other}.safetensors").exists()
    with pytest.raises(ModelFileError, match="HTML page") as html:
        gibench.load_model(f"{http_server}/sign-in/model.safetensors", sha256=other, download=True, cache_dir=cache)
    assert "sign-in/model.safetensors" in str(html.value) and other in str(html.value)
    with pytest.raises(ModelFileError, match="could not be downloaded"):
        gibench.load_model(f"{http_server}/missing.safetensors", sha256=other, download=True, cache_dir=cache)


def test_gibench_export_and_gibench_load_from_the_command_line(zoo, tmp_path, cli_output):
    runs, _, _ = zoo
    out, err = cli_output
    assert main(["export", "--runs-dir", str(runs), "--out", str(tmp_path / "cli"), "--regularizer", "erm",
                 "--seed", "0", "--seed", "1", "--backbone", "gibench_linear"]) == 0
    assert "2 model(s)" in out.getvalue()
    assert main(["load", str(tmp_path / "cli"), "--seed", "1", "--json"]) == 0
    card = json.loads(out.getvalue()[out.getvalue().index("{"):])
    assert card["row"]["seed"] == 1 and card["row"]["variant"] == "erm"
    assert "every file matched its SHA-256" in err.getvalue()
    assert main(["load", str(runs), "--backbone", "gibench_linear", "--regularizer", "erm", "--seed", "0"]) == 0
    assert "# mnist_subset / gibench_linear / erm / seed 0" in out.getvalue()
    assert main(["load", str(tmp_path / "cli")]) == 2  # two models: an error listing both, no traceback
    assert "2 models in" in err.getvalue() and "Traceback" not in err.getvalue()
