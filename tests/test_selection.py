"""Selection on a held-out validation split: the `validation`, `sweep` and `select` suite keys, the sweep and scored
jobs they give, the rule (strongest setting within `max_drop` of erm's validation accuracy), and a run that trains the
sweep, records the selection and scores only the selected settings, reading validation accuracy and never the test
split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gibench.api import registry
from gibench.core.errors import ConfigError
from gibench.running.estimate import plan
from gibench.running.runner import run_suite
from gibench.running.selection import FAILED, read_selections, select, selection_path, stored_accuracies
from gibench.store.runs import RunStore
from gibench.suites.jobs import (
    VALIDATION_EVALUATOR,
    Job,
    SelectionUnit,
    expand,
    planned_jobs,
    rebuildable_jobs,
    sweep_jobs,
    sweep_point,
)
from gibench.suites.suite import parse_suite

VALUES = [0.001, 0.1, 10.0]
SUITE = {
    "name": "select-tiny",
    "datasets": [{"gaussian_mixture": {"train_size": 400, "test_size": 200, "height": 8, "width": 8}}],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm", "gradient_norm"],
    "evaluators": ["accuracy"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 64, "lr": 1.0e-2},
    "sweep": {"seeds": [0], "values": {"gradient_norm": VALUES}},
    "select": {"rule": "max_drop", "max_drop": 0.05},
}


def suite(**changes):
    return parse_suite({**SUITE, **changes})


# ----------------------------------------------------------------------------------------------------------------------
# Suite keys


@pytest.mark.parametrize(("changes", "message"), [
    ({"select": None, "sweep": {"seeds": [0]}}, "`sweep` needs `select`"),
    ({"select": {"rule": "best"}}, "select.rule: expected one of max_drop, all, got 'best'"),
    ({"select": {"rule": "max_drop"}}, "select.max_drop: expected a number in [0, 1)"),
    ({"select": {"rule": "max_drop", "max_drop": 1.5}}, "got 1.5"),
    ({"select": {"rule": "all", "max_drop": 0.1}}, "`rule: all` keeps every setting and takes no max_drop"),
    ({"select": {"rule": "max_drop", "max_dorp": 0.1}}, "unknown key 'max_dorp'. Did you mean 'max_drop'?"),
    ({"regularizers": ["gradient_norm"]}, "erm is not among this grid's regularizers"),
    ({"regularizers": ["erm", {"gradient_norm": {"weight": 0.1}}]}, "sets 'weight', the parameter its sweep varies"),
    ({"sweep": {"values": {"gradient_nrom": [0.1, 1.0]}}}, "'gradient_nrom' is not a swept regularizer"),
    ({"sweep": {"values": {"gradient_norm": [1.0, 0.1]}}}, "the values must increase strictly"),
    ({"sweep": {"seeds": [0, 0]}}, "sweep.seeds: expected a non-empty list of distinct"),
    ({"validation": {"fraction": 0.9}}, "validation.fraction: expected a number in (0, 0.5]"),
])
def test_bad_selection_keys_are_errors_that_name_the_key(changes, message):
    raw = {**SUITE, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse_suite(raw, source="s.yaml")
    assert message in str(caught.value) and "s.yaml" in str(caught.value)


def test_a_regularizer_without_a_declared_sweep_cannot_be_selected(register_plugin):
    erm = registry.regularizers.get("erm")
    undeclared = type("Undeclared", (erm.__mro__[1],), {"training_loss": erm.training_loss, "zero_strength": {},
                                                        "__doc__": "erm's loss, without a sweep declaration"})
    register_plugin(registry.regularizers, "undeclared", undeclared)
    with pytest.raises(ConfigError, match="'undeclared' declares no sweep"):
        suite(regularizers=["erm", "undeclared"])


def test_a_suite_without_the_keys_is_unchanged():
    plain = parse_suite({k: v for k, v in SUITE.items() if k not in ("sweep", "select")})
    assert plain.selection is None and plain.validation is None and sweep_jobs(plain) == []
    assert all(job.validation is None and job.evaluators == plain.evaluators for job in expand(plain))
    assert "validation" not in expand(plain)[0].training_spec()["dataset"]


# ----------------------------------------------------------------------------------------------------------------------
# Jobs


def test_the_sweep_trains_every_value_and_erm_with_the_sweep_seeds_scored_by_validation_accuracy_only():
    s = suite()
    sweep = sweep_jobs(s)
    assert [(j.regularizer.label, j.seed) for j in sweep] == [
        ("erm", 0), ("gradient_norm(weight=0.001)", 0), ("gradient_norm(weight=0.1)", 0),
        ("gradient_norm(weight=10)", 0)]
    assert all(j.evaluators == (VALIDATION_EVALUATOR,) for j in sweep)
    assert all(j.training_spec()["dataset"]["validation"] == {"fraction": 0.1, "seed": 0} for j in sweep)


def test_the_scored_jobs_are_the_chosen_setting_with_the_suite_seeds_and_meet_the_sweep_where_they_coincide():
    s = suite()
    unit = SelectionUnit(s.datasets[0].label, "gibench_linear", "gradient_norm")
    scored = expand(s, {unit: 0.1})
    assert [(j.regularizer.label, j.seed) for j in scored] == [
        ("erm", 0), ("erm", 1), ("gradient_norm(weight=0.1)", 0), ("gradient_norm(weight=0.1)", 1)]
    assert all([e.name for e in j.evaluators] == ["accuracy", "validation_accuracy"] for j in scored)
    assert {j.hash for j in scored} & {j.hash for j in sweep_jobs(s)} == {scored[0].hash, scored[2].hash}
    assert [j.regularizer.label for j in expand(s)] == ["erm", "erm"]  # nothing selected yet: only erm is scored
    assert len(planned_jobs(s)) == 4 + 2  # the sweep, plus erm and the default stand-in (0.001) with seed 1
    assert len(rebuildable_jobs(s)) == 2 + 3 * 2 + 0  # erm and every value with both seeds (the sweep among them)


def test_rule_all_scores_every_value_without_a_sweep_phase():
    s = suite(select={"rule": "all"}, sweep={"values": {"gradient_norm": VALUES}})
    assert sweep_jobs(s) == []
    assert len(expand(s)) == 2 + 3 * 2


def test_a_held_out_job_never_shares_a_hash_with_one_trained_on_the_whole_split():
    s = suite()
    held = sweep_jobs(s)[0]
    whole = Job(held.dataset, held.backbone, held.regularizer, held.seed, held.train)
    assert held.hash != whole.hash


# ----------------------------------------------------------------------------------------------------------------------
# The rule


def lookup_for(s, validation: dict[float | str, float | str | None]):
    """A lookup giving erm and each swept value of the tiny suite the validation accuracy in ``validation``."""
    dataset, backbone = s.datasets[0], s.backbones[0]
    table = {}
    for seed in s.selection.seeds:
        for key, accuracy in validation.items():
            spec = s.regularizers[0] if key == "erm" else sweep_point(s.regularizers[1], "weight", key)
            table[Job(dataset, backbone, spec, seed, s.train, (), s.validation).hash] = accuracy
    return table.get


@pytest.mark.parametrize(("validation", "selected", "state"), [
    ({"erm": 0.90, 0.001: 0.91, 0.1: 0.86, 10.0: 0.50}, 0.1, "selected"),  # 0.86 ≥ 0.90 − 0.05: the strongest within
    ({"erm": 0.90, 0.001: 0.91, 0.1: 0.84, 10.0: 0.86}, 10.0, "selected"),  # the strongest within, not the best
    ({"erm": 0.90, 0.001: 0.80, 0.1: 0.70, 10.0: 0.60}, 0.001, "over_budget"),  # none within: the weakest, marked
    ({"erm": 0.90, 0.001: 0.90, 0.1: 0.88, 10.0: FAILED}, 0.1, "selected"),  # a failed training does not qualify
    ({"erm": 0.90, 0.001: 0.90, 0.1: None, 10.0: 0.88}, None, "pending"),  # not run yet: nothing chosen
    ({"erm": FAILED, 0.001: 0.90, 0.1: 0.88, 10.0: 0.88}, None, "no_reference"),
])
def test_the_strongest_setting_within_max_drop_of_erm_is_chosen(validation, selected, state):
    s = suite()
    choice = select(s, lookup_for(s, validation)).units[0]
    assert (choice.selected, choice.state) == (selected, state)
    if state in ("selected", "over_budget"):
        assert choice.budget == pytest.approx(0.85) and choice.reference == 0.90
        assert [p.mean for p in choice.curve] == [None if validation[v] == FAILED else validation[v] for v in VALUES]


def test_a_choice_at_the_top_of_the_sweep_says_that_the_sweep_may_stop_short():
    s = suite()
    at_top = select(s, lookup_for(s, {"erm": 0.90, 0.001: 0.91, 0.1: 0.84, 10.0: 0.86})).units[0]
    assert at_top.selected == 10.0 and at_top.reason.endswith(
        "it is the strongest weight swept, so a stronger one may be within the budget too: extend the sweep "
        "(`sweep: {values: ...}`) to find the operating point")
    inside = select(s, lookup_for(s, {"erm": 0.90, 0.001: 0.91, 0.1: 0.86, 10.0: 0.50})).units[0]
    assert inside.selected == 0.1 and "extend the sweep" not in inside.reason


def test_the_mean_over_sweep_seeds_decides():
    s = suite(sweep={"seeds": [0, 1], "values": {"gradient_norm": VALUES}})
    dataset, backbone = s.datasets[0], s.backbones[0]
    accuracies = {("erm", 0): 0.9, ("erm", 1): 0.9, (0.001, 0): 0.9, (0.001, 1): 0.9,
                  (0.1, 0): 0.9, (0.1, 1): 0.79, (10.0, 0): 0.5, (10.0, 1): 0.5}  # 0.1: mean 0.845 < 0.85
    table = {}
    for (key, seed), accuracy in accuracies.items():
        spec = s.regularizers[0] if key == "erm" else sweep_point(s.regularizers[1], "weight", key)
        table[Job(dataset, backbone, spec, seed, s.train, (), s.validation).hash] = accuracy
    choice = select(s, table.get).units[0]
    assert choice.selected == 0.001 and choice.curve[1].mean == pytest.approx(0.845)


# ----------------------------------------------------------------------------------------------------------------------
# A run


def _set_scalar(runs: Path, job_hash: str, evaluator: str, metric: str, value: float) -> None:
    [path] = (RunStore(runs).job(job_hash).root / "results").glob(f"{evaluator}__*.json")
    record = json.loads(path.read_text())
    record["scalars"][metric] = value
    path.write_text(json.dumps(record))


def test_a_run_trains_the_sweep_selects_on_validation_and_scores_only_the_selected_setting(tmp_path, one_thread):
    s, runs = suite(), tmp_path / "runs"
    summary = run_suite(s, runs, device="cpu")
    assert summary.ok, summary.failures()
    [record] = read_selections(runs)
    [unit] = record["units"]
    assert record["suite_hash"] == s.hash and unit["state"] in ("selected", "over_budget")
    chosen = unit["selected"]
    assert chosen in VALUES and [p["value"] for p in unit["curve"]] == VALUES

    # the selection is what the stored validation accuracies give, and the record says why
    store = RunStore(runs)
    lookup = stored_accuracies(runs)
    assert select(s, lookup).to_json() == record
    scored = {job.hash: job for job in expand(s, {SelectionUnit(**{k: unit[k] for k in
                                                                  ("dataset", "backbone", "regularizer")}): chosen})}
    for job in sweep_jobs(s):  # sweep-only jobs were scored by validation_accuracy alone
        names = {r.evaluator for r in store.job(job.hash).results()}
        assert names == ({"accuracy", "validation_accuracy"} if job.hash in scored else {"validation_accuracy"})
    assert {r.job.hash for r in summary.jobs} == {j.hash for j in sweep_jobs(s)} | set(scored)
    assert all(store.job(h).is_trained() for h in scored)

    # a hand-built disagreement: make the test split favour another value; selection does not move, because it
    # reads validation accuracy only; make validation favour it, and selection follows
    other = next(v for v in (10.0, 0.1) if v != chosen)  # not gradient_norm's default 1e-3 (see the estimate below)
    sweep = {job.regularizer.config.get("weight"): job for job in sweep_jobs(s) if job.regularizer.name != "erm"}
    for value, job in sweep.items():
        _set_scalar(runs, job.hash, "validation_accuracy", "validation_accuracy", 0.0 if value != other else 1.0)
    erm = next(j for j in sweep_jobs(s) if j.regularizer.name == "erm")
    _set_scalar(runs, erm.hash, "validation_accuracy", "validation_accuracy", 1.0)
    assert select(s, stored_accuracies(runs)).units[0].selected == other
    scored_job = next(j for j in scored.values() if j.regularizer.name != "erm" and j.seed == 0)
    _set_scalar(runs, scored_job.hash, "accuracy", "accuracy", 1.0)  # test accuracy of the old choice: perfect
    assert select(s, stored_accuracies(runs)).units[0].selected == other

    # a second run selects again from the store, trains the newly selected setting's other seed, and rewrites the record
    again = run_suite(s, runs, device="cpu")
    assert again.ok and read_selections(runs)[0]["units"][0]["selected"] == other
    assert selection_path(runs, s).exists()
    # the estimate counts the jobs of the selected setting, not of the default, which was never trained
    assert plan(s, runs).jobs_left == 0


def test_replaced_values_by_entry_label_win_over_values_by_name():
    s = suite(regularizers=["erm", {"pgd": {"norm": "l2", "steps": 2}}, {"pgd": {"norm": "linf", "steps": 2}}],
              sweep={"values": {"pgd": [0.5, 1.0], "pgd(norm=linf, steps=2)": [0.01, 0.03]}})
    swept = {(j.regularizer.params["norm"], j.regularizer.params["epsilon"]) for j in sweep_jobs(s)
             if j.regularizer.name == "pgd"}
    assert swept == {("l2", 0.5), ("l2", 1.0), ("linf", 0.01), ("linf", 0.03)}


# ----------------------------------------------------------------------------------------------------------------------
# Submissions


def test_a_submission_records_the_selection_and_verify_recomputes_it_from_the_submitted_rows(tmp_path, one_thread):
    import dataclasses

    from gibench.core.errors import SubmissionError
    from gibench.submissions.build import build_submission, load_submission
    from gibench.submissions.schema import SuiteRecord
    from gibench.submissions.verify import recheck_selections

    s, runs = suite(), tmp_path / "runs"
    assert run_suite(s, runs, device="cpu").ok
    folder = build_submission(runs, tmp_path / "subs", {"name": "selected", "authors": ["A. Person"]})
    loaded = load_submission(folder)
    [record] = loaded.submission.provenance.suites
    assert record.selection.model_dump() == read_selections(runs)[0]
    assert recheck_selections(loaded) == [{"suite": s.name, "outcome": "agrees", "differences": []}]

    # rows that do not give the recorded choice: the chosen setting's validation accuracy far below erm's
    chosen = record.selection.units[0].selected
    point = next(j for j in sweep_jobs(s) if j.regularizer.config.get("weight") == chosen)
    results = loaded.results.copy()
    results.loc[(results["job_hash"] == point.hash) & (results["evaluator"] == "validation_accuracy"), "value"] = 0.0
    [check] = recheck_selections(dataclasses.replace(loaded, results=results))
    assert check["outcome"] == "disagrees" and f"recorded ({chosen}, 'selected')" in check["differences"][0]

    # a suite that selects must carry its selection
    raw = record.model_dump()
    raw.pop("selection")
    with pytest.raises(ValueError, match="the suite selects .* but no selection is recorded"):
        SuiteRecord(**raw)
    assert SubmissionError  # imported for the module's error type; the schema error above is what validate reports

    # a damaged selection record: submit says which file and how to write it again, and refuses
    selection_path(runs, s).write_text("garbage")
    said: list[str] = []
    with pytest.raises(SubmissionError, match="holds no readable selection record of suite 'select-tiny'") as refused:
        build_submission(runs, tmp_path / "subs2", {"name": "selected", "authors": ["A. Person"]}, warn=said.append)
    assert "Run `gibench run` of that suite" in str(refused.value) and "Fix: set" not in str(refused.value)
    assert len(said) == 1 and "unreadable selection record" in said[0]
    assert "rerun the suite to write it again" in said[0]


def test_the_cli_runs_a_selecting_suite_prints_its_selection_and_a_dry_run_says_what_waits(tmp_path, capsys,
                                                                                             one_thread):
    import yaml

    from gibench.cli import main

    path = tmp_path / "select.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(path), "--runs-dir", str(runs), "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 selection(s) wait for their sweep" in out and "suite select-tiny: 5 jobs" in out
    assert main(["run", "--suite", str(path), "--runs-dir", str(runs), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "selection of suite select-tiny" in out and "(selected)" in out or "(over_budget)" in out
    assert main(["report", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "selection of suite select-tiny" in out and "10 % held out" in out and "not judged" not in out
    # the settings trained only for the sweep are not rows of the report: the selection's curve lists them
    from gibench.running.selection import read_selections

    selected = read_selections(runs)[0]["units"][0]["selected"]
    assert f"gradient_norm(weight={selected:g})" in out
    assert [v for v in VALUES if f"gradient_norm(weight={v:g})" in out] == [selected]
    assert "2 setting(s) trained only for a strength sweep are not listed" in " ".join(out.split())


def test_a_worker_scores_the_decided_units_while_another_worker_holds_a_sweep_job(tmp_path, one_thread):
    """The scored jobs of a unit join the run as soon as its sweep is stored: with gaussian_noise's last sweep job
    held by another worker, this worker selects gradient_norm and scores it (and erm) instead of waiting; when the
    held job is released it runs it, then selects and scores gaussian_noise. Each unit is announced once."""
    from gibench.core.fsio import Claim
    from gibench.running.runner import RunObserver, RunOptions

    s = suite(regularizers=["erm", "gradient_norm", "gaussian_noise"],
              sweep={"seeds": [0], "values": {"gradient_norm": VALUES, "gaussian_noise": [0.05, 0.1, 0.2]}})
    runs = tmp_path / "runs"
    held = next(j for j in sweep_jobs(s) if j.regularizer.name == "gaussian_noise" and
                j.regularizer.config["sigma"] == 0.2)
    other_worker = Claim(RunStore(runs).claim_path(held.hash), 300, 30)
    assert other_worker.try_acquire()
    released = []

    class Recorder(RunObserver):
        def __init__(self):
            self.events = []

        def jobs_added(self, jobs):
            self.events.append(("added", sorted({j.regularizer.name for j in jobs})))

        def selection_made(self, selection):
            self.events.append(("selected", [u.unit.regularizer for u in selection.units]))

        def job_finished(self, report):
            job = report.job
            scored = any(e.name == "accuracy" for e in job.evaluators)
            self.events.append(("finished", job.regularizer.name, scored, report.state))
            if scored and job.regularizer.name == "gradient_norm" and not released:
                other_worker.release()  # the other worker gives the job up: this one trains it next
                released.append(True)

    recorder = Recorder()
    summary = run_suite(s, runs, RunOptions(device="cpu", isolation="none", claim_poll_s=0.01), observer=recorder)
    assert summary.ok, summary.failures()
    events = recorder.events
    assert events.count(("finished", "gaussian_noise", False, "busy")) == 1  # reported once while held
    selected = [e for e in events if e[0] == "selected"]
    assert selected == [("selected", ["gradient_norm"]), ("selected", ["gaussian_noise"])]
    first_scored = events.index(next(e for e in events if e[:3] == ("finished", "gradient_norm", True)))
    busy = events.index(("finished", "gaussian_noise", False, "busy"))
    held_trained = events.index(("finished", "gaussian_noise", False, "trained"), busy)
    noise_scored = events.index(next(e for e in events if e[:3] == ("finished", "gaussian_noise", True)))
    assert busy < events.index(selected[0]) < first_scored < held_trained < events.index(selected[1]) < noise_scored
    assert events[events.index(selected[0]) + 1] == ("added", ["erm", "gradient_norm"])
    [record] = read_selections(runs)
    assert [u["regularizer"] for u in record["units"]] == ["gradient_norm", "gaussian_noise"]
    assert all(u["state"] in ("selected", "over_budget") for u in record["units"])  # the final record: both decided
    scored = expand(s, select(s, stored_accuracies(runs)).chosen())
    assert {r.job.hash for r in summary.jobs} == {j.hash for j in sweep_jobs(s)} | {j.hash for j in scored}
    manifest = json.loads((runs / "manifest.json").read_text())
    assert set(manifest["runs"][-1]["jobs"]) == {r.job.hash for r in summary.jobs}
