"""How close `gibench run --estimate` came: the estimate of a suite beside the times a finished run recorded.

    python benchmarks/estimate_accuracy.py --suite smoke --runs-dir /tmp/smoke_b --device cpu

The estimate is recomputed for an empty runs directory (so every job counts) from the calibration cache that
`gibench run --suite SUITE --estimate` filled (it calibrates what is missing). Measured: each job's training time
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

from gibench.config import load_suite
from gibench.estimate import estimate_suite


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--runs-dir", type=Path, required=True, help="a run of that suite (finished or not)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        est = estimate_suite(load_suite(args.suite), Path(empty), device=args.device, data_root=args.data_root)
    aux: dict[str, float] = defaultdict(float)
    for r in est.auxiliary:
        aux[r.dataset] += r.seconds
    got = measured(args.runs_dir)
    print("| dataset | backbone | regularizer | training: estimated (s) | measured (s) | evaluation: estimated (s) "
          "| measured (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals = [0.0, 0.0, 0.0, 0.0]
    for r in est.rows:
        evaluation = r.eval_seconds + aux.pop(r.dataset, 0.0)  # the dataset's first job trains its judge/denoiser
        key = (r.dataset, r.backbone, r.regularizer)
        if key not in got:
            continue
        train, evaluated = got[key]
        print(f"| {r.dataset} | {r.backbone} | {r.regularizer} | {r.train_seconds:.1f} | {train:.1f} | "
              f"{evaluation:.1f} | {evaluated:.1f} |")
        for i, value in enumerate((r.train_seconds, train, evaluation, evaluated)):
            totals[i] += value
    print(f"| **{len(got)} of {len(est.rows)} rows measured** | | | **{totals[0]:.0f}** | **{totals[1]:.0f}** | "
          f"**{totals[2]:.0f}** | **{totals[3]:.0f}** |")
    print(f"\nwhole suite estimated: {est.seconds:.0f} s (training {est.train_seconds:.0f} s); calibration entries "
          f"reused {est.calibration.reused}, timed now {est.calibration.measured}")


if __name__ == "__main__":
    main()
