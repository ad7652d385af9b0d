"""Where a finished run's time went: training and evaluation seconds per dataset and per evaluator, from the store.

Run (seconds; reads the store, trains nothing)::

    python benchmarks/store_job_times.py --runs-dir RUNS [--suite standard]

Training seconds are the last ``seconds`` entry of each job's ``train_log.json`` (the loop's own clock); evaluation
seconds are each result record's ``seconds`` (the evaluator's wall time, auxiliary models trained on first use
included). With ``--suite`` only that suite's jobs count (by job hash): every job a run of it could train, so for a
suite that selects (``tuned``) its sweep and whichever settings its selection scored; for such a suite a last table
splits the time by phase: the sweep (its trainings and their validation accuracy, all that selection reads) and the
scored phase (the other trainings and every other evaluation).
The sum is the time one worker on one core would need if nothing else ran, the figure to compare with elapsed time:
two workers on the same runs directory divide it, other processes on the same cores inflate it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

SELECTION_EVALUATOR = "validation_accuracy"


def job_times(runs_dir: Path, only: set[str] | None, sweep: set[str] = frozenset()
              ) -> tuple[dict, dict, int, dict[str, list[float]]]:
    """({dataset: [training s, evaluation s, jobs]}, {evaluator label: [seconds, evaluations]}, jobs, {"sweep" |
    "scored": [training s, trainings, evaluation s, evaluations]}): a job in ``sweep`` has its training and its
    validation accuracy counted as the sweep's, everything else is the scored phase's."""
    per_dataset: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    per_evaluator: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    phases: dict[str, list[float]] = {"sweep": [0.0, 0, 0.0, 0], "scored": [0.0, 0, 0.0, 0]}
    jobs = 0
    for folder in sorted((runs_dir / "jobs").iterdir()):
        if only is not None and folder.name not in only or not (folder / "train_log.json").is_file():
            continue
        dataset = json.loads((folder / "job.json").read_text())["labels"]["dataset"]
        entries = json.loads((folder / "train_log.json").read_text()).get("entries") or []
        trained = entries[-1]["seconds"] if entries else 0.0
        per_dataset[dataset][0] += trained
        per_dataset[dataset][2] += 1
        in_sweep = folder.name in sweep
        phases["sweep" if in_sweep else "scored"][0] += trained
        phases["sweep" if in_sweep else "scored"][1] += 1
        jobs += 1
        for result in (folder / "results").glob("*.json"):
            record = json.loads(result.read_text())
            seconds = record.get("seconds") or 0.0
            per_dataset[dataset][1] += seconds
            saliency = (record.get("config") or {}).get("saliency")
            label = record["evaluator"] + (f" ({saliency})" if saliency else "")
            per_evaluator[label][0] += seconds
            per_evaluator[label][1] += 1
            phase = phases["sweep" if in_sweep and record["evaluator"] == SELECTION_EVALUATOR else "scored"]
            phase[2] += seconds
            phase[3] += 1
    return dict(per_dataset), dict(per_evaluator), jobs, phases


def phase_markdown(phases: dict[str, list[float]]) -> str:
    lines = ["| phase | trainings | training (min) | evaluations | evaluation (min) |",
             "| --- | --- | --- | --- | --- |"]
    for phase, (train, trainings, evaluation, evaluations) in phases.items():
        lines.append(f"| {phase} | {trainings} | {train / 60:.1f} | {evaluations} | {evaluation / 60:.1f} |")
    return "\n".join(lines) + "\n"


def markdown(per_dataset: dict, per_evaluator: dict) -> str:
    lines = ["| dataset | jobs | training (min) | evaluation (min) |", "| --- | --- | --- | --- |"]
    for dataset, (train, evaluation, n) in sorted(per_dataset.items()):
        lines.append(f"| {dataset} | {n} | {train / 60:.1f} | {evaluation / 60:.1f} |")
    train = sum(v[0] for v in per_dataset.values())
    evaluation = sum(v[1] for v in per_dataset.values())
    lines += [f"| total | {sum(v[2] for v in per_dataset.values())} | {train / 60:.1f} | {evaluation / 60:.1f} |", "",
              f"sum of job times: {(train + evaluation) / 60:.1f} min", "",
              "| evaluator | evaluations | total (min) | per evaluation (s) |", "| --- | --- | --- | --- |"]
    for label, (seconds, n) in sorted(per_evaluator.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {label} | {n} | {seconds / 60:.1f} | {seconds / n:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--suite", default=None, help="count only this suite's jobs")
    args = parser.parse_args()
    if not (args.runs_dir / "jobs").is_dir():
        parser.error(f"{args.runs_dir} holds no jobs/ folder: pass the runs directory a `gibench run` wrote")
    only = sweep = None
    if args.suite:
        import gibench
        from gibench.core.errors import GibenchError
        from gibench.suites.jobs import rebuildable_jobs, sweep_jobs

        try:
            suite = gibench.load_suite(args.suite)
        except GibenchError as exc:
            parser.error(str(exc))
        only = {job.hash for job in rebuildable_jobs(suite)}
        sweep = {job.hash for job in sweep_jobs(suite)}
    per_dataset, per_evaluator, jobs, phases = job_times(args.runs_dir, only, sweep or frozenset())
    if not jobs:
        raise SystemExit(f"no trained job in {args.runs_dir}" + (f" of suite {args.suite}" if args.suite else ""))
    print(markdown(per_dataset, per_evaluator))
    if sweep:
        print(phase_markdown(phases))

if __name__ == "__main__":
    main()
