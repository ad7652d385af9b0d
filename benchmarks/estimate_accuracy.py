"""How close `gibench run --estimate` came: the estimate of a suite beside the times a finished run recorded.

    python benchmarks/estimate_accuracy.py --suite smoke --runs-dir /tmp/smoke_b --device cpu
    python benchmarks/estimate_accuracy.py --runs-dir /tmp/smoke_b --from-table est_smoke.out

The estimate is either recomputed for an empty runs directory (so every job counts) from the calibration cache that
`gibench run --suite SUITE --estimate` filled (it calibrates what is missing), or read from the table that such a
command printed before the run (``--from-table``, the saved stdout). Measured: each job's training time
(the last ``seconds`` of its train_log.json, the training loop's wall time) and the sum of its evaluations'
``seconds`` (result files). The first job of each dataset trains its judge and denoiser inside its evaluations, so
the estimate of those auxiliary models is added to that dataset's first row. Rows of jobs not yet stored are left
out, so a run still in progress can be compared too. Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from gibench.running.estimate import estimate_suite
from gibench.suites.suite import load_suite


def measured(runs_dir: Path) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(training, evaluation) seconds per (dataset, backbone, variant), summed over seeds, for the jobs stored."""
    times: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for job in sorted((runs_dir / "jobs").iterdir()):
        if not (job / "status.json").exists():
            continue
        labels = json.loads((job / "job.json").read_text())["labels"]
        log = json.loads((job / "train_log.json").read_text())
        params = labels["backbone_params"]
        backbone = labels["backbone"] + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
        row = times[(labels["dataset"], backbone, labels["variant"])]
        row[0] += log["entries"][-1]["seconds"]
        row[1] += sum(json.loads(r.read_text()).get("seconds") or 0.0 for r in (job / "results").glob("*.json"))
    return {key: (t, e) for key, (t, e) in times.items()}


Estimated = list[tuple[str, str, str, float, float]]  # dataset, backbone, regularizer (or what), train s, eval s


def from_estimate(suite: str, device: str, data_root: Path | None) -> tuple[Estimated, Estimated]:
    with tempfile.TemporaryDirectory() as empty:
        est = estimate_suite(load_suite(suite), Path(empty), device=device, data_root=data_root)
    return ([(r.dataset, r.backbone, r.regularizer, r.train_seconds, r.eval_seconds) for r in est.rows],
            [(r.dataset, r.backbone, r.regularizer, r.train_seconds, r.eval_seconds) for r in est.auxiliary])


def from_table(path: Path) -> tuple[Estimated, Estimated]:
    """The rows of a saved `gibench run --estimate` table (hours in its columns)."""
    rows, aux = [], []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 7 or cells[0] in ("", "total"):
            continue
        dataset, backbone, regularizer, jobs, train_h, eval_h, _ = cells
        (aux if jobs == "once" else rows).append((dataset, backbone, regularizer, float(train_h) * 3600,
                                                  float(eval_h) * 3600))
    return rows, aux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", help="recompute the estimate of this suite from the calibration cache")
    parser.add_argument("--from-table", type=Path, help="or read the estimate from a saved --estimate output")
    parser.add_argument("--runs-dir", type=Path, required=True, help="a run of that suite (finished or not)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    if (args.suite is None) == (args.from_table is None):
        parser.error("give exactly one of --suite and --from-table")
    rows, auxiliary = from_table(args.from_table) if args.from_table else from_estimate(args.suite, args.device,
                                                                                         args.data_root)
    aux: dict[str, float] = defaultdict(float)
    for dataset, _, _, train, evaluation in auxiliary:
        aux[dataset] += train + evaluation
    got = measured(args.runs_dir)
    print("| dataset | backbone | regularizer | training: estimated (s) | measured (s) | evaluation: estimated (s) "
          "| measured (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals = [0.0, 0.0, 0.0, 0.0]
    for dataset, backbone, regularizer, train_est, eval_est in rows:
        eval_est += aux.pop(dataset, 0.0)  # the dataset's first job trains its judge and denoiser
        if (dataset, backbone, regularizer) not in got:
            continue
        train, evaluated = got[(dataset, backbone, regularizer)]
        print(f"| {dataset} | {backbone} | {regularizer} | {train_est:.1f} | {train:.1f} | {eval_est:.1f} | "
              f"{evaluated:.1f} |")
        for i, value in enumerate((train_est, train, eval_est, evaluated)):
            totals[i] += value
    print(f"| **{len(got)} of {len(rows)} rows measured** | | | **{totals[0]:.0f}** | **{totals[1]:.0f}** | "
          f"**{totals[2]:.0f}** | **{totals[3]:.0f}** |")
    whole = sum(r[3] + r[4] for r in rows) + sum(a[3] + a[4] for a in auxiliary)
    print(f"\nwhole suite estimated: {whole:.0f} s ({whole / 3600:.3g} h)")


if __name__ == "__main__":
    main()
