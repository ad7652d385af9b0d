"""Auxiliary models (gibench.store.auxiliary): trained once per runs directory, atomic, lock-protected, SIGKILL-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from gibench.core.errors import GibenchError
from gibench.store.auxiliary import AuxiliaryModels, classifier, require_quality
from gibench.suites.suite import PluginSpec, TrainConfig


def _linear() -> nn.Module:
    return nn.Linear(4, 2)


def _trainer(calls: list[int], value: float = 0.5):
    def train():
        calls.append(1)
        model = _linear()
        torch.rand(100)  # consumes random numbers, as real training does
        return model, {"test_accuracy": value}
    return train


def test_trained_once_then_loaded_from_the_store(tmp_path: Path) -> None:
    calls: list[int] = []
    first = AuxiliaryModels(tmp_path / "aux")
    a = first.get_or_train("judge", {"data": "x", "seed": 0}, _linear, _trainer(calls))
    again = first.get_or_train("judge", {"seed": 0, "data": "x"}, _linear, _trainer(calls))  # same identity
    assert again is a and len(calls) == 1 and first.trained == [a.hash]
    rerun = AuxiliaryModels(tmp_path / "aux")  # a new run on the same runs directory
    b = rerun.get_or_train("judge", {"data": "x", "seed": 0}, _linear, _trainer(calls))
    assert len(calls) == 1 and rerun.trained == []
    assert b.hash == a.hash and b.quality == {"test_accuracy": 0.5}
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    folder = tmp_path / "aux" / f"judge-{a.hash}"
    assert json.loads((folder / "status.json").read_text())["state"] == "trained"
    assert json.loads((folder / "identity.json").read_text())["identity"] == {"data": "x", "seed": 0}
    other = rerun.get_or_train("judge", {"data": "x", "seed": 1}, _linear, _trainer(calls))
    assert other.hash != a.hash and len(calls) == 2


def test_random_state_after_is_the_same_whether_trained_or_loaded(tmp_path: Path) -> None:
    torch.manual_seed(3)
    AuxiliaryModels(tmp_path / "aux").get_or_train("judge", {"k": 1}, _linear, _trainer([]))
    after_training = torch.rand(5)
    torch.manual_seed(3)
    AuxiliaryModels(tmp_path / "aux").get_or_train("judge", {"k": 1}, _linear, _trainer([]))
    assert torch.equal(torch.rand(5), after_training)


def test_damaged_checkpoint_is_quarantined_and_retrained(tmp_path: Path) -> None:
    calls: list[int] = []
    a = AuxiliaryModels(tmp_path / "aux").get_or_train("denoiser", {"k": 1}, _linear, _trainer(calls))
    checkpoint = a.folder / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:20])
    b = AuxiliaryModels(tmp_path / "aux").get_or_train("denoiser", {"k": 1}, _linear, _trainer(calls))
    assert len(calls) == 2 and b.hash == a.hash
    moved = list((tmp_path / "quarantine").rglob("checkpoint.pt"))
    assert len(moved) == 1 and moved[0].stat().st_size == 20  # kept, not deleted
    reasons = [json.loads(p.read_text()) for p in (tmp_path / "quarantine").rglob("reason.json")]
    assert "unreadable auxiliary model" in reasons[0]["reason"]


def test_tracking_records_what_an_evaluation_used(tmp_path: Path) -> None:
    aux = AuxiliaryModels(tmp_path / "aux")
    with aux.tracking() as used:
        judge = aux.get_or_train("judge", {"k": 1}, _linear, _trainer([], 0.97))
        aux.get_or_train("judge", {"k": 1}, _linear, _trainer([], 0.97))
    assert [u.record() for u in used] == [{"kind": "judge", "hash": judge.hash, "quality": {"test_accuracy": 0.97},
                                           "folder": f"aux/judge-{judge.hash}"}]
    with pytest.raises(GibenchError, match="below the floor 0.99"):
        require_quality(judge, "test_accuracy", 0.99, "GAN-test")


def test_classifier_trains_with_gibench_and_records_clean_accuracy(tmp_path: Path, small_bundle) -> None:
    aux = AuxiliaryModels(tmp_path / "aux")
    train = TrainConfig(epochs=1, batch_size=128, lr=1e-2)
    spec = PluginSpec.of("gibench_linear", {}, {})
    judge = classifier(aux, "judge", small_bundle, {"dataset": "mnist_small"}, spec, train, seed=5)
    with torch.no_grad():
        independent = (judge.model(small_bundle.test.x).argmax(1) == small_bundle.test.y).float().mean().item()
    assert judge.quality["test_accuracy"] == pytest.approx(independent) and independent > 0.3  # chance is 0.1
    again = classifier(AuxiliaryModels(tmp_path / "aux"), "judge", small_bundle, {"dataset": "mnist_small"}, spec,
                       train, seed=5)
    assert again.hash == judge.hash and again.quality == judge.quality
    assert len(list((tmp_path / "aux").glob("judge-*"))) == 1


_WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from gibench.store.auxiliary import AuxiliaryModels
    root, marker, block = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "block"

    def train():
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        while block:  # wait to be killed
            time.sleep(0.05)
        time.sleep(0.5)  # long enough that the other process asks while this one trains
        return nn.Linear(4, 2), {"test_accuracy": 1.0}

    AuxiliaryModels(root).get_or_train("judge", {"k": 1}, lambda: nn.Linear(4, 2), train)
""")


def _worker(tmp_path: Path, block: bool) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "aux"), str(tmp_path / "trained.txt"),
                             "block" if block else "go"])


def test_two_processes_train_it_once(tmp_path: Path) -> None:
    workers = [_worker(tmp_path, block=False) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    assert len((tmp_path / "trained.txt").read_text().split()) == 1
    assert len(list((tmp_path / "aux").glob("judge-*/status.json"))) == 1


def test_sigkill_while_training_leaves_no_stale_claim(tmp_path: Path) -> None:
    worker = _worker(tmp_path, block=True)
    marker = tmp_path / "trained.txt"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:  # a sentinel, not a timing: wait until it trains
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    calls: list[int] = []
    aux = AuxiliaryModels(tmp_path / "aux").get_or_train("judge", {"k": 1}, _linear, _trainer(calls))
    assert len(calls) == 1 and aux.quality == {"test_accuracy": 0.5}


def test_only_the_most_recent_models_stay_in_memory_and_evicted_ones_load_again(tmp_path: Path) -> None:
    calls: list[int] = []
    aux = AuxiliaryModels(tmp_path / "aux", max_in_memory=2)
    first = aux.get_or_train("retrained", {"level": 0}, _linear, _trainer(calls))
    for level in (1, 2):
        aux.get_or_train("retrained", {"level": level}, _linear, _trainer(calls))
    assert len(aux._memory) == 2 and first.hash not in aux._memory
    again = aux.get_or_train("retrained", {"level": 0}, _linear, _trainer(calls))
    assert len(calls) == 3 and again.hash == first.hash  # loaded from disk, not retrained
    assert torch.equal(again.model.weight, first.model.weight)


def _probe_class():
    """An evaluator that trains (or reuses) one classifier per dataset, as GAN-test's judge does."""
    from gibench.api.plugin import EvalResult, Evaluator, Metric

    class JudgeProbe(Evaluator):
        metrics = (Metric("judge_accuracy", True, "the judge's clean accuracy", headline=True),)

        def evaluate(self, ctx):
            judge = classifier(ctx.aux, "judge", ctx.data, ctx.job.training_spec()["dataset"],
                               PluginSpec.of("gibench_linear", {}, {}), TrainConfig(epochs=1, batch_size=256, lr=1e-2),
                               seed=123)
            return EvalResult(scalars={"judge_accuracy": judge.quality["test_accuracy"]})

    return JudgeProbe


def test_a_suite_trains_one_judge_per_dataset_and_reports_its_quality(tmp_path: Path, register_plugin, capsys) -> None:
    from gibench.api import registry
    from gibench.cli import main
    from gibench.results.tables import auxiliary_table, collect_results
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    register_plugin(registry.evaluators, "judge_probe", _probe_class())
    suite = load_suite(write_suite(tmp_path, evaluators=["judge_probe"]))
    runs = tmp_path / "runs"
    run_suite(suite, runs, RunOptions(device="cpu"))
    folders = list((runs / "aux").glob("judge-*"))
    assert len(folders) == 1  # two jobs on one dataset share one judge
    quality = json.loads((folders[0] / "quality.json").read_text())
    results = [json.loads(p.read_text()) for p in runs.glob("jobs/*/results/judge_probe__*.json")]
    assert len(results) == 2
    for result in results:
        assert result["auxiliary"] == [{"kind": "judge", "hash": folders[0].name[len("judge-"):],
                                        "quality": quality, "folder": f"aux/{folders[0].name}"}]
    table = auxiliary_table(collect_results(runs))
    assert table[["dataset", "evaluator", "kind", "models", "jobs"]].values.tolist() == [
        ["mnist_subset", "judge_probe", "judge", 1, 2]]
    assert f"test_accuracy {quality['test_accuracy']:.4g}" in table["quality"][0]
    stamp = (folders[0] / "checkpoint.pt").stat().st_mtime_ns
    run_suite(load_suite(write_suite(tmp_path, evaluators=["judge_probe"], seeds=[0, 1])), runs,
              RunOptions(device="cpu"))  # more jobs on the same dataset: still one judge, never retrained
    assert (list((runs / "aux").glob("judge-*")) == folders
            and (folders[0] / "checkpoint.pt").stat().st_mtime_ns == stamp)
    assert main(["report", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "auxiliary models the numbers above depend on" in out and "judge" in out


def test_doctor_reports_a_damaged_auxiliary_model_and_fix_moves_it_aside(tmp_path: Path) -> None:
    from gibench.store.doctor import doctor

    runs = tmp_path / "runs"
    good = AuxiliaryModels(runs / "aux").get_or_train("judge", {"k": 1}, _linear, _trainer([]))
    bad = AuxiliaryModels(runs / "aux").get_or_train("judge", {"k": 2}, _linear, _trainer([]))
    assert doctor(runs) == []
    (bad.folder / "checkpoint.pt").write_bytes((bad.folder / "checkpoint.pt").read_bytes()[:100])
    problems = doctor(runs)
    assert [(p.kind, p.path, p.what) for p in problems] == [
        ("damaged", bad.folder, "auxiliary model: checkpoint.pt differs from the size and SHA-256 that status.json "
                                "recorded")]
    assert bad.folder.exists()  # without --fix nothing changes
    fixed = doctor(runs, fix=True)
    assert fixed[0].fixed.startswith("moved to ") and not bad.folder.exists() and good.folder.exists()
    assert len(list((runs / "quarantine").rglob("checkpoint.pt"))) == 1
    calls: list[int] = []
    AuxiliaryModels(runs / "aux").get_or_train("judge", {"k": 2}, _linear, _trainer(calls))
    assert calls == [1] and doctor(runs) == []


def test_tensors_sha256_hashes_zero_dim_tensors_like_their_one_element_view():
    """BatchNorm's ``num_batches_tracked`` is a 0-dim tensor: hashing a state dict must not fail on it, and a scalar
    differs from another scalar but its bytes are those of the same value as a 1-element tensor (shape recorded)."""
    import torch

    from gibench.store.auxiliary import tensors_sha256

    assert tensors_sha256([torch.tensor(3)]) != tensors_sha256([torch.tensor(4)])
    assert tensors_sha256([torch.tensor(3)]) != tensors_sha256([torch.tensor([3])])  # the shape is part of it
    assert tensors_sha256([torch.ones(2, 3)]) == tensors_sha256([torch.ones(2, 3).t().contiguous().t()])
