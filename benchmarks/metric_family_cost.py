"""Cost of the metric-family evaluators (``random_logit``, ``complexity``, ``sensitivity``, ``infidelity``) against
their floor (the model passes each needs, run alone) and, where Quantus 0.6.0 computes the same definition, against
Quantus per pass.

Run (CPU, a few minutes at the defaults; Quantus optional: ``pip install quantus==0.6.0``)::

    python benchmarks/metric_family_cost.py [--images 200] [--repeats 3] [--sens-samples 16] [--infid-samples 32] \\
        [--train-epochs 1] [--threads 1] [--device cpu] [--json out.json]

Protocol:

* Data: the first ``--images`` test images of the bundled MNIST subset (1×28×28). Model: ``gibench_cnn`` with the
  softplus activation (the ``standard`` suite's backbone) behind its normalization layer, trained for
  ``--train-epochs`` epochs (``gibench.testing.trained_model``: Adam, lr 1e-3,
  batch 64, seed 0). Evaluation batch size 256 rows, as the runner's.
* Each evaluator runs at the ``standard`` suite's settings (``--sens-samples`` = S_s draws for sensitivity,
  ``--infid-samples`` = S_i draws per perturbation kind for infidelity).
* Floors: the evaluator's model calls alone, with the same rows in the same calls (``batch_size // S`` images per
  call for the two perturbing ones): random_logit: one input-gradient call of 2 rows per image (label and other
  class); complexity: one input-gradient per image; sensitivity: input-gradients of 1 + S_s rows and forwards of
  1 + S_s rows per image (the prediction check); infidelity: one input-gradient and, per perturbation kind, one clean
  and S_i perturbed forwards per image.
* Quantus (same model, images, labels; attributions precomputed where Quantus accepts them): ``Sparseness`` +
  ``Complexity`` against gibench's Gini + entropy on the same pixel maps (no model pass: the time of the metric
  alone), and ``MaxSensitivity`` at ``nr_samples = S_s`` and radius r = 0.1 (``lower_bound``) with a plain-gradient
  ``explain_func`` against gibench's ``sensitivity`` per input-gradient pass (per image and draw). At its default
  (``return_nan_when_prediction_changes=False``) Quantus makes no prediction check, so gibench's time also pays for
  the 1 + S_s forwards of its flip share, and for the clean saliency that Quantus gets precomputed. Quantus'
  ``RandomLogit`` (1-D SSIM) and ``Infidelity`` (cumulative patch removal, no β) are different definitions and are not
  timed.
* Every measurement is repeated ``--repeats`` times, floors and evaluators interleaved, and the minimum is reported
  (the machine may be shared; the minimum is the least disturbed run). Imports and the first call are paid before
  timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

import gibench
from gibench.api.plugin import DatasetBundle
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.data.tensors import make_bundle
from gibench.evaluators.complexity import entropy, gini
from gibench.testing import make_eval_context, trained_model

BATCH = 256


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def chunks(x: Tensor, y: Tensor, images_per_call: int):
    for start in range(0, len(y), images_per_call):
        yield x[start:start + images_per_call], y[start:start + images_per_call]


def floor(model: nn.Module, x: Tensor, y: Tensor, calls: list[tuple[str, int]], per_call: int) -> Callable[[], None]:
    """The evaluator's model calls alone: for every chunk of ``per_call`` images, each ``(kind, rows per image)`` in
    ``calls`` as one input-gradient (``grad``) or no-grad forward (``fwd``) call of that many rows per image."""

    def run() -> None:
        for xb, yb in chunks(x, y, per_call):
            for kind, rows in calls:
                xr, yr = xb.repeat_interleave(rows, 0), yb.repeat_interleave(rows, 0)
                if kind == "grad":
                    input_gradient(model, xr, yr)
                else:
                    with torch.no_grad():
                        model(xr)
    return run


def evaluator_run(name: str, params: dict, model: nn.Module, bundle: DatasetBundle, device: torch.device,
                  folder: str) -> Callable[[], None]:
    evaluator = gibench.create_evaluator(name, **params)
    ctx = make_eval_context(model, bundle, folder, batch_size=BATCH, device=device)
    return lambda: evaluator.evaluate(ctx)


def quantus_cases(model: nn.Module, x: Tensor, y: Tensor, samples: int) -> dict[str, Callable[[], None]]:
    try:
        import quantus
    except ImportError:
        return {}
    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    maps = pixel_scores(input_gradient(model, x, y)).unsqueeze(1)
    grads = input_gradient(model, x, y).cpu().numpy()
    maps_np = maps.cpu().numpy()
    device = str(x.device)

    def explain(model, inputs, targets, **kwargs):
        return input_gradient(model, torch.as_tensor(inputs, device=device),
                              torch.as_tensor(targets, device=device)).cpu().numpy()

    def complexity_quantus() -> None:
        quantus.Sparseness(disable_warnings=True)(model=None, x_batch=xs, y_batch=ys, a_batch=maps_np)
        quantus.Complexity(disable_warnings=True)(model=None, x_batch=xs, y_batch=ys, a_batch=maps_np)

    def sensitivity_quantus() -> None:
        metric = quantus.MaxSensitivity(nr_samples=samples, lower_bound=0.1, disable_warnings=True)
        metric(model=model, x_batch=xs, y_batch=ys, a_batch=grads, explain_func=explain, device=device,
               batch_size=BATCH)

    def complexity_gibench() -> None:
        gini(maps)
        entropy(maps)

    return {"quantus.Sparseness+Complexity": complexity_quantus, "gibench gini+entropy": complexity_gibench,
            "quantus.MaxSensitivity": sensitivity_quantus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sens-samples", type=int, default=16)
    parser.add_argument("--infid-samples", type=int, default=32)
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-quantus", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    full = gibench.load_dataset("mnist_subset")
    n = args.images
    bundle = make_bundle("mnist_subset", full.train.x, full.train.y, full.test.x[:n], full.test.y[:n], num_classes=10)
    model = trained_model(bundle, "gibench_cnn", {"act": "softplus"}, epochs=args.train_epochs, device=device)
    x, y = bundle.test.x.to(device), bundle.test.y.to(device)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    ss, si = args.sens_samples, args.infid_samples
    folder = tempfile.mkdtemp()
    cases = {  # name: (evaluator params, floor, passes per image, label)
        "random_logit": ({"max_images": n}, floor(model, x, y, [("grad", 2)], BATCH), 2, "2 fwd+bwd"),
        "complexity": ({"max_images": n}, floor(model, x, y, [("grad", 1)], BATCH), 1, "1 fwd+bwd"),
        "sensitivity": ({"max_images": n, "num_samples": ss},
                        floor(model, x, y, [("grad", 1), ("grad", ss), ("fwd", ss), ("fwd", 1)], max(1, BATCH // ss)),
                        ss + 1, f"{ss + 1} fwd+bwd + {ss + 1} fwd"),
        "infidelity": ({"max_images": n, "num_samples": si},
                       floor(model, x, y, [("grad", 1), ("fwd", 1), ("fwd", si), ("fwd", 1), ("fwd", si)],
                             max(1, BATCH // si)), 2 * si + 3, f"1 fwd+bwd + {2 * si + 2} fwd"),
    }
    runs: dict[str, Callable[[], None]] = {}
    for name, (params, floor_run, _, _) in cases.items():
        runs[f"floor:{name}"] = floor_run
        runs[name] = evaluator_run(name, params, model, bundle, device, folder)
    if not args.no_quantus:
        runs.update(quantus_cases(model, x, y, ss))
    for fn in runs.values():  # warm-up: imports, first-call allocations
        fn()
    best = {key: float("inf") for key in runs}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            best[key] = min(best[key], timed(fn, device))
    rows = []
    for name, (_, _, passes, label) in cases.items():
        rows.append({"evaluator": name, "passes": label, "floor_s": best[f"floor:{name}"], "evaluator_s": best[name],
                     "ratio": best[name] / best[f"floor:{name}"],
                     "ms_per_pass_image": 1000 * best[name] / (n * passes)})
    if "quantus.MaxSensitivity" in best:
        rows.append({"evaluator": "quantus.MaxSensitivity", "passes": f"{ss} fwd+bwd (no prediction check)",
                     "floor_s": best["floor:sensitivity"], "evaluator_s": best["quantus.MaxSensitivity"],
                     "ratio": best["quantus.MaxSensitivity"] / best["floor:sensitivity"],
                     "ms_per_pass_image": 1000 * best["quantus.MaxSensitivity"] / (n * ss)})
        for key in ("gibench gini+entropy", "quantus.Sparseness+Complexity"):
            rows.append({"evaluator": key, "passes": "0 (maps given)", "floor_s": float("nan"),
                         "evaluator_s": best[key], "ratio": float("nan"),
                         "ms_per_pass_image": 1000 * best[key] / n})
    print(f"{n} images, test accuracy {accuracy:.3f}, device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print("| evaluator | passes per image | floor (s) | evaluator (s) | ratio to floor | ms per pass-image |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['evaluator']} | {r['passes']} | {r['floor_s']:.2f} | {r['evaluator_s']:.3f} | {r['ratio']:.3f} | "
              f"{r['ms_per_pass_image']:.4f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"images": n, "accuracy": accuracy, "device": str(device), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
