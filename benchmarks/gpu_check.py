"""One command that checks gibench on a GPU within a time budget and writes every figure into one folder.

    python benchmarks/gpu_check.py --device cuda --budget 480 --out gpu-check
    python benchmarks/gpu_check.py --device cpu --budget 60 --out gpu-check-cpu     # the same code paths, toy sizes

Five parts, in this order, each wrapped: a part that raises records its traceback and the script goes on with the next
one (so one call shows every failure); a part that finds its share of the budget spent is recorded as skipped with a
note. The budget (``--budget`` seconds, default 480, counted from the start of the script) is shared out as the parts
start: each gets the time left times its weight over the weights of the parts still to run, so time a part does not
use goes to the later ones; loops inside a part (per round, per regularizer, per calibrated unit) check the part's
deadline and stop early with a note.

1. **mini_suite**: a suite built here (every built-in regularizer, every built-in evaluator at tiny settings, written
   as YAML into the output folder) runs end to end through the command line: ``gibench run --suite ... --device D`` in
   a child process (killed at the part's deadline; a CUDA error there cannot poison this process), then ``gibench
   report``, ``gibench submit`` and ``gibench validate`` on what it stored. ``attribution_prior`` trains on the ReLU
   X-DNN backbone (``{gibench_cnn: {act: relu, bias: false}}``, an ``extra_grids`` entry), a regularizer that trains
   on annotations (``rrr``) beside ``erm`` on the bundled ``decoy_mnist`` (another entry), every other regularizer on
   ``gibench_cnn`` with softplus. Datasets of the main grid: on CUDA the bundled ``mnist_subset``, ``blockmnist``
   (digits 0 and 1) and a 3×32×32 ``gaussian_mixture``; on the CPU the 3×32×32 mixture alone (64 training images).
   The part records each
   command's exit status and output tail, and from the store every failed training (with its traceback), every failed
   evaluation (with its reason) and the reasons of the skipped ones.
2. **fit_vs_bare**: :func:`bare_loop.compare` (``erm`` throughput of gibench's ``fit`` against a hand-written loop,
   alternated) for ``cifar_resnet18`` and ``gibench_cnn``, with and without channels-last (CPU: ``gibench_cnn`` and
   ``gibench_linear`` at toy sizes). On CUDA also the host synchronizations of one short ``fit`` (PyTorch's sync debug
   mode), per step. Target on a GPU: fit ≥ 0.90 × the bare loop's images per second.
3. **step_cost**: every built-in regularizer's training step on ``cifar_resnet18`` at batch 128 (CPU: ``gibench_cnn``
   at batch 4, two rounds), timed interleaved with :func:`regularizer_step_cost.time_steps` under the trainer's
   precision policy, its peak step memory (:func:`regularizer_step_cost.peak_memory`), its host synchronizations per
   step on CUDA, and its ratio to its **pass-count floor** (a regularizer whose step raises is recorded with its
   traceback and left out; the others are still measured). The floor is built from bare passes on the same model,
   batch and precision, timed in the same interleaved rounds: ``optimizer`` (the SGD update alone), ``forward``,
   ``erm`` (zero_grad, forward, cross-entropy, backward, update), ``gradnorm`` (the gradient-norm step written by
   hand: forward, input gradient with ``create_graph``, backward through both), ``hvp`` (a Hutchinson step written by
   hand: one more Hessian-vector product with ``create_graph``, BatchNorm from elementary ops) and ``attack`` (an
   eval-mode forward and an input-only backward, PGD's attack step). From their medians: O, F, B = erm − F − O, DB =
   gradnorm − erm (the double backward), T = hvp − gradnorm (the third-order part), A = attack; a regularizer whose
   default step runs nF forwards, nB backwards, nDB double backwards, nT third-order parts and nA attack steps
   (:data:`PASSES`) has the floor O + nF·F + nB·B + nDB·DB + nT·T + nA·A. Target on a GPU: step ≤ 1.10 × floor.
4. **taylor_precision**: :func:`tf32_precision.h_errors`, the error of the Taylor Hessian-trace estimate h against
   float64 under TF32, float32 (TF32 off) and bfloat16 autocast (CPU: no TF32; batch 2 instead of 64).
5. **estimate**: calibrates ``gibench run --estimate`` on the device (:class:`gibench.running.calibration.Calibration`,
   its default warm-up and timed steps; the CPU: one of each) for the mini-suite, whose estimate is compared with the
   times its run stored (:func:`estimate_accuracy.measured`), and for ``standard`` and ``full``: every distinct work
   unit of an empty runs directory's plan (:func:`gibench.running.estimate.plan_suite`), training steps first, is
   timed until the deadline; a fully calibrated suite is then priced by
   :func:`gibench.running.estimate.estimate_suite` from the cache, a partial one gets the lower bound of the units
   it timed. Calibrations are cached in ``OUT/calibration.json`` (``--calibration-cache``), so a second call goes on
   where the first stopped. On the CPU only ``standard`` is calibrated beside the mini-suite, shrunk (training batch
   2, evaluation batch 2, at most two units each): only the code path is exercised.

Output: ``OUT/gpu_check.json`` (everything, written again after every part) and ``OUT/gpu_check.md`` (Markdown tables
headed by the device name, driver, CUDA, cuDNN and torch versions and the exact command line), plus the mini-suite's
YAML. Exit status 1 when a part failed, else 0. ``--parts`` runs a subset (e.g. ``--parts estimate`` to finish a
calibration).
"""

from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts from here, imports included

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from gibench.api import registry  # noqa: E402
from gibench.api.hessian import higher_order_batch_norm  # noqa: E402
from gibench.core.params import config_fields  # noqa: E402
from gibench.suites.suite import load_suite, parse_suite, resolve_suite_path  # noqa: E402
from gibench.training.train import cudnn_benchmark, step_contexts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts, also when imported
import bare_loop  # noqa: E402
import estimate_accuracy  # noqa: E402
import regularizer_step_cost  # noqa: E402
import suite_wall_time  # noqa: E402
import tf32_precision  # noqa: E402

RUN_EVAL_BATCH = 256  # gibench run's --eval-batch-size default, which the mini-suite runs with
PARTS = ("mini_suite", "fit_vs_bare", "step_cost", "taylor_precision", "estimate")
FIT_TARGET = 0.90  # fit's images per second over the bare loop's, at least (GPU)
FLOOR_TARGET = 1.10  # a regularizer's step over its pass-count floor, at most (GPU)
#: Passes of each built-in regularizer's default step: (forwards, backwards, double backwards, third-order parts,
#: attack steps); see the module docstring. The Taylor score-matching variants run one noisy forward per draw (two for
#: the antithetic one) beside the clean forward whose input gradient they penalize; denoising score matching a clean
#: forward for the cross-entropy and a noisy one with a create_graph gradient; noise_consistency and
#: anti_score_matching one extra forward; pgd and trades one attack step per ``steps`` of their config (the count
#: here is the default; :func:`passes_of` reads the config), trades also a clean and an adversarial forward, and one
#: no-grad forward for the attack's reference, not counted (its floor is a little low, its check a little strict);
#: rrr is gradient_norm's passes with a mask; jem's SGLD steps are attack steps (a forward and an input-only backward
#: each, ``sgld_steps`` of its config), then a data and a sample forward and one backward through both.
PASSES: dict[str, tuple[int, int, int, int, int]] = {
    "erm": (1, 1, 0, 0, 0),
    "gaussian_noise": (1, 1, 0, 0, 0),
    "gradient_norm": (1, 1, 1, 0, 0),
    "fooled": (1, 1, 1, 0, 0),
    "attribution_prior": (1, 1, 1, 0, 0),
    "noise_consistency": (2, 2, 0, 0, 0),
    "anti_score_matching": (2, 2, 0, 0, 0),
    "score_matching": (2, 2, 1, 0, 0),
    "score_matching_antithetic": (3, 3, 1, 0, 0),
    "denoising_score_matching": (2, 2, 1, 0, 0),
    "score_matching_hutchinson": (1, 1, 1, 1, 0),
    "sliced_score_matching": (1, 1, 1, 1, 0),
    "pgd": (1, 1, 0, 0, 7),
    "trades": (2, 2, 0, 0, 5),
    "rrr": (1, 1, 1, 0, 0),
    "jem": (2, 2, 0, 0, 20),
}
PASS_KINDS = ("optimizer", "forward", "erm", "gradnorm", "hvp", "attack")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU's toy run."""

    weights: dict[str, float]  # share of the budget per part
    min_seconds: dict[str, float]  # a part with less time left than this is skipped
    # mini_suite
    datasets: tuple[Any, ...]
    cnn: dict[str, Any]  # gibench_cnn options besides act and bias
    train: dict[str, Any]
    max_images: int
    diffroar_train_images: int
    denoiser_train_images: int
    # fit_vs_bare
    fit_backbones: tuple[str, ...]
    fit_batch: int
    fit_steps: int
    fit_warmup: int
    fit_repeats: int
    # step_cost
    step_backbone: str
    step_batch: int
    step_warmup: int
    step_steps: int
    memory_repeats: int
    # taylor_precision
    taylor_batch: int
    # estimate
    estimate_suites: tuple[str, ...]  # shipped suites calibrated beside the mini-suite
    estimate_warmup: int
    estimate_timed: int
    eval_batch: int
    shrink_train_batch: int | None  # on the CPU: the shipped suites' training batch becomes this
    max_units: int | None  # per suite


GPU = Sizes(
    weights={"mini_suite": 0.50, "fit_vs_bare": 0.12, "step_cost": 0.15, "taylor_precision": 0.03, "estimate": 0.20},
    min_seconds={"mini_suite": 60, "fit_vs_bare": 15, "step_cost": 20, "taylor_precision": 10, "estimate": 15},
    datasets=("mnist_subset", {"blockmnist": {"classes": [0, 1]}},
              {"gaussian_mixture": {"channels": 3, "height": 32, "width": 32, "train_size": 2048, "test_size": 256}}),
    cnn={}, train={"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-3},
    max_images=64, diffroar_train_images=512, denoiser_train_images=512,
    fit_backbones=("cifar_resnet18", "gibench_cnn"), fit_batch=128, fit_steps=120, fit_warmup=20, fit_repeats=3,
    step_backbone="cifar_resnet18", step_batch=128, step_warmup=3, step_steps=10, memory_repeats=3,
    taylor_batch=64,
    estimate_suites=("standard", "full"), estimate_warmup=3, estimate_timed=5, eval_batch=256,
    shrink_train_batch=None, max_units=None,
)
CPU = Sizes(
    weights={"mini_suite": 0.75, "fit_vs_bare": 0.04, "step_cost": 0.10, "taylor_precision": 0.03, "estimate": 0.08},
    min_seconds={"mini_suite": 5, "fit_vs_bare": 1, "step_cost": 1, "taylor_precision": 1, "estimate": 1},
    datasets=({"gaussian_mixture": {"channels": 3, "height": 32, "width": 32, "train_size": 64, "test_size": 16}},),
    cnn={"width": 8, "hidden": 16}, train={"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 1.0e-2},
    max_images=16, diffroar_train_images=32, denoiser_train_images=32,
    fit_backbones=("gibench_cnn", "gibench_linear"), fit_batch=16, fit_steps=4, fit_warmup=1, fit_repeats=1,
    step_backbone="gibench_cnn", step_batch=4, step_warmup=1, step_steps=2, memory_repeats=1,
    taylor_batch=2,
    estimate_suites=("standard",), estimate_warmup=1, estimate_timed=1, eval_batch=2, shrink_train_batch=2, max_units=2,
)


class Skipped(Exception):
    """The part did not run (its share of the budget was spent): the note says why."""


class PartFailed(Exception):
    """The part ran and found failures: ``details`` is the text recorded as its traceback, ``result`` what it
    measured."""

    def __init__(self, message: str, details: str, result: dict) -> None:
        super().__init__(message)
        self.details, self.result = details, result


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    work: Path  # scratch folder (runs directory, submission), deleted at the end
    out: Path
    cache: Path  # calibration cache
    shared: dict[str, Any] = field(default_factory=dict)  # what a part leaves for a later one


def now() -> float:
    return time.perf_counter()


def builtin_names(reg: Any) -> list[str]:
    """The registered names that gibench itself ships."""
    return [info.name for info in reg.infos() if info.distribution == "gibench"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_host_syncs(call: Callable[[], Any], device: torch.device) -> int | None:
    """How many synchronizing CUDA operations ``call`` runs (PyTorch's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


# ----------------------------------------------------------------------------------------------------------------------
# Environment


def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:  # the kernel module's version line
        text = Path("/proc/driver/nvidia/version").read_text()
        words = text.split()
        return next((w for w in words if w[:1].isdigit() and "." in w), None)
    except OSError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    from gibench.store.provenance import cpu_model, device_name
    from gibench.version import __version__

    info: dict[str, Any] = {
        "device": str(device), "device_name": device_name(str(device)), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
        else None, "driver": None, "gibench": __version__, "python": platform.python_version(),
        "cpu": cpu_model() or platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(driver=_driver_version(), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    memory_gib=round(props.total_memory / 2**30, 1))
    return info


# ----------------------------------------------------------------------------------------------------------------------
# Part 1: the mini-suite through the command line


def evaluator_options(name: str, sizes: Sizes) -> dict[str, Any]:
    """Tiny settings of each built-in evaluator (the cheapest of tests/test_conformance.py's and smoke's); an
    evaluator not listed gets ``max_images`` when it has that option."""
    n = sizes.max_images
    known: dict[str, dict[str, Any]] = {
        "accuracy": {"max_images": n},
        "validation_accuracy": {},
        "blockmnist": {"max_images": n},
        "complexity": {"max_images": n},
        "random_logit": {"max_images": n},
        "density_ratio": {"max_images": n, "sigmas": [0.05, 0.1], "reference_sigma": 0.1},
        "pixel_perturbation": {"max_images": n, "fractions": [0.1, 0.5, 1.0]},
        "keep_remove": {"max_images": n, "fractions": [0.1, 0.5, 1.0]},
        "road": {"max_images": n, "fractions": [0.2, 0.6]},
        "sensitivity": {"max_images": n, "num_samples": 4},
        "infidelity": {"max_images": n, "num_samples": 4},
        "randomisation": {"max_images": n, "cascade": True},
        "score_alignment": {"max_images": n, "denoiser_epochs": 1, "denoiser_width": 8,
                            "denoiser_max_train": sizes.denoiser_train_images, "min_denoiser_gain": -1.0e6},
        "gan_test": {"num_samples": 20, "steps": 5, "judge_epochs": 1, "judge_min_accuracy": 0.0, "grid_samples": 2,
                     "langevin_temperature": 0.01},  # the noise generator on the device
        "diffroar": {"levels": [0.5], "retrain_seeds": [0], "epochs": 1, "backbone": "gibench_linear",
                     "max_train_images": sizes.diffroar_train_images, "train": {"batch_size": 64, "lr": 1.0e-2}},
    }
    if name in known:
        return known[name]
    return {"max_images": n} if "max_images" in config_fields(registry.evaluators.get(name).Config) else {}


def mini_suite(sizes: Sizes) -> dict[str, Any]:
    """The mini-suite as a suite file's mapping (see the module docstring)."""
    softplus = {"gibench_cnn": {"act": "softplus", **sizes.cnn}}
    xdnn = {"gibench_cnn": {"act": "relu", "bias": False, **sizes.cnn}}
    relu_only = {"attribution_prior"}  # trained on the X-DNN (the score-matching family needs softplus)
    annotated = {name for name in builtin_names(registry.regularizers)  # rrr: trained on DecoyMNIST's swatch mask
                 if registry.regularizers.get(name).requires}
    regularizers = [name for name in builtin_names(registry.regularizers) if name not in relu_only | annotated]
    n = sizes.max_images
    evaluators = [{name: evaluator_options(name, sizes)} for name in builtin_names(registry.evaluators)]
    evaluators.append({"complexity": {"max_images": n, "saliency": "integrated_gradients", "ig_steps": 4}})
    return {
        "name": "gpu_check",
        "description": "benchmarks/gpu_check.py: every built-in regularizer and evaluator at tiny settings.",
        "datasets": list(sizes.datasets),
        "backbones": [softplus],
        "regularizers": ["erm", *[r for r in regularizers if r != "erm"]],
        "evaluators": evaluators,
        "extra_grids": [{"backbones": [xdnn], "regularizers": sorted(relu_only & set(builtin_names(
            registry.regularizers))), "add_evaluators": [
            {"pixel_perturbation": {**evaluator_options("pixel_perturbation", sizes), "saliency": "x_gradient"}}]},
            {"datasets": ["decoy_mnist"], "regularizers": ["erm", *sorted(annotated)]}],
        "validation": {"fraction": 0.1, "seed": 0},  # validation_accuracy needs a held-out split
        "seeds": [0],
        "train": dict(sizes.train),
        "train_per_dataset": {"gaussian_mixture": {"augment": "crop_flip"}},
    }


def _tail(text: str, chars: int = 4000) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]


def cli_in_process(argv: list[str]) -> dict[str, Any]:
    """``gibench ARGV`` through :func:`gibench.cli.main` in this process, its output captured."""
    from rich.console import Console

    from gibench.cli import _shared, main

    out, err = io.StringIO(), io.StringIO()
    saved = _shared.stdout, _shared.stderr
    _shared.stdout, _shared.stderr = Console(file=out, width=200), Console(file=err, width=200)
    start = now()
    try:
        code: Any = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception:  # recorded, not raised: the next command still runs
        code, _ = None, err.write(traceback.format_exc())
    finally:
        _shared.stdout, _shared.stderr = saved
    return {"command": "gibench " + shlex.join(argv), "returncode": code, "seconds": now() - start,
            "timed_out": False, "stdout_tail": _tail(out.getvalue()), "stderr_tail": _tail(err.getvalue())}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def store_summary(runs: Path) -> dict[str, Any]:
    """Jobs and evaluations as the store holds them: counts, every failure with its reason (and a training's
    traceback), and the reasons of skipped evaluations."""
    jobs = sorted((runs / "jobs").glob("*")) if (runs / "jobs").is_dir() else []
    summary: dict[str, Any] = {"jobs_stored": 0, "trained": 0, "training_failed": 0, "evaluations": Counter(),
                               "failures": [], "skipped": Counter()}
    for job in jobs:
        record, status = _read(job / "job.json"), _read(job / "status.json")
        if record is None:
            continue
        labels = record.get("labels", {})
        label = f"{labels.get('dataset')} / {labels.get('backbone')} / {labels.get('variant')}"
        summary["jobs_stored"] += 1
        if status and status.get("state") == "trained":
            summary["trained"] += 1
        elif status and status.get("state") == "failed":
            summary["training_failed"] += 1
            summary["failures"].append({"job": label, "what": "training", "reason": status.get("reason"),
                                        "traceback": status.get("traceback")})
        for path in sorted((job / "results").glob("*.json")):
            result = _read(path) or {}
            state = result.get("status", "unreadable")
            summary["evaluations"][state] += 1
            if state == "failed":
                summary["failures"].append({"job": label, "what": f"evaluator {result.get('evaluator')}",
                                            "reason": result.get("reason"), "traceback": None})
            elif state == "skipped":
                summary["skipped"][f"{result.get('evaluator')}: {result.get('reason')}"] += 1
    summary["evaluations"] = dict(summary["evaluations"])
    summary["skipped"] = [{"reason": k, "count": v} for k, v in summary["skipped"].most_common()]
    return summary


def part_mini_suite(ctx: Context, deadline: float) -> dict[str, Any]:
    from gibench.suites.jobs import expand

    raw = mini_suite(ctx.sizes)
    path = ctx.out / "mini_suite.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, width=120))
    planned = len(expand(parse_suite(raw)))
    runs, submissions = ctx.work / "runs", ctx.work / "submissions"
    ctx.shared["mini_suite"] = {"raw": raw, "runs": runs}
    reserve = max(3.0, 0.1 * (deadline - now()))  # for report, submit and validate
    run = suite_wall_time.run_cli(["run", "--suite", str(path), "--runs-dir", str(runs), "--device", str(ctx.device)],
                                  timeout=max(1.0, deadline - reserve - now()))
    steps = [{"command": "gibench " + shlex.join(run.argv), "returncode": run.returncode, "seconds": run.seconds,
              "timed_out": run.timed_out, "stdout_tail": _tail(run.stdout), "stderr_tail": _tail(run.stderr)}]
    steps.append(cli_in_process(["report", "--runs-dir", str(runs)]))
    steps.append(cli_in_process(["submit", "--runs-dir", str(runs), "--name", "GPU check", "--author", "gpu_check",
                                 "--out", str(submissions)]))
    made = sorted(p for p in submissions.glob("*") if p.is_dir()) if submissions.is_dir() else []
    if made:
        steps.append(cli_in_process(["validate", str(made[-1])]))
    else:
        steps.append({"command": "gibench validate", "returncode": None, "seconds": 0.0, "timed_out": False,
                      "stdout_tail": "", "stderr_tail": "no submission folder was written"})
    store = store_summary(runs)
    result = {"suite_file": path.name, "device": str(ctx.device), "jobs_planned": planned, "steps": steps,
              "store": store}
    problems = [f"`{s['command']}` exited with {s['returncode']}:\n{s['stderr_tail']}" for s in steps
                if s["returncode"] not in (0,) and not s["timed_out"]]
    problems += [f"{f['job']}: {f['what']} failed: {f['reason']}\n{f['traceback'] or ''}".rstrip()
                 for f in store["failures"]]
    if problems:
        raise PartFailed(f"{len(problems)} problem(s) in the mini-suite", "\n\n".join(problems), result)
    if run.timed_out:
        result["note"] = (f"the budget ran out during `gibench run`: {store['trained']} of {planned} jobs trained; "
                          "report, submit and validate ran on those")
        result["partial"] = True
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Part 2: fit against the bare loop


def part_fit_vs_bare(ctx: Context, deadline: float) -> dict[str, Any]:
    from gibench.regularizers.erm import ERM
    from gibench.training.train import fit

    s, device = ctx.sizes, ctx.device
    configs = [(backbone, channels_last) for channels_last in (False, True) for backbone in s.fit_backbones]
    rows, errors, notes = [], [], []
    for i, (backbone, channels_last) in enumerate(configs):
        if now() > deadline:
            notes.append(f"{backbone} channels_last={channels_last}: not measured (budget spent)")
            continue
        config_deadline = now() + (deadline - now()) / (len(configs) - i)  # an equal share of what is left
        try:
            row = bare_loop.compare(backbone, device, batch_size=s.fit_batch, steps=s.fit_steps, warmup=s.fit_warmup,
                                    repeats=s.fit_repeats, channels_last=channels_last, deadline=config_deadline,
                                    log=None)
            row["target_met"] = row["ratio"] >= FIT_TARGET if device.type == "cuda" else None
            rows.append(row)
        except Exception:
            errors.append(f"{backbone} channels_last={channels_last}:\n{traceback.format_exc()}")
            rows.append({"backbone": backbone, "channels_last": channels_last, "error": errors[-1]})
    syncs = {}
    if device.type == "cuda":
        for backbone in s.fit_backbones:
            try:
                steps = 20
                bundle = bare_loop.make_data(backbone, steps * s.fit_batch)
                count = count_host_syncs(lambda b=bundle, bb=backbone: fit(  # noqa: B023
                    b, bare_loop.backbone_spec(bb), ERM(), bare_loop.make_train_config(s.fit_batch), seed=0,
                    device=device), device)
                syncs[backbone] = {"steps": steps, "host_syncs": count}
            except Exception:
                errors.append(f"host syncs of fit on {backbone}:\n{traceback.format_exc()}")
    result = {"target": f"fit >= {FIT_TARGET} x bare loop (GPU)", "rows": rows, "fit_host_syncs": syncs,
              "note": "; ".join(notes) or None}
    if errors:
        raise PartFailed(f"{len(errors)} measurement(s) failed", "\n\n".join(errors), result)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Part 3: regularizer step cost against the pass-count floor


class PassRunner:
    """A bare pass (see the module docstring) on its own copy of the model, under a regularizer's precision policy;
    the ``name`` / ``step()`` interface of :class:`regularizer_step_cost.Runner`, so both time in the same rounds."""

    def __init__(self, kind: str, policy: str, policy_regularizer: Any, model: nn.Module, x: Tensor,
                 y: Tensor) -> None:
        self.name, self.kind, self.policy = f"{kind} [{policy}]", kind, policy
        self.reg = policy_regularizer
        self.model = copy.deepcopy(model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.x, self.y = x, y
        self.v = torch.randint_like(x, 0, 2).mul_(2).sub_(1)  # a fixed Rademacher probe
        if kind == "optimizer":  # gradients to update with
            for p in self.model.parameters():
                p.grad = torch.zeros_like(p)

    def step(self) -> None:
        model, x, y = self.model, self.x, self.y
        whole_step, forward = step_contexts(self.reg, regularizer_step_cost.TRAIN, x.device)
        if self.kind == "optimizer":
            with whole_step:
                self.opt.step()
            return
        with whole_step:
            if self.kind == "attack":
                model.eval()
                delta = torch.zeros_like(x, requires_grad=True)
                with forward, torch.enable_grad():
                    loss = F.cross_entropy(model(x + delta), y, reduction="sum")
                    torch.autograd.grad(loss, delta)
                model.train()
                return
            self.opt.zero_grad(set_to_none=True)
            if self.kind == "forward":
                with forward:
                    F.cross_entropy(model(x), y)  # the graph is built and dropped
                return
            if self.kind == "erm":
                with forward:
                    loss = F.cross_entropy(model(x), y)
            else:
                leaf = x.detach().requires_grad_(True)
                with forward, higher_order_batch_norm(self.kind == "hvp"):
                    logits = model(leaf)
                    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), leaf, create_graph=True)
                    penalty = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
                    if self.kind == "hvp":
                        (hv,) = torch.autograd.grad((grad * self.v).sum(), leaf, create_graph=True)
                        penalty = penalty + (hv * self.v).flatten(1).sum(1).mean()
                    loss = F.cross_entropy(logits, y) + 1e-3 * penalty
            loss.backward()
        self.opt.step()


def passes_of(name: str) -> tuple[int, int, int, int, int] | None:
    """:data:`PASSES` of a regularizer at its defaults, the attack steps read from its config (``steps``)."""
    if name not in PASSES:
        return None
    n_f, n_b, n_db, n_t, n_a = PASSES[name]
    if n_a:
        config = registry.regularizers.create(name).config
        n_a = int(getattr(config, "steps", getattr(config, "sgld_steps", n_a)))
    return n_f, n_b, n_db, n_t, n_a


def pass_floor(name: str, policy: str, medians: dict[str, float]) -> tuple[float | None, dict[str, float]]:
    """(the floor in seconds, or None for a regularizer without a pass count or without the bare passes it needs;
    the pass times, NaN where a bare pass was not timed)."""
    m = {kind: medians.get(f"{kind} [{policy}]", math.nan) for kind in PASS_KINDS}
    times = {"O": m["optimizer"], "F": m["forward"], "B": m["erm"] - m["forward"] - m["optimizer"],
             "DB": m["gradnorm"] - m["erm"], "T": m["hvp"] - m["gradnorm"], "A": m["attack"]}
    passes = passes_of(name)
    if passes is None:
        return None, times
    floor = times["O"] + sum(n * times[k] for n, k in zip(passes, ("F", "B", "DB", "T", "A")) if n)
    return (floor if math.isfinite(floor) else None), times


def needed_passes(names: list[str]) -> list[str]:
    """The bare passes the floors of ``names`` need."""
    kinds = ["optimizer", "forward", "erm"]
    counts = [passes_of(n) for n in names if passes_of(n)]
    if any(c[2] or c[3] for c in counts):
        kinds.append("gradnorm")
    if any(c[3] for c in counts):
        kinds.append("hvp")
    if any(c[4] for c in counts):
        kinds.append("attack")
    return kinds


class Guarded:
    """A runner whose failure is recorded instead of raised: after it, its steps do nothing (and its times are
    dropped)."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.name, self.error = runner, runner.name, None

    def step(self) -> None:
        if self.error is None:
            try:
                self.runner.step()
            except Exception:
                self.error = traceback.format_exc()


def part_step_cost(ctx: Context, deadline: float) -> dict[str, Any]:
    s, device = ctx.sizes, ctx.device
    names = builtin_names(registry.regularizers)
    names = ["erm"] + [n for n in names if n != "erm"]
    runners = regularizer_step_cost.setup(s.step_backbone, names, device, s.step_batch)
    base = runners[0]  # its model has taken no step yet: the same initial weights as every runner
    policies = {n: "amp" if device.type == "cuda" and registry.regularizers.get(n).amp_safe else "fp32"
                for n in names}
    policy_regs = {"amp": registry.regularizers.create("erm"),
                   "fp32": next((registry.regularizers.create(n) for n in names
                                 if not registry.regularizers.get(n).amp_safe), registry.regularizers.create("erm"))}
    passes = [PassRunner(kind, policy, policy_regs[policy], base.model, base.x, base.y)
              for policy in sorted(set(policies.values()))
              for kind in needed_passes([n for n in names if policies[n] == policy])]
    guarded = [Guarded(r) for r in runners + passes]
    start = now()
    time_deadline = start + 0.75 * (deadline - start)
    notes, errors = [], []
    with cudnn_benchmark(device):
        times = regularizer_step_cost.time_steps(guarded, device, s.step_warmup, s.step_steps, deadline=time_deadline)
        for g in guarded:
            if g.error:
                errors.append(f"{g.name}:\n{g.error}")
                times.pop(g.name)
        ok = [g.runner for g in guarded[:len(runners)] if g.error is None]
        if not ok or ok[0].name != "erm":
            raise PartFailed("erm's step failed", "\n\n".join(errors), {})
        timed = len(times["erm"])
        if timed < s.step_steps:
            notes.append(f"{timed} of {s.step_steps} timed rounds (budget)")
        try:
            memory = regularizer_step_cost.peak_memory(ok, device, s.memory_repeats)
        except Exception:
            errors.append(f"peak memory:\n{traceback.format_exc()}")
            memory = {r.name: float("nan") for r in ok}
        syncs = {}
        for runner in ok:
            if device.type != "cuda":
                break
            if now() > deadline:
                notes.append("host syncs: not counted for every regularizer (budget)")
                break
            try:
                syncs[runner.name] = count_host_syncs(runner.step, device)
            except Exception:
                errors.append(f"host syncs of {runner.name}:\n{traceback.format_exc()}")
    rows = regularizer_step_cost.make_rows(s.step_backbone, [r.name for r in ok], times, memory)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for row in rows:
        name = row["regularizer"]
        floor, _ = pass_floor(name, policies[name], medians)
        row.update(precision=policies[name], passes=passes_of(name), floor_ms=None if floor is None else 1e3 * floor,
                   step_over_floor=None if floor is None else medians[name] / floor,
                   host_syncs_per_step=syncs.get(name))
        row["target_met"] = (row["step_over_floor"] <= FLOOR_TARGET
                             if device.type == "cuda" and row["step_over_floor"] is not None else None)
    pass_times = {policy: {k: 1e3 * v for k, v in pass_floor("erm", policy, medians)[1].items()}
                  for policy in sorted(set(policies.values()))}
    if device.type == "cpu":
        notes.append("CPU peak memory is read in this process, where glibc keeps freed blocks, so it reads near 0 "
                     "(benchmarks/regularizer_step_cost.py measures it in a child process)")
    result = {"backbone": s.step_backbone, "batch_size": s.step_batch, "timed_rounds": timed,
              "target": f"step <= {FLOOR_TARGET} x pass-count floor (GPU)", "pass_times_ms": pass_times,
              "bare_pass_medians_ms": {n: 1e3 * medians[n] for n in medians if "[" in n}, "rows": rows,
              "failed": [g.name for g in guarded if g.error], "note": "; ".join(notes) or None}
    if errors:
        raise PartFailed(f"{len(errors)} measurement(s) failed", "\n\n".join(errors), result)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Part 4: Taylor h under TF32, float32 and bfloat16


def part_taylor_precision(ctx: Context, deadline: float) -> dict[str, Any]:
    result = tf32_precision.h_errors(ctx.device, ctx.sizes.taylor_batch)
    errors = {row["setting"]: row["mean_abs_error"] for row in result["rows"]}
    tf32, fp32 = errors.get("float32, TF32 on"), errors.get("float32, TF32 off")
    result["tf32_over_float32"] = tf32 / fp32 if tf32 is not None and fp32 else None
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Part 5: calibrating --estimate


def shrunk_suite(name: str, batch: int):
    """A shipped suite with every training batch set to ``batch`` (the CPU's toy calibration)."""
    raw = yaml.safe_load(resolve_suite_path(name).read_text())
    raw["train"] = {**raw.get("train", {}), "batch_size": batch}
    for options in (raw.get("train_per_dataset") or {}).values():
        if "batch_size" in options:
            options["batch_size"] = batch
    return parse_suite(raw)


def _units(rows: list[Any]) -> list[Any]:
    """The distinct work units of an estimate's rows, training steps first, then passes, then plugin work."""
    from gibench.api.cost import ModelPass, TrainStep

    seen: dict[Any, None] = {}
    for row in rows:
        for unit in [*row.train_work, *row.eval_work]:
            seen.setdefault(unit, None)
    order = {TrainStep: 0, ModelPass: 1}
    return sorted(seen, key=lambda unit: order.get(type(unit), 2))


def calibrate_suite(ctx: Context, label: str, suite: Any, deadline: float, eval_batch: int) -> dict[str, Any]:
    from gibench.running.calibration import Calibration, CalibrationCache, describe
    from gibench.running.estimate import estimate_suite, plan_suite

    s = ctx.sizes
    with tempfile.TemporaryDirectory() as empty:
        rows, shared, not_estimated = plan_suite(suite, Path(empty), eval_batch_size=eval_batch)
    units = _units([*rows, *shared])
    calibration = Calibration(ctx.device, CalibrationCache(ctx.cache), s.estimate_warmup, s.estimate_timed)
    seconds: dict[Any, float] = {}
    failed, note = [], None
    started = now()
    for i, unit in enumerate(units):
        if s.max_units is not None and i >= s.max_units:
            note = f"toy run: {s.max_units} of {len(units)} units calibrated"
            break
        if now() > deadline:
            note = f"budget spent after {len(seconds) + len(failed)} of {len(units)} units"
            break
        try:
            seconds[unit] = calibration.seconds(unit)
        except Exception as exc:
            failed.append({"unit": describe(unit), "error": f"{type(exc).__name__}: {exc}"})
    out: dict[str, Any] = {
        "suite": label, "eval_batch_size": eval_batch, "jobs": sum(r.jobs for r in rows), "units": len(units),
        "units_priced": len(seconds),
        "units_timed_now": calibration.measured, "units_from_cache": calibration.reused, "units_failed": failed,
        "calibration_seconds": now() - started, "not_estimated": not_estimated, "note": note,
        "complete": len(seconds) == len(units),
    }

    def priced(work: dict) -> float:
        return sum(count * seconds[unit] for unit, count in work.items() if unit in seconds)

    train = sum(priced(r.train_work) for r in rows)
    evaluation = sum(priced(r.eval_work) for r in rows) + sum(priced(r.train_work) + priced(r.eval_work)
                                                              for r in shared)
    if out["complete"]:
        with tempfile.TemporaryDirectory() as empty:
            est = estimate_suite(suite, Path(empty), device=str(ctx.device), eval_batch_size=eval_batch,
                                 cache_path=ctx.cache, warmup=s.estimate_warmup, timed=s.estimate_timed)
        train, evaluation = est.train_seconds, est.seconds - est.train_seconds
        out["rows"] = [{"dataset": r.dataset, "backbone": r.backbone, "regularizer": r.regularizer,
                        "train_seconds": r.train_seconds, "eval_seconds": r.eval_seconds}
                       for r in [*est.rows, *est.auxiliary]]
    out.update(train_hours=train / 3600, eval_hours=evaluation / 3600, hours=(train + evaluation) / 3600)
    out["hours_are"] = "the estimate" if out["complete"] else "a lower bound (the priced units only)"
    return out


def _label(label: str) -> str:
    """A plugin label with its options sorted: ``name(b=1, a=2)`` → ``name(a=2, b=1)`` (a stored job's labels sort
    them, a suite's spec keeps the file's order)."""
    name, paren, rest = label.partition("(")
    return name + (f"({', '.join(sorted(rest[:-1].split(', ')))})" if paren else "")


def compare_with_run(estimate: dict[str, Any], runs: Path) -> dict[str, Any] | None:
    """The mini-suite's estimate beside the training and evaluation seconds its run stored (matching rows)."""
    if "rows" not in estimate or not (runs / "jobs").is_dir():
        return None
    got = {tuple(_label(k) for k in key): value for key, value in estimate_accuracy.measured(runs).items()}
    est_train = est_eval = run_train = run_eval = 0.0
    matched = 0
    for row in estimate["rows"]:
        key = (_label(row["dataset"]), _label(row["backbone"]), _label(row["regularizer"]))
        if key in got:
            matched += 1
            est_train, est_eval = est_train + row["train_seconds"], est_eval + row["eval_seconds"]
            run_train, run_eval = run_train + got[key][0], run_eval + got[key][1]
    return {"rows_matched": matched, "rows_stored": len(got), "estimated_train_s": est_train,
            "measured_train_s": run_train, "estimated_eval_s": est_eval, "measured_eval_s": run_eval}


def part_estimate(ctx: Context, deadline: float) -> dict[str, Any]:
    s = ctx.sizes
    plan: list[tuple[str, Callable[[], Any]]] = []
    mini = ctx.shared.get("mini_suite")
    if mini is not None:
        plan.append(("mini_suite", lambda: parse_suite(mini["raw"])))
    for name in s.estimate_suites:
        plan.append((name, (lambda n=name: shrunk_suite(n, s.shrink_train_batch)) if s.shrink_train_batch
                     else (lambda n=name: load_suite(n))))
    suites, errors, notes = [], [], []
    start = now()
    for i, (label, make) in enumerate(plan):
        if now() > deadline:
            notes.append(f"{label}: not calibrated (budget spent)")
            continue
        suite_deadline = now() + (deadline - now()) / (len(plan) - i) if label == "mini_suite" else deadline
        try:
            # the mini-suite ran at gibench run's default evaluation batch; the shipped suites are priced at it too,
            # except in the CPU's shrunk toy calibration
            eval_batch = RUN_EVAL_BATCH if label == "mini_suite" else s.eval_batch
            entry = calibrate_suite(ctx, label, make(), suite_deadline, eval_batch)
            if label == "mini_suite":
                entry["against_the_run"] = compare_with_run(entry, mini["runs"])
            suites.append(entry)
        except Exception:
            errors.append(f"{label}:\n{traceback.format_exc()}")
    result = {"cache": ctx.cache.name, "warmup": s.estimate_warmup, "timed": s.estimate_timed,
              "suites": suites, "seconds": now() - start,
              "note": "; ".join(notes) or None}
    if s.shrink_train_batch:
        result["shrunk"] = (f"the shipped suites at training batch {s.shrink_train_batch}, evaluation batch "
                            f"{s.eval_batch} (code path only)")
    failed_units = [f"{e['suite']}: {u['unit']}: {u['error']}" for e in suites for u in e["units_failed"]]
    if errors or failed_units:
        raise PartFailed("calibration failed", "\n\n".join(errors + failed_units), result)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Output


def _clean(value: Any) -> Any:
    """JSON without NaN or infinities (they become null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = ["# gibench GPU check", "",
             f"- device: {env['device_name']} (`{env['device']}`)" + (
                 f", compute capability {env['capability']}, {env['memory_gib']} GiB" if env.get("capability") else ""),
             f"- driver {_f(env['driver'])}, CUDA {_f(env['cuda'])}, cuDNN {_f(env['cudnn'])}, torch {env['torch']}, "
             f"gibench {env['gibench']}, Python {env['python']}",
             f"- CPU: {env['cpu']}, {env['cpu_count']} cores, {env['torch_threads']} torch threads",
             f"- command: `{report['command']}`",
             f"- budget {report['budget_s']:.0f} s, used {report['seconds']:.0f} s; started {report['started']}", "",
             "| part | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for part in report["parts"]:
        note = part.get("note") or (part.get("result") or {}).get("note") or (
            (part.get("error") or "").splitlines()[0] if part.get("error") else "")
        lines.append(f"| {part['name']} | {part['status']} | {part['seconds']:.1f} | {note} |")
    for part in report["parts"]:
        result = part.get("result")
        lines += ["", f"## {part['name']}", ""]
        if part["status"] == "skipped":
            lines.append(f"Skipped: {part['note']}")
        if result:
            lines += RENDER[part["name"]](result)
            if result.get("note"):
                lines += ["", f"Note: {result['note']}"]
        if part["status"] == "failed":
            lines += ["", "Failure:", "", "```", part.get("traceback") or "", "```"]
    return "\n".join(lines) + "\n"


def _md_mini_suite(r: dict[str, Any]) -> list[str]:
    store = r["store"]
    lines = ["| command | exit | seconds |", "| --- | ---: | ---: |"]
    for step in r["steps"]:
        exit_ = "timed out" if step["timed_out"] else _f(step["returncode"])
        lines.append(f"| `{step['command']}` | {exit_} | {step['seconds']:.1f} |")
    lines += ["", f"Jobs: {r['jobs_planned']} planned, {store['trained']} trained, {store['training_failed']} failed. "
                  f"Evaluations: " + ", ".join(f"{v} {k}" for k, v in sorted(store["evaluations"].items())) + "."]
    if store["failures"]:
        lines += ["", "| job | what | reason |", "| --- | --- | --- |"]
        lines += [f"| {f['job']} | {f['what']} | {(f['reason'] or '').splitlines()[0][:200]} |"
                  for f in store["failures"]]
    if store["skipped"]:
        lines += ["", "Skipped evaluations (expected where a dataset lacks a capability):", ""]
        lines += [f"- {s['count']} × {s['reason'][:200]}" for s in store["skipped"]]
    return lines


def _md_fit(r: dict[str, Any]) -> list[str]:
    lines = [f"Target: {r['target']}.", "",
             "| backbone | channels_last | batch | timed steps × repeats | fit (images/s) | bare loop (images/s) "
             "| fit / bare | target met |", "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['backbone']} | {row['channels_last']} | | | failed | | | |")
            continue
        lines.append(f"| {row['backbone']} | {row['channels_last']} | {row['batch_size']} | "
                     f"{row['steps'] - row['warmup']} × {row['repeats']} | {row['fit_median']:.1f} | "
                     f"{row['bare_median']:.1f} | {row['ratio']:.3f} | {_f(row['target_met'])} |")
    for backbone, entry in r["fit_host_syncs"].items():
        lines.append(f"\nHost synchronizations in a {entry['steps']}-step `fit` on {backbone}: {entry['host_syncs']}.")
    return lines


def _md_step_cost(r: dict[str, Any]) -> list[str]:
    lines = [f"{r['backbone']}, batch {r['batch_size']}, {r['timed_rounds']} timed interleaved rounds. Target: "
             f"{r['target']}.", "", "| regularizer | precision | median step (ms) | × erm | peak step memory (MiB) | "
             "passes (F, B, DB, T, A) | floor (ms) | step / floor | target met | host syncs per step |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for row in r["rows"]:
        passes = ", ".join(map(str, row["passes"])) if row["passes"] else "—"
        lines.append(f"| {row['regularizer']} | {row['precision']} | {row['median_step_ms']:.1f} | "
                     f"{row['time_vs_erm']:.2f} | {_f(row['peak_step_mb'])} | {passes} | {_f(row['floor_ms'])} | "
                     f"{_f(row['step_over_floor'])} | {_f(row['target_met'])} | {_f(row['host_syncs_per_step'])} |")
    lines += ["", "Pass times (ms): O optimizer update, F forward, B backward, DB double backward, T third-order "
                  "part, A attack step.", "", "| precision | O | F | B | DB | T | A |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for policy, t in r["pass_times_ms"].items():
        lines.append(f"| {policy} | " + " | ".join(_f(t[k]) for k in ("O", "F", "B", "DB", "T", "A")) + " |")
    return lines


def _md_taylor(r: dict[str, Any]) -> list[str]:
    lines = [f"cifar_resnet18 (softplus), batch {r['batch_size']}, σ {r['sigma']}, mean |f_y| {r['logit_scale']}; "
             f"h₆₄ mean {r['reference_mean']:.4g}, standard deviation {r['reference_std']:.4g}.", "",
             "| setting | device | mean abs error of h | max abs error | mean error / std(h) |",
             "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {row['setting']} | {row['device']} | {row['mean_abs_error']:.4g} | {row['max_abs_error']:.4g} | "
              f"{row['mean_error_over_std']:.3g} |" for row in r["rows"]]
    if r.get("tf32_over_float32") is not None:
        lines.append(f"\nTF32's error of h is {r['tf32_over_float32']:.3g} × float32's (TF32 off).")
    return lines


def _md_estimate(r: dict[str, Any]) -> list[str]:
    lines = [f"Calibration: {r['warmup']} warm-up + {r['timed']} timed steps per unit; cache `{r['cache']}`."
             + (f" Shrunk: {r['shrunk']}." if r.get("shrunk") else ""), "",
             "| suite | evaluation batch | jobs | units priced / all | timed now | from cache | failed "
             "| calibration (s) | training (h) | evaluation (h) | total (h) | total is |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for e in r["suites"]:
        lines.append(f"| {e['suite']} | {e['eval_batch_size']} | {e['jobs']} | {e['units_priced']} / {e['units']} | "
                     f"{e['units_timed_now']} | {e['units_from_cache']} | {len(e['units_failed'])} | "
                     f"{e['calibration_seconds']:.0f} | {e['train_hours']:.3g} | {e['eval_hours']:.3g} | "
                     f"{e['hours']:.3g} | {e['hours_are']} |")
    for e in r["suites"]:
        cmp_ = e.get("against_the_run")
        if cmp_:
            lines.append(f"\nThe mini-suite's estimate against its run ({cmp_['rows_matched']} of "
                         f"{cmp_['rows_stored']} stored rows): training {cmp_['estimated_train_s']:.1f} s estimated, "
                         f"{cmp_['measured_train_s']:.1f} s measured; evaluation {cmp_['estimated_eval_s']:.1f} s "
                         f"estimated, {cmp_['measured_eval_s']:.1f} s measured.")
    return lines


RENDER = {"mini_suite": _md_mini_suite, "fit_vs_bare": _md_fit, "step_cost": _md_step_cost,
          "taylor_precision": _md_taylor, "estimate": _md_estimate}
RUN = {"mini_suite": part_mini_suite, "fit_vs_bare": part_fit_vs_bare, "step_cost": part_step_cost,
       "taylor_precision": part_taylor_precision, "estimate": part_estimate}


def write(report: dict[str, Any], out: Path) -> None:
    report["seconds"] = now() - START
    (out / "gpu_check.json").write_text(json.dumps(_clean(report), indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))


def run_part(name: str, ctx: Context, deadline: float) -> dict[str, Any]:
    """One part, wrapped: ok with its result, failed with its traceback (and what it measured), or skipped."""
    started = now()
    entry: dict[str, Any] = {"name": name, "status": "ok", "slice_s": max(0.0, deadline - started)}
    try:
        if deadline - started < ctx.sizes.min_seconds[name]:
            raise Skipped(f"budget spent: {max(0.0, deadline - started):.0f} s left for this part, it needs at least "
                          f"{ctx.sizes.min_seconds[name]:.0f} s")
        entry["result"] = RUN[name](ctx, deadline)
        sync(ctx.device)  # an asynchronous CUDA error belongs to this part
    except Skipped as exc:
        entry.update(status="skipped", note=str(exc))
    except PartFailed as exc:
        entry.update(status="failed", error=str(exc), traceback=exc.details, result=exc.result)
    except Exception as exc:
        entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    finally:
        if ctx.device.type == "cuda":
            try:
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - a poisoned context: the next part records its own error
                pass
    entry["seconds"] = now() - started
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the CPU runs toy sizes)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for gpu_check.json and .md")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--calibration-cache", type=Path, default=None,
                        help="calibration cache of the estimate part (default: OUT/calibration.json)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (use --device cpu for the toy run)")
    if device.type not in ("cuda", "cpu"):
        parser.error("--device must be cuda, cuda:N or cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/gpu_check.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    sizes = GPU if device.type == "cuda" else CPU
    deadline = START + args.budget
    report: dict[str, Any] = {
        "command": command.strip(), "environment": environment(device), "budget_s": args.budget,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "seconds": 0.0,
        "sizes": dataclasses.asdict(sizes), "targets": {"fit_over_bare_min": FIT_TARGET,
                                                        "step_over_floor_max": FLOOR_TARGET}, "parts": []}
    print(f"gpu_check on {report['environment']['device_name']} ({device}), budget {args.budget:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        ctx = Context(device, sizes, Path(work), args.out, args.calibration_cache or args.out / "calibration.json")
        for i, name in enumerate(parts):
            left = max(0.0, deadline - now())
            share = sizes.weights[name] / sum(sizes.weights[p] for p in parts[i:])
            entry = run_part(name, ctx, now() + left * share)
            report["parts"].append(entry)
            write(report, args.out)
            print(f"{name}: {entry['status']} in {entry['seconds']:.1f} s"
                  + (f" ({entry.get('note') or entry.get('error')})" if entry["status"] != "ok" else ""), flush=True)
    write(report, args.out)
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} in {now() - START:.0f} s")
    return 1 if any(p["status"] == "failed" for p in report["parts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
