"""Cost of the ``diffroar`` evaluator against its floor, and how it grows with evaluations sharing retrained models.

Run (CPU; minutes, depending on the settings)::

    OMP_NUM_THREADS=1 python benchmarks/diffroar_cost.py [--dataset mnist_subset] [--backbone gibench_cnn] \\
        [--act softplus] [--job-epochs 3] [--epochs 1] [--levels 0.5,0.2,0.1] [--seeds 0] [--max-train-images 0] \\
        [--evaluations 3] [--regularizers erm] [--device cpu] [--json out.json]

Protocol:

* A job like a suite's: ``--dataset`` × ``--backbone`` (``act``) × each of ``--regularizers`` × seed 0, trained for
  ``--job-epochs`` (Adam, lr 1e-3, batch 64). Training the job is not charged to DiffROAR.
* **Floor**: DiffROAR cannot do less than 2 × levels × seeds retrainings. The unit is one plain training (``erm``,
  ``gibench.training.train.fit``) of the same backbone with the retraining config (``--epochs``, on the same
  ``--max-train-images`` train images), unmasked, timed in the same process right before the evaluation. Floor =
  2 × levels × seeds × that time.
* **Cold evaluation**: ``DiffROAR.evaluate`` on a fresh auxiliary-model store (``runs_dir/aux`` in a temporary
  folder): both saliency passes, masking, every retraining, and the masked-test forwards. Its ratio to the floor is
  the overhead. The table also splits it into the retrainings' own ``train_seconds`` (recorded by
  ``gibench.store.auxiliary.classifier``) and the rest.
* **Sharing**: ``--evaluations`` − 1 further evaluations of the same job with the same config, each through a new
  ``AuxiliaryModels`` on the same store (as a rerun or another suite sees it); they train nothing, and cost the two
  saliency passes plus loading and testing the stored models. The cumulative time shows how cost grows with the
  number of evaluations sharing the retrained models. One more evaluation adds a level (the old ones are reused).
* Retrained models are per job (each job ranks its own coordinates), so jobs never share them; the per-job cost
  multiplies with the number of jobs. ``--regularizers`` measures several jobs (e.g. ``erm,fooled`` also gives the
  sanity comparison: fooled's DiffROAR must be below erm's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import gibench
from gibench.api import registry
from gibench.api.plugin import EvalContext
from gibench.api.saliency import input_gradient
from gibench.evaluators.diffroar import DiffROAR, retraining, train_subset
from gibench.store.auxiliary import AuxiliaryModels
from gibench.suites.jobs import expand
from gibench.suites.suite import parse_suite
from gibench.training.train import fit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist_subset")
    parser.add_argument("--backbone", default="gibench_cnn")
    parser.add_argument("--act", default="softplus")
    parser.add_argument("--job-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="retraining epochs (0 = the job's)")
    parser.add_argument("--levels", default="0.5,0.2,0.1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-train-images", type=int, default=0)
    parser.add_argument("--evaluations", type=int, default=3)
    parser.add_argument("--regularizers", default="erm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def make_jobs(args: argparse.Namespace) -> list:
    suite = parse_suite({
        "name": "diffroar_cost", "datasets": [args.dataset], "backbones": [{args.backbone: {"act": args.act}}],
        "regularizers": args.regularizers.split(","), "evaluators": ["accuracy"], "seeds": [0],
        "train": {"epochs": args.job_epochs, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-3},
    })
    return expand(suite)


def evaluator_params(args: argparse.Namespace, levels: list[float]) -> dict:
    return {"levels": levels, "retrain_seeds": [int(s) for s in args.seeds.split(",")], "epochs": args.epochs,
            "max_train_images": args.max_train_images}


def timed_evaluation(evaluator: DiffROAR, ctx: EvalContext) -> tuple[float, dict, list]:
    with ctx.aux.tracking() as used:
        start = time.perf_counter()
        result = evaluator.evaluate(ctx)
        seconds = time.perf_counter() - start
    curves = {name: dict(zip(c.x, c.y)) for name, c in result.curves.items() if not name.endswith("_std")}
    return seconds, {**result.scalars, "curves": curves}, list(used)


def measure_job(job, bundle, args: argparse.Namespace, device: torch.device) -> dict:
    regularizer = registry.regularizers.create(job.regularizer.name, **job.regularizer.params)
    model = fit(bundle, job.backbone, regularizer, job.train, job.seed, device).model.eval()
    levels = [float(k) for k in args.levels.split(",")]
    evaluator = gibench.create_evaluator("diffroar", **evaluator_params(args, levels))
    spec = retraining(evaluator.config, EvalContext(model, bundle, input_gradient, device, 0, Path("."), job=job))
    plain_bundle = dataclasses.replace(bundle, train=train_subset(bundle.train, args.max_train_images))
    start = time.perf_counter()
    fit(plain_bundle, spec.backbone, registry.regularizers.create("erm"), spec.train, 0, device)
    unit = time.perf_counter() - start
    retrainings = 2 * len(levels) * len(evaluator.config.retrain_seeds)
    row = {"job": job.label, "unit_s": unit, "retrainings": retrainings, "floor_s": retrainings * unit}
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i in range(args.evaluations):
            aux = AuxiliaryModels(Path(tmp) / "aux", device)
            ctx = EvalContext(model, bundle, input_gradient, device, job.seed, Path(tmp) / f"art{i}", job=job, aux=aux)
            seconds, scalars, used = timed_evaluation(evaluator, ctx)
            runs.append({"seconds": seconds, "trained": len(aux.trained), "scalars": scalars,
                         "train_seconds": sum(u.quality["train_seconds"] for u in used if u.hash in aux.trained)})
        aux = AuxiliaryModels(Path(tmp) / "aux", device)
        wider = gibench.create_evaluator("diffroar", **evaluator_params(args, levels + [0.3]))
        ctx = EvalContext(model, bundle, input_gradient, device, job.seed, Path(tmp) / "wider", job=job, aux=aux)
        seconds, _, _ = timed_evaluation(wider, ctx)
        row.update(runs=runs, added_level={"seconds": seconds, "trained": len(aux.trained)})
    return row


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| job | retrainings | plain training (s) | floor (s) | cold evaluation (s) | × floor | retraining share |"
        " cumulative time, 1…N evaluations (s) | trained per evaluation | + level 0.3 (s, trained) | DiffROAR mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cold = r["runs"][0]
        cumulative, total = [], 0.0
        for run in r["runs"]:
            total += run["seconds"]
            cumulative.append(f"{total:.1f}")
        lines.append(
            f"| {r['job']} | {r['retrainings']} | {r['unit_s']:.2f} | {r['floor_s']:.1f} | {cold['seconds']:.1f} | "
            f"{cold['seconds'] / r['floor_s']:.2f} | {cold['train_seconds'] / cold['seconds']:.0%} | "
            f"{', '.join(cumulative)} | {', '.join(str(run['trained']) for run in r['runs'])} | "
            f"{r['added_level']['seconds']:.1f}, {r['added_level']['trained']} | "
            f"{cold['scalars']['diffroar_mean']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    bundle = gibench.load_dataset(args.dataset)
    rows = [measure_job(job, bundle, args, device) for job in make_jobs(args)]
    print(f"diffroar cost: {args.dataset}, {args.backbone}(act={args.act}), job {args.job_epochs} epochs; "
          f"levels {args.levels}, seeds {args.seeds}, retraining {args.epochs} epochs, max_train_images "
          f"{args.max_train_images}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})\n")
    print(markdown(rows, args))
    for r in rows:
        scalars = dict(r["runs"][0]["scalars"])
        curves = scalars.pop("curves")
        print(f"\n{r['job']}: " + json.dumps({k: round(v, 4) for k, v in scalars.items()}))
        for name, curve in curves.items():
            print(f"  {name}: " + ", ".join(f"k={k:g}: {v:.3f}" for k, v in sorted(curve.items())))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
