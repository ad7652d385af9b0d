"""``gan_test``: draw class-conditional samples from the model, and let an independent judge classify them.

Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for Model Interpretability"
(ICLR 2021), §5 ("GAN-test"), reference code ``utils/sgld.py`` and ``evaluations.py --eval=compute-sample-quality``
of idiap/rethinking-saliency. A classifier's logits define an implicit class-conditional density
p(x | y) ∝ exp(f_y(x)); if its input-gradients are aligned with that density, gradient ascent on f_y produces images
that look like class y to anyone else. The GAN-test score is the accuracy of an independently trained classifier (the
judge) on those samples, against the class they were drawn for (higher is better).

**Sampler** (the reference's, which it names "SGLD" but runs without noise): x₀ ~ N(``init_mean`` = 0.5,
``init_std`` = 0.2²) per coordinate, clamped to [0, 1]; then ``steps`` = 500 times

    x ← clamp(x + η·(∇x f_y(x) − λ·(x − 0.5)) + ξ, 0, 1),   η = ``step_size`` = 0.1, λ = ``pull`` = 1e-2,

where f_y is the **raw label logit** (the reference's ``-nll_loss`` on unnormalized outputs), the gradient is taken
per sample (one backward of Σ_b f_{y_b}(x_b)), and the model is in eval mode (BatchNorm uses its running statistics,
as the reference calls ``model.eval()`` before the loop; gibench puts the model in eval mode for the ascent and
restores its mode afterwards). ξ = 0 by default (the reference). ``langevin_temperature`` = T > 0 turns the update
into unadjusted Langevin dynamics on the energy −f_y(x) + λ/2·‖x − 0.5‖² at temperature T: ξ ~ N(0, 2ηT·I), drawn
fresh every step (T = 1 samples exp(f_y(x) − λ/2‖x − 0.5‖²) as η → 0, up to the clamp). The sampler follows the
model's own logit gradient, not ``ctx.saliency``: it samples the model's implicit density, whatever explanation method
the evaluation is configured with.

**Targets**: ``num_samples`` (default 1000, the reference's ``--num-samples``) split evenly over the classes in the
fixed order 0, 1, …, K−1, 0, 1, … (sample i gets class i mod K), so every class has ⌊N/K⌋ or ⌈N/K⌉ samples (the
remainder goes to the lowest classes) and every batch holds every class. The reference takes the labels of the
unshuffled test loader until it has at least 1000 (1024 samples, unbalanced by the test set's class counts).

**Randomness**: the start images are drawn on the CPU, all at once, from ``torch.Generator().manual_seed(ctx.seed)``,
so they do not depend on the device or the batch size (``ctx.batch_size`` samples are ascended at a time). Langevin
noise comes from a generator on the evaluation device seeded with ``ctx.seed + 1``, drawn batch by batch, so with
noise on, the numbers depend on the batch size and the device too. The global random state is not touched.

**Judge**: a classifier trained by gibench (``gibench.store.auxiliary.classifier``, gibench's own training loop with
plain cross-entropy) on the dataset's train split, cached per dataset as an auxiliary model of kind ``gan_test_judge``.
The reference loads a separately trained VGG-11 while it samples from ResNet-18s (``--proxy-model-arch``); its
training recipe is the one of its models. gibench's default judge is ``gibench_mlp`` (two hidden layers of 256 ReLU
units; a different architecture family from the convolutional backbones of the shipped suites), Adam lr 1e-3, batch
64, 5 epochs, seed 12345 (no suite uses it). Measured on this machine (one CPU thread, torch 2.14,
``benchmarks/gan_test_cost.py``): clean test accuracy 0.936 on ``mnist_subset``, 0.902 on ``blockmnist``, 1.000 on
``gaussian_mixture``, trained in 1-4 s each (with seed 1234 instead: 0.953, 0.918, 1.000).
Everything about it is configurable (``judge_backbone``, ``judge_backbone_options``, ``judge_seed``,
``judge_epochs``, ``judge_lr``, ``judge_batch_size``). Its identity is the dataset's (``ctx.job.training_spec()
["dataset"]``: name, version and resolved options; outside a suite, the bundle's name plus a SHA-256 of its tensors),
the architecture, the training config, the seed and :data:`JUDGE_CODE_VERSION`. A judge built exactly like the
benchmarked model (the same module tree, compared through ``repr``) is refused with a GibenchError: the judge must be
independent of what it judges. Its clean test accuracy must reach ``judge_min_accuracy`` (default 0.85), or the
evaluation fails with a GibenchError naming the floor instead of reporting a number a weak judge makes meaningless.
The floor is 0.85 rather than 0.9 because the default judge reaches only 0.90-0.92 on the bundled BlockMNIST (4,000
training digits, each on top or bottom at random), where a 0.9 floor would pass or fail with the judge's seed; it is
far above chance (0.1 for ten classes) and still rejects a weak judge (one epoch of a linear model at lr 1e-4 reaches
0.54 on ``mnist_subset``; at lr 1e-3 it reaches 0.86, just over the floor, so the floor is a guard, not a guarantee).

**Metrics** (the judge scores the samples in eval mode):

* ``gan_test_accuracy`` (headline, higher is better): the judge's accuracy on the samples against their target
  classes, over all samples (the reference's score, as a fraction rather than a percentage). The reference's score
  loop divides ``correct`` by ``num_samples`` again for every remaining test batch once it has enough samples, so
  only its first printed score is right; gibench divides once.
* ``diversity`` (higher is better, ≈ 1 for data-like spread): so that a sampler that collapses to one image per class
  cannot score well. In the judge's penultimate-feature space φ (the input of its last ``nn.Linear``; ``pixels`` with
  ``diversity_space``), the spread of a set S of one class is s(S) = sqrt(Σ_{x∈S} ‖φ(x) − φ̄_S‖² / (|S| − 1)) (the
  root of the trace of the unbiased covariance). ``diversity`` = mean over classes k of s(samples of k) /
  s(real test images of k): 1 ≈ as varied as real data, 0 = every sample of a class identical. It can exceed 1 (noise
  is more varied than digits), which is why it is not folded into the headline. Classes whose real images have zero
  spread are left out of the mean.
* ``accuracy_times_diversity`` (higher is better): mean over classes k of acc_k · min(1, d_k), with acc_k the judge's
  accuracy on the samples of class k and d_k that class's spread ratio: recognisable *and* varied samples score high;
  collapsed or unrecognisable ones score low.
* ``model_accuracy_on_samples`` (diagnostic): the benchmarked model's own accuracy on its samples, i.e. how often the
  ascent reached its target class. Measured at 100 samples × 100 steps on ``mnist_subset``: 1.00 for a 3-epoch
  ``erm`` CNN, 0.39 for the ``fooled`` control (its logit-gradients no longer lead to its own classes), 0.10 for an
  untrained CNN (flat logits barely move the start images). Not a score of the explanations; a low value for a
  well-trained model means too few steps.

Artifacts: ``gan_test_samples.png`` (one row per class, labelled with the class name at the left: a real test image
of the class, then ``grid_samples`` samples, or as many as the smallest class has) and ``gan_test_per_class.json`` (the
per-class judge accuracy and spread ratio as curves).

Cost: ``steps`` forward + backward passes per sample (the floor; ``benchmarks/gan_test_cost.py`` measures the
evaluator against it), one forward of the model and one of the judge per sample afterwards, one judge forward per
real test image, and the judge's one-off training (shared by every job on the dataset).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gibench import AuxModel, PluginSpec, TrainConfig, require_quality, tensors_sha256
from gibench import auxiliary_classifier as classifier
from gibench.api.artifacts import batches, save_curves, save_grid
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import Curve, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import input_gradient
from gibench.core.config_types import (
    NoiseStd,
    NonEmptyStr,
    NonNegativeFloat,
    NonNegativeInt,
    NumSamples,
    PixelValue,
    PositiveFloat,
    PositiveInt,
    Probability,
    Seed,
    Weight,
    plugin_config,
)
from gibench.core.errors import GibenchError
from gibench.core.fsio import atomic_write_with

#: Bump when a change here changes the weights of the judge for the same identity.
JUDGE_CODE_VERSION = "1"
JUDGE_KIND = "gan_test_judge"


@plugin_config
class GANTestConfig:
    num_samples: NumSamples = 1000
    """Samples drawn, split evenly over the classes (sample i has class i mod K)."""
    steps: NonNegativeInt = 500
    """Gradient-ascent steps (reference: 500)."""
    step_size: PositiveFloat = 0.1
    """η (reference: 0.1)."""
    pull: Weight = 1e-2
    """λ, the pull toward 0.5 (the reference's wd = 1e-2)."""
    init_mean: PixelValue = 0.5
    """Start images ~ N(init_mean, init_std²), clamped to [0, 1]."""
    init_std: NoiseStd = 0.2
    """Std of the start images in pixel units."""
    langevin_temperature: NonNegativeFloat = 0.0
    """T: noise N(0, 2·step_size·T) per step; 0 = none (the reference)."""
    judge_backbone: NonEmptyStr = "gibench_mlp"
    """Backbone of the judge classifier."""
    judge_backbone_options: dict[str, Any] = field(default_factory=dict)
    """Options of judge_backbone."""
    judge_seed: Seed = 12345
    """Seed of the judge's training."""
    judge_epochs: PositiveInt = 5
    """Judge training epochs."""
    judge_lr: PositiveFloat = 1e-3
    """Judge learning rate."""
    judge_batch_size: PositiveInt = 64
    """Judge training batch size."""
    judge_min_accuracy: Probability = 0.85
    """The judge's clean test accuracy must reach this."""
    diversity_space: Literal["judge_features", "pixels"] = "judge_features"
    """Where sample diversity is measured: judge_features (penultimate layer) or pixels."""
    grid_samples: PositiveInt = 8
    """Samples shown per class in the artifact."""


# ----------------------------------------------------------------------------------------------------------------------
# The sampler


def balanced_targets(num_samples: int, num_classes: int) -> Tensor:
    """Target classes 0, 1, …, K−1, 0, 1, … (sample i gets i mod K), int64, (num_samples,)."""
    return torch.arange(num_samples) % num_classes


def initial_images(n: int, shape: tuple[int, ...], config: GANTestConfig, seed: int) -> Tensor:
    """N(init_mean, init_std²) start images clamped to [0, 1], (n, *shape), drawn on the CPU from ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((n, *shape), generator=generator)
    return (config.init_mean + config.init_std * noise).clamp_(0.0, 1.0)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block, its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def ascend(model: nn.Module, x: Tensor, y: Tensor, config: GANTestConfig,
           noise: torch.Generator | None = None) -> Tensor:
    """``config.steps`` projected gradient-ascent steps on the label logit from ``x``; returns the final images.

    x ← clamp(x + η·(∇x f_y(x) − λ·(x − 0.5)) + ξ, 0, 1) with ξ ~ N(0, 2ηT) when T = ``langevin_temperature`` > 0
    (drawn from ``noise``, a generator on x's device), else ξ = 0. Runs entirely on the device (no host sync).
    """
    eta, pull = config.step_size, config.pull
    noise_std = (2.0 * eta * config.langevin_temperature) ** 0.5
    x = x.detach().clone()
    for _ in range(config.steps):
        grad = input_gradient(model, x, y)
        x.add_(eta * (grad - pull * (x - 0.5)))
        if noise_std > 0:
            x.add_(torch.randn(x.shape, generator=noise, device=x.device, dtype=x.dtype), alpha=noise_std)
        x.clamp_(0.0, 1.0)
    return x


def draw_samples(model: nn.Module, targets: Tensor, shape: tuple[int, ...], config: GANTestConfig, seed: int,
                 batch_size: int, device: torch.device) -> Tensor:
    """Class-conditional samples for ``targets`` (one per entry), on the CPU, with the model in eval mode."""
    start = initial_images(len(targets), shape, config, seed)
    noise = torch.Generator(device=device).manual_seed(int(seed) + 1) if config.langevin_temperature > 0 else None
    out = []
    with eval_mode(model):
        for sl in batches(len(targets), batch_size):
            out.append(ascend(model, start[sl].to(device), targets[sl].to(device), config, noise).cpu())
    return torch.cat(out) if out else start


# ----------------------------------------------------------------------------------------------------------------------
# Scoring


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` in module order: its classifier, whose input is the penultimate feature."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GibenchError(
            f"the GAN-test judge ({type(model).__name__}) has no nn.Linear classifier layer, so its penultimate "
            "features are undefined; use diversity_space: pixels or a judge backbone with a linear head."
        )
    return linears[-1]


@torch.no_grad()
def judge_outputs(judge: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The judge's predicted classes (N,) and penultimate features (N, D) for images ``x``, both on the CPU.

    The features are the input of the judge's last ``nn.Linear`` (its classifier), captured by a forward pre-hook.
    """
    captured: list[Tensor] = []
    hook = last_linear(judge).register_forward_pre_hook(lambda _m, args: captured.append(args[0].flatten(1).cpu()))
    predicted = []
    try:
        with eval_mode(judge):
            for sl in batches(len(x), batch_size):
                predicted.append(judge(x[sl].to(device)).argmax(1).cpu())
    finally:
        hook.remove()
    return torch.cat(predicted), torch.cat(captured)


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Predicted classes of ``model`` (eval mode) for ``x``, on the CPU."""
    with eval_mode(model):
        return torch.cat([model(x[sl].to(device)).argmax(1).cpu() for sl in batches(len(x), batch_size)])


def judge_accuracy(judge: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> float:
    """The judge's accuracy on images ``x`` against labels ``y``: the GAN-test score of a sample set."""
    return float((predictions(judge, x, batch_size, device) == y).double().mean())


def class_spread(features: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Per class k, sqrt(Σ ‖φ − φ̄_k‖² / (n_k − 1)) over the rows of class k, (K,) float64; NaN where n_k < 2."""
    features = features.flatten(1).double()
    spread = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for k in range(num_classes):
        members = features[y == k]
        if len(members) >= 2:
            spread[k] = ((members - members.mean(0)).pow(2).sum() / (len(members) - 1)).sqrt()
    return spread


def spread_ratio(sample_features: Tensor, sample_y: Tensor, real_features: Tensor, real_y: Tensor,
                 num_classes: int) -> Tensor:
    """Per class, the spread of the samples over the spread of the real images, (K,); NaN where undefined."""
    real = class_spread(real_features, real_y, num_classes)
    ratio = class_spread(sample_features, sample_y, num_classes) / real
    return torch.where(real > 0, ratio, torch.full_like(ratio, float("nan")))


def per_class_accuracy(predicted: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Accuracy per target class, (K,) float64; NaN for a class without samples."""
    correct = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, (predicted == y).double())
    count = torch.bincount(y, minlength=num_classes).double()
    return torch.where(count > 0, correct / count.clamp_min(1), torch.full_like(count, float("nan")))


def _nanmean(values: Tensor) -> float:
    return float(values.nanmean()) if bool(torch.isfinite(values).any()) else float("nan")


# ----------------------------------------------------------------------------------------------------------------------
# The judge


def data_identity(ctx: EvalContext) -> dict[str, Any]:
    """What names the judge's training data: the job's dataset spec, or the bundle's name and a hash of its tensors."""
    if ctx.job is not None:
        return {"dataset": ctx.job.training_spec()["dataset"], "judge_code_version": JUDGE_CODE_VERSION}
    digest = tensors_sha256([ctx.data.train.x, ctx.data.train.y, ctx.data.test.x, ctx.data.test.y])
    return {"dataset": {"name": ctx.data.name, "sha256": digest}, "judge_code_version": JUDGE_CODE_VERSION}


def judge_spec(config: GANTestConfig) -> tuple[PluginSpec, TrainConfig]:
    options = dict(config.judge_backbone_options)
    train = TrainConfig(epochs=config.judge_epochs, batch_size=config.judge_batch_size, optimizer="adam",
                        lr=config.judge_lr)
    return PluginSpec.of(config.judge_backbone, options, options), train


def check_independent(judge: nn.Module, model: nn.Module, config: GANTestConfig) -> None:
    """Refuse a judge built exactly like the benchmarked model (same module tree)."""
    if repr(judge) == repr(model):
        other = ("{gan_test: {judge_backbone: gibench_cnn, judge_backbone_options: {width: 16}}}"
                 if config.judge_backbone == "gibench_mlp" else "{gan_test: {judge_backbone: gibench_mlp}}")
        raise GibenchError(
            f"the GAN-test judge ({config.judge_backbone} with options {dict(config.judge_backbone_options)}) has the "
            "same architecture as the benchmarked model, so it is not an independent judge. Set the evaluator "
            f"option judge_backbone (and judge_backbone_options) to another architecture, e.g. {other} (in a suite, "
            "in the grid that trains this backbone: `evaluator_options:` with that mapping)."
        )


def get_judge(ctx: EvalContext, config: GANTestConfig) -> AuxModel:
    """The dataset's judge (trained once per runs directory), after the independence and quality checks."""
    from gibench import build_model

    backbone, train = judge_spec(config)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the global RNG as it was
        architecture = build_model(backbone.name, backbone.config, ctx.data)
    check_independent(architecture, ctx.model, config)
    judge = classifier(ctx.aux, JUDGE_KIND, ctx.data, data_identity(ctx), backbone, train, config.judge_seed)
    require_quality(judge, "test_accuracy", config.judge_min_accuracy, "GAN-test (option judge_min_accuracy)")
    return judge


# ----------------------------------------------------------------------------------------------------------------------
# The artifact


def save_sample_grid(ctx: EvalContext, samples: Tensor, targets: Tensor, per_class: int) -> str:
    """One row per class: a real test image of the class, then its first ``per_class`` samples (fewer when a class
    has fewer); the class names are written at the left."""
    num_classes = ctx.data.num_classes
    shown = min(per_class, int(torch.bincount(targets, minlength=num_classes).min()))
    rows = []
    for k in range(num_classes):
        real = ctx.data.test.x[ctx.data.test.y == k][:1]
        if not len(real):  # a class absent from the test split: a blank tile in its place
            real = torch.zeros(1, *samples.shape[1:])
        rows.append(torch.cat([real, samples[targets == k][:shown]]))
    filename = save_grid(ctx, "gan_test_samples.png", rows)
    names = list(ctx.data.class_names) or [str(k) for k in range(num_classes)]
    _label_rows(Path(ctx.artifact_dir) / filename, names)
    return filename


def _label_rows(path: Path, names: list[str]) -> None:
    """Add a left margin with one name per grid row to the PNG at ``path`` (rewritten atomically)."""
    from PIL import Image, ImageDraw

    with Image.open(path) as grid:
        grid = grid.convert("RGB")
    tile = (grid.height - 2) / len(names)
    margin = 8 + 7 * max(len(n) for n in names)
    canvas = Image.new("RGB", (grid.width + margin, grid.height), "white")
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(names):
        draw.text((4, int(2 + k * tile + tile / 2 - 6)), name, fill="black")
    atomic_write_with(path, lambda tmp: canvas.save(tmp, format="png"))


# ----------------------------------------------------------------------------------------------------------------------
# The evaluator


class GANTest(Evaluator):
    """Judge accuracy on class-conditional samples drawn by gradient ascent on the model's label logit."""

    Config = GANTestConfig
    version = "1"
    history = {"1": "first version: accuracy of a gibench_mlp judge on 1000 class-balanced samples from 500 noise-"
                   "free logit-ascent steps (step 0.1, pull 1e-2)"}
    metrics = (
        Metric("gan_test_accuracy", True,
               "accuracy of an independently trained judge on samples drawn by gradient ascent on f_y", headline=True,
               bounds=(0.0, 1.0)),
        Metric("diversity", True,
               "within-class spread of the samples over that of real test images (judge features; 1 = data-like, "
               "0 = collapsed)", bounds=(0.0, float("inf"))),
        Metric("accuracy_times_diversity", True,
               "mean over classes of judge accuracy × min(1, spread ratio): recognisable and varied samples",
               bounds=(0.0, 1.0)),
        Metric("model_accuracy_on_samples", True,
               "the benchmarked model's own accuracy on its samples (did the ascent reach the class?)",
               bounds=(0.0, 1.0), diagnostic=True),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """Per job: ``num_samples × steps`` saliency passes (the ascent), ``num_samples`` forwards of the model and
        ``num_samples`` + the test split in judge forwards. Once per dataset and judge recipe: the judge's training
        (``judge_epochs × ⌈N / judge_batch_size⌉`` erm steps of the judge backbone) and a judge forward over the test
        split."""
        cfg = self.config
        judge_backbone, judge_train = judge_spec(cfg)
        judge_forward = ctx.forward(judge_backbone)
        per_job = work((ctx.saliency(), cfg.num_samples * cfg.steps), (ctx.forward(), cfg.num_samples),
                       (judge_forward, cfg.num_samples + ctx.data.n_test))
        judge_step = ctx.train_step(judge_backbone, PluginSpec.of("erm", {}, {}), judge_train)
        shared = work((judge_step, ctx.training_steps(judge_train, ctx.data.n_train)),
                      (judge_forward, ctx.data.n_test))
        key = ctx.shared_key({"judge": [judge_backbone.name, judge_backbone.config, judge_train, cfg.judge_seed]})
        return EvaluationCost(per_job, {key: (f"gan_test judge ({judge_backbone.label})", shared)})

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        num_classes = ctx.data.num_classes
        if cfg.num_samples < 2 * num_classes:
            raise GibenchError(
                f"gan_test: num_samples = {cfg.num_samples} is too few for {num_classes} classes; the diversity needs "
                f"at least 2 samples per class, so set num_samples >= {2 * num_classes}."
            )
        judge = get_judge(ctx, cfg).model
        targets = balanced_targets(cfg.num_samples, num_classes)
        samples = draw_samples(ctx.model, targets, tuple(ctx.data.test.x.shape[1:]), cfg, ctx.seed,
                               ctx.batch_size, ctx.device)
        return self._result(ctx, judge, samples, targets)

    def _result(self, ctx: EvalContext, judge: nn.Module, samples: Tensor, targets: Tensor) -> EvalResult:
        cfg, k = self.config, ctx.data.num_classes
        real_x, real_y = ctx.data.test.x, ctx.data.test.y
        if cfg.diversity_space == "pixels":
            judged = predictions(judge, samples, ctx.batch_size, ctx.device)
            sample_features, real_features = samples, real_x
        else:
            judged, sample_features = judge_outputs(judge, samples, ctx.batch_size, ctx.device)
            real_features = judge_outputs(judge, real_x, ctx.batch_size, ctx.device)[1]
        ratio = spread_ratio(sample_features, targets, real_features, real_y, k)
        accuracy_k = per_class_accuracy(judged, targets, k)
        own = predictions(ctx.model, samples, ctx.batch_size, ctx.device)
        scalars = {
            "gan_test_accuracy": float((judged == targets).double().mean()),
            "diversity": _nanmean(ratio),
            "accuracy_times_diversity": _nanmean(accuracy_k * ratio.clamp(max=1.0)),
            "model_accuracy_on_samples": float((own == targets).double().mean()),
        }
        classes = tuple(float(c) for c in range(k))
        curves = {
            "judge_accuracy_per_class": Curve(classes, tuple(accuracy_k.tolist()), "class", "judge accuracy"),
            "spread_ratio_per_class": Curve(classes, tuple(ratio.tolist()), "class", "sample / real spread"),
        }
        artifacts = {
            "samples": save_sample_grid(ctx, samples, targets, cfg.grid_samples),
            "curves": save_curves(ctx, "gan_test_per_class.json", curves),
        }
        return EvalResult(scalars=scalars, curves=curves, artifacts=artifacts)


__all__ = [
    "GANTest", "GANTestConfig", "JUDGE_CODE_VERSION", "JUDGE_KIND", "ascend", "balanced_targets", "class_spread",
    "data_identity", "draw_samples", "get_judge", "initial_images", "judge_accuracy", "judge_outputs",
    "per_class_accuracy", "spread_ratio",
]
