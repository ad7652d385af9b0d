"""Submissions and provenance: packaging a run store, validation errors that name file and field, the JSON Schema."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

import gibench
from gibench.core.errors import SubmissionError
from gibench.core.fsio import atomic_write_json
from gibench.store.provenance import environment_info, git_state, suite_hash
from gibench.store.records import PluginSource, ResultRecord
from gibench.store.runs import result_key
from gibench.submissions.build import (
    RESULT_COLUMNS,
    build_submission,
    load_submission,
    load_submissions,
    package_results,
    scan_submissions,
    slugify,
    submission_json_schema,
    validate_submission,
)

SUITES = {
    "tiny": {"name": "tiny", "datasets": ["mnist_subset"], "seeds": [0, 1], "train": {"epochs": 1}},
    "other": {"name": "other", "datasets": ["mnist_subset"], "seeds": [7], "train": {"epochs": 2}},
}
META = {"name": "My Method v2", "authors": ["A. Person", "B. Person"], "description": "Gradient norm, tuned.",
        "links": ["https://example.org/paper"]}


def row(job: str, reg: str, seed: int, evaluator: str, metric: str, value: float, **extra) -> dict:
    params = '{"weight": 0.01}' if reg == "gradient_norm" else "{}"
    base = {
        "job_hash": job, "dataset": "mnist_subset", "backbone": "gibench_linear", "backbone_params": "{}",
        "regularizer": reg, "regularizer_params": params,
        "variant": "gradient_norm(weight=0.01)" if reg == "gradient_norm" else reg, "seed": seed,
        "evaluator": evaluator, "evaluator_version": "1", "evaluator_params": "{}", "metric": metric, "value": value,
        "higher_is_better": metric != "auc", "headline": metric in ("accuracy", "auc"), "status": "ok",
        "regularizer_distribution": "gibench", "regularizer_plugin_version": "0.1.0",
        "evaluator_distribution": "gibench", "evaluator_plugin_version": "0.1.0",
    }
    return {**base, **extra}


def make_runs(root: Path) -> tuple[Path, pd.DataFrame]:
    """A run store with two runs (suites 'tiny' and 'other') and the long table collect_results would return."""
    runs_dir = root / "runs"
    runs_dir.mkdir()
    env = environment_info("cpu")
    plugins = {"regularizers": {"erm": {"distribution": "gibench", "version": "0.1.0"}},
               "evaluators": {"accuracy": {"distribution": "gibench", "version": "0.1.0"}}}
    runs = [
        {"suite_name": name, "suite_hash": suite_hash(SUITES[name]), "suite": SUITES[name], "jobs": jobs,
         "started": "2025-01-02T03:04:05+00:00", "finished": None if name == "other" else "2025-01-02T04:00:00+00:00",
         "environment": env, "plugins": plugins}
        for name, jobs in (("tiny", ["j0", "j1", "j2", "j3"]), ("other", ["j9"]))
    ]
    (runs_dir / "manifest.json").write_text(json.dumps({"runs": runs}))
    rows = []
    for job, reg, seed, acc in (("j0", "erm", 0, 0.91), ("j1", "erm", 1, 0.93), ("j2", "gradient_norm", 0, 0.89),
                                ("j3", "gradient_norm", 1, 0.875), ("j9", "erm", 7, 0.5)):
        rows.append(row(job, reg, seed, "accuracy", "accuracy", acc))
        rows.append(row(job, reg, seed, "pixel_perturbation", "auc", acc / 3, evaluator_params='{"max_images": 200}'))
    rows.append(row("j3", "gradient_norm", 1, "blockmnist", "leakage", float("nan"), status="skipped"))
    return runs_dir, pd.DataFrame(rows)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    return make_runs(tmp_path)


@pytest.fixture
def submitted(tmp_path: Path, runs: tuple[Path, pd.DataFrame]) -> Path:
    runs_dir, table = runs
    return build_submission(runs_dir, tmp_path / "submissions", META, "tiny", results=table)


# ----------------------------------------------------------------------------------------------------------------------
# provenance


def test_environment_info_records_versions_and_no_hostname() -> None:
    info = environment_info("cpu")
    assert info["gibench_version"] == gibench.__version__
    assert info["device"] == "cpu" and info["device_name"]
    import numpy
    import torch
    assert info["torch"] == torch.__version__.split("+")[0] or info["torch"] == torch.__version__
    assert info["numpy"] == numpy.__version__ and info["cuda"] == torch.version.cuda
    assert info["cuda_available"] == torch.cuda.is_available()
    assert socket.gethostname() not in json.dumps(info)


def test_git_commit_only_for_a_tracked_gibench_checkout(tmp_path: Path) -> None:
    package = Path(gibench.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    tracked = subprocess.run(["git", "-C", str(package), "ls-files", "--error-unmatch", "__init__.py"],
                             capture_output=True).returncode == 0
    commit, dirty = git_state(package)
    assert commit == (head.stdout.strip() if tracked and head.returncode == 0 else None)
    assert (dirty is None) == (commit is None)
    assert git_state(tmp_path) == (None, None)  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "__init__.py").write_text("")
    # an untracked package inside some other git repository must not report that repository's commit
    assert git_state(tmp_path) == (None, None)
    subprocess.run([*git, "add", "__init__.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "new_plugin.py").write_text("")  # an untracked module makes the checkout dirty
    assert git_state(tmp_path) == (head, True)


def test_suite_hash_is_sha256_of_canonical_json() -> None:
    suite = {"seeds": [0, 1], "name": "tiny", "train": {"lr": 0.001, "epochs": 3}}
    text = '{"name":"tiny","seeds":[0,1],"train":{"epochs":3,"lr":0.001}}'
    assert suite_hash(suite) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert suite_hash(dict(reversed(list(suite.items())))) == suite_hash(suite)
    assert suite_hash({**suite, "seeds": [0, 2]}) != suite_hash(suite)


# ----------------------------------------------------------------------------------------------------------------------
# building


def test_build_writes_metadata_provenance_and_filtered_results(submitted: Path, runs) -> None:
    _, table = runs
    assert re.fullmatch(r"my-method-v2-[0-9a-f]{12}", submitted.name)
    sub = validate_submission(submitted)
    assert sub.id == submitted.name and sub.metadata.authors == META["authors"]
    assert [s.name for s in sub.provenance.suites] == ["tiny"]
    assert sub.provenance.suites[0].hash == suite_hash(SUITES["tiny"])
    assert [r.jobs for r in sub.provenance.runs] == [["j0", "j1", "j2", "j3"]]
    assert sub.provenance.runs[0].environment.gibench_version == gibench.__version__
    assert sub.provenance.runs[0].plugins["evaluators"]["accuracy"].distribution == "gibench"
    assert sub.metric_descriptions["accuracy"]["accuracy"]  # from the installed accuracy plugin
    loaded = load_submission(submitted).results
    expected = table[table["job_hash"] != "j9"]
    assert len(loaded) == len(expected) == sub.results.rows == 9
    assert list(loaded.columns) == list(RESULT_COLUMNS)
    assert loaded["seed"].dtype == "int64" and loaded["value"].dtype == "float64"
    merged = loaded.merge(expected, on=["job_hash", "evaluator", "metric"], suffixes=("", "_in"))
    ok = merged["status"] == "ok"
    assert (merged.loc[ok, "value"] == merged.loc[ok, "value_in"]).all()  # full float precision round trip
    assert math.isnan(merged.loc[~ok, "value"].iloc[0]) and merged.loc[~ok, "status"].iloc[0] == "skipped"
    assert hashlib.sha256((submitted / "results.csv").read_bytes()).hexdigest() == sub.results.sha256


def test_build_is_idempotent_and_refuses_a_different_folder_with_the_same_id(tmp_path: Path, runs, submitted) -> None:
    runs_dir, table = runs
    shuffled = table.sample(frac=1, random_state=0)
    assert build_submission(runs_dir, tmp_path / "submissions", META, "tiny", results=shuffled) == submitted
    changed = {**META, "description": "changed"}
    other = build_submission(runs_dir, tmp_path / "submissions", changed, "tiny", results=table)
    assert other != submitted and other.name.startswith("my-method-v2-")
    data = json.loads((submitted / "submission.json").read_text())
    data["provenance"]["runs"][0]["environment"]["device"] = "cuda:0"  # a different submission under the same id
    (submitted / "submission.json").write_text(json.dumps(data))
    with pytest.raises(SubmissionError, match="already exists and holds a different submission"):
        build_submission(runs_dir, tmp_path / "submissions", META, "tiny", results=table)
    assert not [p for p in (tmp_path / "submissions").iterdir() if p.name.startswith(".")]


def test_all_suites_when_no_suite_name(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    sub = validate_submission(build_submission(runs_dir, tmp_path / "s", META, results=table))
    assert sorted(s.name for s in sub.provenance.suites) == ["other", "tiny"] and sub.results.rows == 11


def test_runs_of_two_versions_of_one_suite_are_submitted_with_a_warning_naming_both(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    manifest = json.loads((runs_dir / "manifest.json").read_text())
    edited = {**SUITES["tiny"], "seeds": [0, 1, 2]}  # the suite file changed between two runs into one store
    manifest["runs"].append({**manifest["runs"][0], "suite": edited, "suite_hash": suite_hash(edited)})
    (runs_dir / "manifest.json").write_text(json.dumps(manifest))
    said: list[str] = []
    sub = validate_submission(build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table,
                                               warn=said.append))
    assert len(sub.provenance.suites) == 2
    hashes = [suite_hash(SUITES["tiny"])[:12], suite_hash(edited)[:12]]
    assert len(said) == 1 and f"holds runs of 2 versions of suite 'tiny' (hashes {', '.join(hashes)})" in said[0]
    assert "copy the runs directory's jobs/ folder into a new runs directory" in said[0]
    quiet: list[str] = []
    (tmp_path / "one").mkdir()
    build_submission(make_runs(tmp_path / "one")[0], tmp_path / "s1", META, "tiny", results=table, warn=quiet.append)
    assert quiet == []  # one version of each suite: nothing to say


def test_build_errors_tell_to_run_first(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SubmissionError, match=r"manifest\.json does not exist.*gibench run"):
        build_submission(empty, tmp_path / "s", META, results=table)
    with pytest.raises(SubmissionError, match="holds no results.*gibench run"):
        build_submission(runs_dir, tmp_path / "s", META, results=table.iloc[:0])
    with pytest.raises(SubmissionError, match="no run of suite 'nope'. Suites run here: other, tiny"):
        build_submission(runs_dir, tmp_path / "s", META, "nope", results=table)
    with pytest.raises(SubmissionError, match=r"field 'links.0'"):
        build_submission(runs_dir, tmp_path / "s", {**META, "links": ["javascript:alert(1)"]}, results=table)
    orphan = pd.concat([table, table.iloc[:1].assign(job_hash="zz")])
    with pytest.raises(SubmissionError, match="belong to no run"):
        build_submission(runs_dir, tmp_path / "s", META, results=orphan)


# ----------------------------------------------------------------------------------------------------------------------
# validation errors name the file and the field


def _edit_json(folder: Path, edit) -> None:
    data = json.loads((folder / "submission.json").read_text())
    edit(data)
    (folder / "submission.json").write_text(json.dumps(data))


def _edit_csv(folder: Path, edit) -> None:
    table = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    edit(table).to_csv(folder / "results.csv", index=False)


@pytest.mark.parametrize(("edit", "field", "fix"), [
    (lambda d: d["metadata"].pop("authors"), "metadata.authors", "add 'authors'"),
    (lambda d: d["metadata"].update(authors="Bob"), "metadata.authors", "valid list"),
    (lambda d: d["results"].update(rows="many"), "results.rows", "valid integer"),
    (lambda d: d.update(extra_key=1), "extra_key", "remove 'extra_key'"),
    (lambda d: d["provenance"]["suites"][0].update(hash="0" * 16), "provenance.suites.0.hash", "does not match"),
])
def test_submission_json_errors_name_file_and_field(submitted: Path, edit, field: str, fix: str) -> None:
    _edit_json(submitted, edit)
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    message = str(info.value)
    assert str(submitted / "submission.json") in message and f"field '{field}'" in message and fix in message


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.drop(columns="value"), "missing column(s) 'value'"),
    (lambda t: t.assign(seed=["abc"] + list(t["seed"][1:])), "column 'seed', line 2: 'abc' is not an integer"),
    (lambda t: t.assign(status=["done"] + list(t["status"][1:])), "column 'status', line 2"),
    (lambda t: t.assign(backbone_params=["[1]"] + list(t["backbone_params"][1:])), "column 'backbone_params'"),
    (lambda t: t.assign(value=["0.5"] + list(t["value"][1:])), "field 'results.sha256'"),
    (lambda t: t.iloc[:-1], "field 'results.rows'"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "a second row for the same job"),
    (lambda t: t.assign(job_hash=["unknown"] + list(t["job_hash"][1:])), "column 'job_hash' 'unknown'"),
])
def test_results_csv_errors_name_file_and_column(submitted: Path, edit, expected: str) -> None:
    _edit_csv(submitted, edit)
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    assert str(submitted / "results.csv") in str(info.value) and expected in str(info.value)


def test_ok_rows_need_finite_values(submitted: Path) -> None:
    _edit_csv(submitted, lambda t: t.assign(value=[""] + list(t["value"][1:])))
    with pytest.raises(SubmissionError, match="line 2: column 'status' is 'ok' but column 'value' is nan"):
        validate_submission(submitted)


def test_missing_files_and_folder_name(submitted: Path) -> None:
    (submitted / "results.csv").unlink()
    with pytest.raises(SubmissionError, match=r"results\.csv is missing"):
        validate_submission(submitted)
    renamed = submitted.with_name("renamed")
    submitted.rename(renamed)
    with pytest.raises(SubmissionError, match="rename the folder"):
        validate_submission(renamed)
    (renamed / "submission.json").write_text("{not json")
    with pytest.raises(SubmissionError, match=r"submission\.json is not valid UTF-8 JSON"):
        validate_submission(renamed)


def test_load_submissions_reports_every_invalid_folder(submitted: Path) -> None:
    root = submitted.parent
    shutil.copytree(submitted, root / "broken")
    (root / "empty").mkdir()
    (root / ".tmp-ignored").mkdir()
    scan = scan_submissions(root)
    assert [s.path for s in scan.valid] == [submitted]
    assert [p.name for p, _ in scan.invalid] == ["broken", "empty"]
    with pytest.raises(SubmissionError, match=r"2 invalid submission\(s\)[\s\S]*broken[\s\S]*empty"):
        load_submissions(root)


def test_json_schema_validates_a_real_submission(submitted: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = submission_json_schema()
    data = json.loads((submitted / "submission.json").read_text())
    jsonschema.validate(data, schema)
    del data["provenance"]["runs"][0]["environment"]["python"]
    with pytest.raises(jsonschema.ValidationError, match="'python' is a required property"):
        jsonschema.validate(data, schema)


def test_slugify() -> None:
    assert slugify("<script>alert(1)</script>") == "script-alert-1-script"
    assert slugify("Ünïcödé  Näme!") == "unicode-name"
    assert slugify("日本") == "submission"


# ----------------------------------------------------------------------------------------------------------------------
# artifacts

JSON_BYTES, PNG_BYTES = 100, 1000
EVALUATIONS = {"accuracy": "{}", "pixel_perturbation": '{"max_images": 200}'}


def add_artifacts(runs_dir: Path, table: pd.DataFrame) -> dict[str, bytes]:
    """Result records with artifacts for every ok evaluation of ``table`` in the run store: per evaluation a 100-byte
    curve file; pixel_perturbation also a 1000-byte grid image and a notes.txt that must not travel. Returns
    {store-relative path: content}."""
    written = {}
    for (job, evaluator), _ in table[table["status"] == "ok"].groupby(["job_hash", "evaluator"]):
        params = json.loads(EVALUATIONS[evaluator])
        key = result_key(evaluator, "1", hashlib.sha256(evaluator.encode()).hexdigest()[:16])
        files = {"curves": f"{evaluator}_curves.json"}
        if evaluator == "pixel_perturbation":
            files |= {"saliency_grid": "grid.png", "notes": "notes.txt"}
        folder = runs_dir / "jobs" / job / "artifacts" / key
        folder.mkdir(parents=True)
        for _name, file in files.items():
            size = PNG_BYTES if file.endswith(".png") else JSON_BYTES
            content = f"{job}/{key}/{file}".encode().ljust(size, b"#")
            (folder / file).write_bytes(content)
            written[f"jobs/{job}/artifacts/{key}/{file}"] = content
        record = ResultRecord(evaluator=evaluator, version="1", params=params, config=params,
                              config_hash=key.rsplit("__", 1)[1], metrics=[], status="ok",
                              plugin=PluginSource("gibench", gibench.__version__),
                              artifacts={name: f"artifacts/{key}/{file}" for name, file in files.items()})
        atomic_write_json(runs_dir / "jobs" / job / "results" / f"{key}.json", record.to_json())
    return written


@pytest.fixture
def with_artifacts(tmp_path: Path, runs) -> tuple[Path, pd.DataFrame, dict[str, bytes]]:
    runs_dir, table = runs
    return runs_dir, table, add_artifacts(runs_dir, table)


def test_submit_packs_every_image_and_curve_with_size_and_sha256(tmp_path: Path, with_artifacts) -> None:
    runs_dir, table, written = with_artifacts
    folder = build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table)
    loaded = load_submission(folder)
    record = loaded.submission.artifacts
    packed = {f.path: f for f in record.files}
    expected = {"artifacts/" + path.removeprefix("jobs/").replace("/artifacts/", "/", 1): content
                for path, content in written.items() if "/j9/" not in path and not path.endswith(".txt")}
    assert set(packed) == set(expected) and len(expected) == 4 * 3  # 4 jobs × (2 curves + 1 grid); j9 is suite 'other'
    for path, content in expected.items():
        assert (folder / path).read_bytes() == content
        assert packed[path].sha256 == hashlib.sha256(content).hexdigest() and packed[path].bytes == len(content)
    assert record.total_bytes == sum(map(len, expected.values())) == 8 * JSON_BYTES + 4 * PNG_BYTES
    assert record.limit_bytes == 20_000_000
    assert [(o.job_hash, o.name, o.reason) for o in record.left_out] == [
        (job, "notes", "not an image or curve file (.json, .png, .svg)") for job in ("j0", "j1", "j2", "j3")]
    pp = loaded.artifacts[("j0", "pixel_perturbation")]
    assert set(pp) == {"curves", "saliency_grid"} and pp["saliency_grid"].is_absolute()
    assert pp["saliency_grid"].read_bytes() == expected[str(pp["saliency_grid"].relative_to(folder.resolve()))]
    assert {f.evaluator_params for f in record.files if f.evaluator == "pixel_perturbation"} == {
        '{"max_images": 200}'}
    memory = package_results(runs_dir, META, "tiny", results=table)  # in memory: the runs store's own files
    in_store = memory.artifacts[("j0", "pixel_perturbation")]["saliency_grid"]
    assert in_store.parent.parent == runs_dir / "jobs" / "j0" / "artifacts" and in_store.name == "grid.png"
    assert memory.path is None and in_store.read_bytes() == pp["saliency_grid"].read_bytes()


def test_over_the_size_limit_the_lowest_seed_and_curves_go_first(tmp_path: Path, with_artifacts) -> None:
    runs_dir, table, _ = with_artifacts
    limit = 2500  # bytes: seed 0's four curves (400) and two grids (2000), then one curve of seed 1
    folder = build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table, max_artifact_mb=limit / 1e6)
    record = load_submission(folder).submission.artifacts
    assert record.limit_bytes == limit and record.total_bytes == 2500
    assert [(f.job_hash, f.evaluator, f.name) for f in record.files] == [
        ("j0", "accuracy", "curves"), ("j0", "pixel_perturbation", "curves"),
        ("j2", "accuracy", "curves"), ("j2", "pixel_perturbation", "curves"),
        ("j0", "pixel_perturbation", "saliency_grid"), ("j2", "pixel_perturbation", "saliency_grid"),
        ("j1", "accuracy", "curves")]
    over = {(o.job_hash, o.evaluator, o.name) for o in record.left_out if "limit" in o.reason}
    assert over == {("j1", "pixel_perturbation", "curves"), ("j3", "accuracy", "curves"),
                    ("j3", "pixel_perturbation", "curves"), ("j1", "pixel_perturbation", "saliency_grid"),
                    ("j3", "pixel_perturbation", "saliency_grid")}
    assert {o.reason for o in record.left_out if "limit" in o.reason} == {
        "over the 0.0025 MB artifact limit (raise it with --max-artifact-mb)"}
    assert sorted(p.name for p in (folder / "artifacts").rglob("*") if p.is_file()) == sorted(
        Path(f.path).name for f in record.files)


def test_validate_checks_every_artifact_and_no_path_leaves_the_folder(tmp_path: Path, with_artifacts) -> None:
    runs_dir, table, _ = with_artifacts
    folder = build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table)
    files = json.loads((folder / "submission.json").read_text())["artifacts"]["files"]
    index = next(i for i, f in enumerate(files) if f["path"].endswith(".png"))
    target = folder / files[index]["path"]
    where = f"{folder / 'submission.json'}: field 'artifacts.files.{index}.path' ({files[index]['path']!r})"
    original = target.read_bytes()
    target.write_bytes(original[:-1] + b"!")
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert str(info.value) == (f"{where}: the file does not match the recorded size and SHA-256 (it changed after "
                               "`gibench submit`). Fix: re-create the submission with `gibench submit` instead of "
                               "editing it by hand.")
    target.unlink()
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert str(info.value).startswith(f"{where}: the file is missing. Fix: restore it")
    outside = tmp_path / "outside.png"
    outside.write_bytes(original)
    target.symlink_to(outside)
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert str(info.value).startswith(f"{where} leads outside the submission folder.")
    target.unlink()
    target.write_bytes(original)
    assert validate_submission(folder).id == folder.name
    escape = files[index]["path"].replace("artifacts/", "artifacts/../../", 1)
    _edit_json(folder, lambda d: d["artifacts"]["files"][index].update(path=escape))
    with pytest.raises(SubmissionError) as info:
        validate_submission(folder)
    assert f"field 'artifacts.files.{index}': path {escape!r} is not artifacts/" in str(info.value)


# ----------------------------------------------------------------------------------------------------------------------
# plausibility: declared bounds, plain text


def _resign(folder: Path) -> None:
    """Record results.csv's current SHA-256 in submission.json, as a careful forger would."""
    digest = hashlib.sha256((folder / "results.csv").read_bytes()).hexdigest()
    _edit_json(folder, lambda d: d["results"].update(sha256=digest))


def _set_value(folder: Path, evaluator: str, metric: str, value: str) -> int:
    """Set the first ok row of that metric to ``value`` (re-signed); returns its line in results.csv."""
    table = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    index = int(table.index[(table["evaluator"] == evaluator) & (table["metric"] == metric)
                            & (table["status"] == "ok")][0])
    table.loc[index, "value"] = value
    table.to_csv(folder / "results.csv", index=False)
    _resign(folder)
    return index + 2


def test_an_accuracy_of_1e308_is_rejected_naming_line_and_range(submitted: Path) -> None:
    line = _set_value(submitted, "accuracy", "accuracy", "1e308")
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    assert str(info.value) == (
        f"{submitted / 'results.csv'}: column 'value', line {line}: 1e+308 for accuracy (version 1) metric "
        "'accuracy' lies outside its declared range [0, 1]. Fix: such a value cannot come from that evaluator; "
        "re-create the submission with `gibench submit` from the runs that produced it, instead of editing it by "
        "hand.")


def test_bounds_allow_float_rounding_only(submitted: Path) -> None:
    _set_value(submitted, "accuracy", "accuracy", repr(1 + 5e-7))  # within the 1e-6 slack: a rounding error
    assert validate_submission(submitted).id == submitted.name
    _set_value(submitted, "accuracy", "accuracy", repr(1 + 2e-6))
    with pytest.raises(SubmissionError, match=r"line \d+: 1.000002 for accuracy \(version 1\) metric 'accuracy' "
                                              r"lies outside its declared range \[0, 1\]"):
        validate_submission(submitted)
    _set_value(submitted, "accuracy", "accuracy", "-0.5")
    with pytest.raises(SubmissionError, match=r": -0.5 for accuracy .* outside its declared range \[0, 1\]"):
        validate_submission(submitted)


def test_metric_declarations_are_recorded_and_must_match_the_installed_evaluator(submitted: Path) -> None:
    from gibench.api import registry

    data = json.loads((submitted / "submission.json").read_text())
    infos = {(m["evaluator"], m["metric"]): m for m in data["metrics"]}
    declared = next(m for m in registry.evaluators.get("accuracy").metrics if m.name == "accuracy")
    assert infos["accuracy", "accuracy"] == {
        "evaluator": "accuracy", "version": "1", "metric": "accuracy", "description": declared.description,
        "higher_is_better": True, "headline": True, "bounds": [0.0, 1.0], "diagnostic": False, "read_beside": "",
        "caveat": ""}  # accuracy stands on its own (tests/test_site_companions.py: a metric read beside another)
    # 'auc' is no metric of the installed pixel_perturbation: recorded as the rows say, unbounded
    assert infos["pixel_perturbation", "auc"]["bounds"] == [None, None]
    assert infos["pixel_perturbation", "auc"]["higher_is_better"] is False
    index = data["metrics"].index(infos["accuracy", "accuracy"])
    _edit_json(submitted, lambda d: d["metrics"][index].update(bounds=[0.0, 2.0]))
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    assert str(info.value) == (
        f"{submitted / 'submission.json'}: field 'metrics.{index}.bounds' is [0, 2] for accuracy (version 1) metric "
        "'accuracy', but the installed evaluator of that version declares [0, 1]. Fix: re-create the submission "
        "with `gibench submit` instead of editing it by hand (the bounds are copied from the installed evaluator).")


def test_recorded_bounds_apply_where_the_evaluator_is_not_installed(submitted: Path) -> None:
    data = json.loads((submitted / "submission.json").read_text())
    index = next(i for i, m in enumerate(data["metrics"]) if m["metric"] == "auc")
    _edit_json(submitted, lambda d: d["metrics"][index].update(bounds=[0.0, 0.2]))  # values are 0.29 .. 0.31
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    table = load_submission_table(submitted)
    first = table[(table["metric"] == "auc") & (table["status"] == "ok")].iloc[0]
    assert (f"{float(first['value'])!r} for pixel_perturbation (version 1) metric 'auc' lies outside its declared "
            "range [0, 0.2]") in str(info.value)
    _edit_json(submitted, lambda d: d["metrics"][index].update(bounds=[0.5, 0.2]))
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    assert str(info.value) == (
        f"{submitted / 'submission.json'}: field 'metrics.{index}.bounds': [0.5, 0.2] is not a range [low, high] with "
        "low <= high (null for an infinite end) (got [0.5, 0.2]). Fix: re-create the submission with `gibench "
        "submit`.")


def load_submission_table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "results.csv")


@pytest.mark.parametrize(("field", "value", "where", "char"), [
    ("name", "Evil\u202egpj.exe", "name", "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 4"),
    ("authors", ["A. Person", "B.\x00Person"], "authors.1", "U+0000 (control character) at position 2"),
    ("description", "tuned\u200b", "description", "U+200B (ZERO WIDTH SPACE) at position 5"),
    ("links", ["https://example.org/\x1b[31m"], "links.0", "U+001B (control character) at position 20"),
])
def test_control_characters_in_metadata_are_rejected(tmp_path: Path, runs, field, value, where, char) -> None:
    runs_dir, table = runs
    with pytest.raises(SubmissionError) as info:
        build_submission(runs_dir, tmp_path / "s", {**META, field: value}, "tiny", results=table)
    assert str(info.value) == (f"metadata: field '{where}': contains the invisible character {char} (got "
                               f"{value if isinstance(value, str) else value[-1]!r}). Fix: remove it; names, authors, "
                               "descriptions, links and suite names must be plain visible text.")


def test_a_description_may_hold_line_breaks(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    folder = build_submission(runs_dir, tmp_path / "s", {**META, "description": "line one\nline two\tend"}, "tiny",
                              results=table)
    assert validate_submission(folder).metadata.description == "line one\nline two\tend"


def test_control_characters_in_results_csv_are_rejected_naming_column_and_line(submitted: Path) -> None:
    table = pd.read_csv(submitted / "results.csv", dtype=str, keep_default_na=False)
    table.loc[3, "variant"] = "erm\u202e"
    table.to_csv(submitted / "results.csv", index=False)
    _resign(submitted)
    with pytest.raises(SubmissionError) as info:
        validate_submission(submitted)
    assert str(info.value) == (
        f"{submitted / 'results.csv'}: column 'variant', line 5: contains the invisible character U+202E "
        "(RIGHT-TO-LEFT OVERRIDE) at position 3. Fix: remove it (the site shows plain visible text only); re-create "
        "the submission with `gibench submit` instead of editing it by hand.")


def test_failure_reasons_lose_local_paths_and_control_characters(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    home = str(Path.home())
    reason = (f"training failed: {runs_dir.resolve()}/jobs/j3/checkpoint.pt: no space\nsee "
              f"{home}/notes.txt \x1b[31m(red)\x1b[0m")
    failed = row("j3", "gradient_norm", 1, "density_ratio", "mean_ratio_at_ref", float("nan"), status="failed",
                 reason=reason)
    folder = build_submission(runs_dir, tmp_path / "s", META, "tiny",
                              results=pd.concat([table, pd.DataFrame([failed])], ignore_index=True))
    stored = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    (kept,) = stored.loc[stored["reason"] != "", "reason"]
    assert kept == "training failed: <runs>/jobs/j3/checkpoint.pt: no space see ~/notes.txt  [31m(red) [0m"
    assert home not in (folder / "results.csv").read_text() or home in ("/", "")


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--name", "   ", "metadata: field 'name': the name is blank (got '   '). Fix: give the name of your method, e.g. "
                      "--name \"Gradient norm\"."),
    ("--link", "javascript:alert(1)", "metadata: field 'links.0': not an http:// or https:// URL; links become href "
                                      "attributes on the site, so no other scheme (javascript:, data:, file:) is "
                                      "accepted (got 'javascript:alert(1)'). Fix: give a web address such as --link "
                                      "https://arxiv.org/abs/1234.5678."),
    ("--author", " ", "metadata: field 'authors.1': the author is blank (got ' '). Fix: give each author's name, e.g. "
                      "--author \"A. Person\"."),
])
def test_submit_cli_names_the_bad_option_without_a_traceback(tmp_path: Path, runs, capsys, option, value,
                                                              expected) -> None:
    from gibench.cli import main

    runs_dir, _ = runs
    args = ["submit", "--runs-dir", str(runs_dir), "--name", "Ok", "--author", "A", "--out", str(tmp_path / "s")]
    assert main([*args, option, value]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == " ".join(f"error: {expected}".split()) and "Traceback" not in err


def test_control_characters_in_the_recorded_suite_are_rejected(tmp_path: Path) -> None:
    runs_dir, table = make_runs(tmp_path)
    manifest = json.loads((runs_dir / "manifest.json").read_text())
    suite = {**SUITES["tiny"], "description": "two lines\nare fine \u202e but not this"}
    manifest["runs"][0].update(suite=suite, suite_hash=suite_hash(suite))
    (runs_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SubmissionError) as info:
        build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table)
    assert str(info.value).startswith(
        f"{runs_dir / 'manifest.json'}: runs[0]: field 'suite': the suite's description contains the invisible "
        "character U+202E (RIGHT-TO-LEFT OVERRIDE) at position 19 (got ")
    assert str(info.value).endswith("Fix: remove it; names, authors, descriptions, links and suite names must be plain "
                                    "visible text (edit the suite file and run it again).")


def test_validate_cli_reports_rows_artifacts_and_verification(tmp_path: Path, with_artifacts, capsys) -> None:
    from gibench.cli import main

    runs_dir, table, _ = with_artifacts
    folder = build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table)
    assert main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{folder}: valid submission {folder.name!r}",
                   "9 result rows, every value within its metric's declared range; 12 artifact(s), 0.0048 MB, SHA-256 "
                   "checked", "verification: unverified; never verified"]
    assert main(["submit", "--runs-dir", str(runs_dir), "--name", "x", "--author", "A", "--out", str(tmp_path / "t"),
                 "--max-artifact-mb", "-1"]) == 2
    assert " ".join(capsys.readouterr().err.split()) == (
        "error: --max-artifact-mb must be a number >= 0, got -1.0. Fix: pass e.g. --max-artifact-mb 20 (0 packs no "
        "artifacts).")


def test_submit_takes_the_suite_as_a_file_too(tmp_path: Path, runs, capsys) -> None:
    """--suite names the runs by the suite's name; a suite file stands for the name it declares, as in `gibench run`."""
    from gibench.cli import main
    from tests.conftest import TINY_SUITE

    runs_dir, _ = runs
    suite_file = tmp_path / "mine.yaml"
    suite_file.write_text(yaml.safe_dump({**TINY_SUITE, "name": "nope"}))
    args = ["submit", "--runs-dir", str(runs_dir), "--name", "x", "--author", "A", "--out", str(tmp_path / "t")]
    assert main([*args, "--suite", str(suite_file)]) == 2
    assert "no run of suite 'nope'. Suites run here: other, tiny" in " ".join(capsys.readouterr().err.split())
    assert main([*args, "--suite", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_submit_never_packs_a_link_or_a_path_outside_the_evaluation_folder(tmp_path: Path, runs) -> None:
    runs_dir, table = runs
    key = result_key("accuracy", "1", "0" * 16)
    folder = runs_dir / "jobs" / "j0" / "artifacts" / key
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private")
    (folder / "link.png").symlink_to(secret)
    (folder / "ok.json").write_text("{}")
    artifacts = {"escape": f"artifacts/{key}/../../../../../secret.png", "link": f"artifacts/{key}/link.png",
                 "hidden": f"artifacts/{key}/.hidden.png", "absent": f"artifacts/{key}/absent.svg",
                 "curves": f"artifacts/{key}/ok.json"}
    record = ResultRecord(evaluator="accuracy", version="1", params={}, config={}, config_hash="0" * 16, metrics=[],
                          status="ok", plugin=PluginSource("gibench", gibench.__version__), artifacts=artifacts)
    atomic_write_json(runs_dir / "jobs" / "j0" / "results" / f"{key}.json", record.to_json())
    submission = build_submission(runs_dir, tmp_path / "s", META, "tiny", results=table)
    packed = load_submission(submission).submission.artifacts
    assert [f.path for f in packed.files] == [f"artifacts/j0/{key}/ok.json"]
    assert {o.name: o.reason for o in packed.left_out} == {
        "absent": "missing from the runs store",
        "escape": f"its path {artifacts['escape']!r} is not a file of the evaluation's own artifact folder",
        "hidden": f"its path {artifacts['hidden']!r} is not a file of the evaluation's own artifact folder",
        "link": "a symbolic link, not a file of the runs store"}
    assert b"private" not in b"".join(p.read_bytes() for p in submission.rglob("*") if p.is_file())


def test_a_suite_with_work_left_is_submitted_with_a_warning_that_says_how_to_finish_it(tmp_path: Path) -> None:
    """Submitting a half-finished run is allowed (the finished results are real), but never silent: the warning
    counts the jobs with work left and gives the command that finishes them."""
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    suite_file = write_suite(tmp_path, evaluators=["accuracy"])  # erm and gradient_norm
    runs = tmp_path / "runs"
    run_suite(load_suite(suite_file), runs, RunOptions(device="cpu"))
    finished: list[str] = []
    build_submission(runs, tmp_path / "done", META, "tiny", warn=finished.append)
    assert finished == []
    results = sorted((runs / "jobs").glob("*/results/accuracy__*.json"))
    assert len(results) == 2
    results[0].unlink()  # that job's evaluation is work left again
    said: list[str] = []
    folder = build_submission(runs, tmp_path / "partial", META, "tiny", warn=said.append)
    assert len(said) == 1 and f"suite 'tiny' is not finished in {runs}: 1 of its 2 jobs still have" in said[0]
    assert f"`gibench run --suite <its suite file> --runs-dir {runs}`" in said[0]
    assert set(load_submission(folder).results["job_hash"]) == {results[1].parent.parent.name}
