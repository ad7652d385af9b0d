"""Do the attribution priors do what they say on test images? Answered from a finished runs directory.

Run (CPU, about a minute for the 18 jobs of ``standard``'s X-DNN grid)::

    python benchmarks/attribution_prior_effect.py --runs-dir RUNS [--images 1000] [--markdown out.md]

For every trained job of ``RUNS`` whose regularizer is ``erm`` or ``attribution_prior`` on a ReLU ``gibench_cnn``
(the ``standard`` suite's X-DNN grid: the biased net and its ``bias: false`` X-DNN twin), on the first ``--images``
test images of the job's dataset, with each image's label:

* **Gini of the prior**: Gini(ā), ā_j the mean over the test images of |X-Gradient_j| per input coordinate, the very
  statistic the Gini prior maximises on training batches (``regularizers/attribution_prior.py``'s ``gini``; higher is
  sparser). Its 95 % interval is a percentile bootstrap over test images (200 resamples, seed 0): ā is a mean over
  images, so resampling images is what a different test set would do.
* **Per-image Gini**: the mean over images of the Gini of each image's own |X-Gradient| (Quantus' Sparseness and the
  ``complexity`` evaluator's definition, here on the coordinates rather than the channel-summed pixels), with its
  Student-t interval over images.
* **TV of the prior**: the mean over images of the total variation of the per-image standardized X-Gradient map (the
  TV prior's own statistic, ``total_variation``; lower is smoother), with its t-interval over images.
* **Accuracy** on the same images.

The X-Gradient is (x − mean colour) ⊙ ∇x f_y (``gibench.api.saliency.x_gradient``), the attribution both priors of the
grid are trained on. The intervals are over test images of one trained model: they say how precisely this model's
statistic is known, not how much another training seed would move it (the ``standard`` suite has one seed).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gibench.api import registry
from gibench.api.saliency import x_gradient
from gibench.data import default_data_root
from gibench.regularizers.attribution_prior import gini, total_variation
from gibench.results.stats import mean_interval
from gibench.store.runs import RunStore
from gibench.training.models import build_model

BOOTSTRAP_RESAMPLES = 200
BATCH = 250


@dataclass(frozen=True)
class Row:
    dataset: str
    backbone: str
    regularizer: str
    accuracy: float
    prior_gini: tuple[float, float, float]
    image_gini: tuple[float, float, float]
    prior_tv: tuple[float, float, float]


def per_image_gini(attribution: Tensor) -> Tensor:
    """Gini of each image's |attribution| over its coordinates, shape (N,)."""
    v = torch.sort(attribution.abs().flatten(1), dim=1).values
    d = v.shape[1]
    coefficients = 2 * torch.arange(1, d + 1, dtype=v.dtype) - d - 1
    return (coefficients * v).sum(1) / (d * v.sum(1)).clamp_min(torch.finfo(v.dtype).tiny)


def per_image_tv(attribution: Tensor) -> Tensor:
    """The TV prior's statistic of each image alone, shape (N,) (its mean over a batch is ``total_variation``)."""
    return torch.stack([total_variation(a.unsqueeze(0)) for a in attribution])


def bootstrap_gini(attribution: Tensor, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile bootstrap interval of Gini(mean |attribution| over images), resampling images."""
    generator = torch.Generator().manual_seed(seed)
    n = attribution.shape[0]
    draws = torch.stack([gini(attribution[torch.randint(n, (n,), generator=generator)])
                         for _ in range(resamples)])
    low, high = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=draws.dtype)).tolist()
    return low, high


def interval(values: Tensor) -> tuple[float, float, float]:
    est = mean_interval(values.tolist())
    return est.estimate, est.low, est.high


def attributions(model: torch.nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
    """X-Gradient of every image (float64 on the CPU, detached) and the accuracy."""
    parts, correct = [], 0
    for start in range(0, x.shape[0], BATCH):
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        parts.append(x_gradient(model, xb, yb).detach().double())
        with torch.no_grad():
            correct += int((model(xb).argmax(1) == yb).sum())
    return torch.cat(parts), correct / x.shape[0]


def in_grid(spec: dict) -> bool:
    backbone = spec["backbone"]
    return (backbone["name"] == "gibench_cnn" and backbone["options"].get("act") == "relu"
            and spec["regularizer"]["name"] in ("erm", "attribution_prior"))


def measure(runs_dir: Path, images: int, data_root: Path) -> list[Row]:
    rows, bundles = [], {}
    for folder in RunStore(runs_dir).jobs():
        record, status = folder.spec(), folder.status()
        if record is None or status is None or status.state != "trained" or not in_grid(record.spec):
            continue
        dataset = record.spec["dataset"]
        key = json.dumps(dataset, sort_keys=True)
        if key not in bundles:
            bundles[key] = registry.datasets.create(dataset["name"], **dataset["config"]).load(data_root)
        bundle = bundles[key]
        backbone = record.spec["backbone"]
        model = folder.load_weights(build_model(backbone["name"], backbone["options"], bundle)).eval()
        x, y = bundle.test.x[:images], bundle.test.y[:images]
        attribution, accuracy = attributions(model, x, y)
        low, high = bootstrap_gini(attribution)
        labels = record.labels
        rows.append(Row(
            dataset=labels.dataset,
            backbone="X-DNN (bias: false)" if backbone["options"].get("bias") is False else "biased",
            regularizer=labels.variant, accuracy=accuracy,
            prior_gini=(float(gini(attribution)), low, high),
            image_gini=interval(per_image_gini(attribution)), prior_tv=interval(per_image_tv(attribution))))
    # each dataset: the biased net before its X-DNN twin, erm before the priors
    return sorted(rows, key=lambda r: (r.dataset, r.backbone != "biased", r.regularizer != "erm", r.regularizer))


def _fmt(value: tuple[float, float, float], digits: int = 3) -> str:
    est, low, high = value
    if math.isnan(low):
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(rows: list[Row], images: int) -> str:
    lines = [f"X-Gradient statistics on the first {images} test images (95 % intervals over images)",
             "",
             "| dataset | backbone | regularizer | accuracy | Gini(mean abs) (prior, higher sparser) "
             "| per-image Gini | standardized TV (prior, lower smoother) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.dataset} | {r.backbone} | {r.regularizer} | {r.accuracy:.3f} | {_fmt(r.prior_gini)} "
                     f"| {_fmt(r.image_gini)} | {_fmt(r.prior_tv, 1)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    rows = measure(args.runs_dir, args.images, args.data_root or default_data_root())
    if not rows:
        raise SystemExit(f"no trained erm or attribution_prior job on a ReLU gibench_cnn in {args.runs_dir}")
    table = markdown(rows, args.images)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
