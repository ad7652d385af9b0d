"""Error of the Taylor Hessian-trace estimate h under TF32 (and bfloat16) against float64 on the CPU.

h = (2/σ²)·(f_y(x + v) − f_y(x)), σ = 0.01 (score_matching's default; ``gibench/api/hessian.py`` ``taylor_trace``,
called here as the regularizer calls it). The difference of two logits is multiplied by 2·10⁴, so rounding in the
forwards is amplified the same way: TF32 keeps 10 mantissa bits (unit roundoff 4.9e-4), which for logits of order 10
predicts errors of order 10² in h (research note next-capabilities §5.4).

Setup: the softplus CIFAR ResNet-18 (``cifar_resnet18``, BatchNorm with batch statistics as in training) with seed-0
weights whose linear head is rescaled so that the label logits of the batch have mean |f_y| = ``--logit-scale`` (10:
trained networks' order of magnitude); a random batch of ``--batch-size`` 3×32×32 images in [0, 1]; one noise draw v
per image, made once in float64 on the CPU. Every setting runs ``taylor_trace`` on copies of the same weights and
batch with ``torch.randn_like`` replaced by that fixed draw (cast to the setting's device and dtype), so the settings
differ only in arithmetic:

* ``float64 cpu``: the reference;
* ``float32, TF32 on`` (cuDNN and matmul TF32 allowed, PyTorch's default for cuDNN convolutions) on ``--device``;
* ``float32, TF32 off`` (gibench's :func:`~gibench.api.passes.full_precision`, what training uses);
* ``bfloat16 autocast`` without the guard (what ``train.amp`` would do if the guard were missing).

It prints, per setting, the mean and maximum |h − h₆₄| and their ratio to the spread (standard deviation) of h₆₄ over
the batch. On the CPU TF32 does not exist: the script says so and reports the float32 and bfloat16 CPU errors.

``--autocast-table`` prints instead the evidence behind ``Regularizer.amp_safe``: for every registered regularizer,
the relative error of the loss and of the parameter gradient (‖g_bf16 − g_32‖ / ‖g_32‖) under bfloat16 autocast
against true float32 (TF32 off), on the protocol of tests/test_precision.py (softplus ``gibench_cnn`` of width 8 after
60 Adam steps on the bundled digits, logits of order 10, a batch of 32, the same noise draws in both runs), on
``--device``.

Run: ``python benchmarks/tf32_precision.py --device cuda [--batch-size 64] [--logit-scale 10] [--autocast-table]``.
"""

from __future__ import annotations

import argparse
import copy
import platform
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from unittest import mock

import torch
from torch import Tensor, nn

from gibench.api.hessian import taylor_trace
from gibench.api.passes import full_precision, tf32_off
from gibench.api.saliency import label_logit
from gibench.training.models import Normalize, create_backbone

SIGMA = 0.01


def build(logit_scale: float, x: Tensor, y: Tensor) -> nn.Module:
    """Seed-0 softplus cifar_resnet18 (in float64) whose head is rescaled to the requested label-logit magnitude."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize((0.5,) * 3, (0.25,) * 3),
                          create_backbone("cifar_resnet18", num_classes=10, in_chans=3, act="softplus"))
    model = model.double().train()
    with torch.no_grad():
        f = label_logit(model(x), y)
        factor = logit_scale / f.abs().mean()
        model[1].fc.weight.mul_(factor)
        model[1].fc.bias.mul_(factor)
    return model


@contextmanager
def fixed_noise(v: Tensor):
    """``torch.randn_like(t)`` returns the fixed standard-normal draw ``v`` on t's device and dtype."""
    with mock.patch("torch.randn_like", lambda t, **_: v.to(device=t.device, dtype=t.dtype)):
        yield


@contextmanager
def tf32(allowed: bool):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def h_estimate(model: nn.Module, x: Tensor, y: Tensor, v: Tensor, setting: str, device: torch.device) -> Tensor:
    """h per image (float64 on the CPU) for one arithmetic setting."""
    dtype = torch.float64 if setting == "float64 cpu" else torch.float32
    run_device = torch.device("cpu") if setting == "float64 cpu" else device
    model = copy.deepcopy(model).to(run_device, dtype)
    x, y = x.to(run_device, dtype), y.to(run_device)
    with torch.no_grad(), fixed_noise(v), _context(setting, run_device, x):
        h = taylor_trace(model, x, y, label_logit(model(x), y), SIGMA, 1, "train")
    return h.double().cpu()


def _context(setting: str, device: torch.device, x: Tensor):
    if setting == "float32, TF32 on":
        return tf32(True)
    if setting == "bfloat16 autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return full_precision(x)  # float64 reference and "float32, TF32 off"


def autocast_table(device: torch.device) -> None:
    """Loss and gradient errors of bfloat16 autocast against float32, per registered regularizer."""
    import torch.nn.functional as F

    from gibench import load_dataset
    from gibench.api import registry
    from gibench.data.tensors import make_bundle
    from gibench.training.models import build_model

    full = load_dataset("mnist_subset")
    bundle = make_bundle("digits", full.train.x[:512], full.train.y[:512], full.test.x[:8], full.test.y[:8], 10)
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus", "width": 8}, bundle).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        index = torch.randint(0, 512, (64,), generator=generator)
        loss = F.cross_entropy(model(bundle.train.x[index].to(device)), bundle.train.y[index].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = copy.deepcopy(model.state_dict())
    x, y = bundle.train.x[:32].to(device), bundle.train.y[:32].to(device)

    def run(name: str, bf16: bool) -> tuple[Tensor, Tensor]:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with (nullcontext() if bf16 else tf32_off()):  # the reference is true float32 (TF32 off) on a GPU too
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = registry.regularizers.create(name).training_loss(model, x, y)
            loss.total.backward()
        return loss.total.detach().double(), torch.cat([p.grad.flatten() for p in model.parameters()]).double()

    print("| regularizer | amp_safe | loss error | gradient error |")
    print("| --- | --- | ---: | ---: |")
    for name in registry.regularizers.names():
        (l32, g32), (l16, g16) = run(name, False), run(name, True)
        print(f"| {name} | {registry.regularizers.get(name).amp_safe} | {float((l16 - l32).abs() / l32.abs()):.1e} | "
              f"{float((g16 - g32).norm() / g32.norm()):.1e} |", flush=True)


def settings_for(device: torch.device) -> list[str]:
    """The arithmetic settings compared with the float64 reference on ``device`` (TF32 on CUDA only)."""
    return (["float32, TF32 on"] if device.type == "cuda" else []) + ["float32, TF32 off", "bfloat16 autocast"]


def h_errors(device: torch.device, batch_size: int = 64, logit_scale: float = 10.0,
             log: Callable[[dict], None] | None = None, header: Callable[[str], None] | None = None) -> dict:
    """|h − h₆₄| per setting of :func:`settings_for` (see the module docstring): the reference's mean and spread over
    the batch, one row per setting (mean and max absolute error, mean error over the spread), and a note on the CPU,
    where TF32 does not exist. ``header`` receives the lines printed before the rows, ``log`` each row."""
    say = header or (lambda line: None)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, 32, 32, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (batch_size,), generator=generator)
    v = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    model = build(logit_scale, x, y)
    reference = h_estimate(model, x, y, v, "float64 cpu", device)
    spread = float(reference.std())
    say(f"h (float64, cpu): mean {float(reference.mean()):.4g}, std over the batch {spread:.4g}")
    note = None
    if device.type != "cuda":
        note = ("TF32 does not apply on the CPU (it is a CUDA tensor-core format); run with --device cuda on an Ampere "
                "or newer GPU for the TF32 figures. CPU float32 and bfloat16 errors follow.")
        say(note)
    say("| setting | device | mean abs error of h | max abs error | mean error / std(h) |")
    say("| --- | --- | ---: | ---: | ---: |")
    rows = []
    for setting in settings_for(device):
        error = (h_estimate(model, x, y, v, setting, device) - reference).abs()
        rows.append({"setting": setting, "device": str(device), "mean_abs_error": float(error.mean()),
                     "max_abs_error": float(error.max()), "mean_error_over_std": float(error.mean()) / spread})
        if log:
            log(rows[-1])
    return {"batch_size": batch_size, "logit_scale": logit_scale, "sigma": SIGMA,
            "reference_mean": float(reference.mean()), "reference_std": spread, "rows": rows, "note": note}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--logit-scale", type=float, default=10.0)
    parser.add_argument("--autocast-table", action="store_true", help="bf16 errors per regularizer instead")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if args.autocast_table:
        print(f"torch {torch.__version__}, {name}, device {device}: bfloat16 autocast against float32")
        autocast_table(device)
        return
    print(f"torch {torch.__version__}, {name}, device {device}, cifar_resnet18 softplus, batch {args.batch_size}, "
          f"sigma {SIGMA}, mean |f_y| {args.logit_scale}")
    h_errors(device, args.batch_size, args.logit_scale, log=lambda row: print(
        f"| {row['setting']} | {row['device']} | {row['mean_abs_error']:.4g} | {row['max_abs_error']:.4g} | "
        f"{row['mean_error_over_std']:.3g} |", flush=True), header=print)



if __name__ == "__main__":
    main()
