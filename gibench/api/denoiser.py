"""A small class-conditional denoiser that gibench trains itself: the learned score of the data, for evaluators.

Srinivas, Bordt & Lakkaraju, "Which Models have Perceptually-Aligned Gradients? An Explanation via Off-Manifold
Robustness" (NeurIPS 2023), take the score of the data from a pretrained EDM diffusion model (Karras, Aittala, Aila &
Laine, "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS 2022), run on the *clean* image
at one noise level σ: s(x) = (D(x; σ) − x) / σ². By Tweedie's formula (Vincent, "A Connection Between Score Matching
and Denoising Autoencoders", Neural Computation 2011) the minimiser of E‖D(x + σε) − x‖² satisfies exactly that
s = ∇x log p_σ(x), the score of the data density smoothed by N(0, σ²I). gibench cannot download EDM weights, so it
trains its own denoiser, once per dataset and σ, as an auxiliary model (:mod:`gibench.store.auxiliary`).

Choices (each one is in the auxiliary model's identity, so changing it trains a new denoiser):

* Network: ``diffusers.UNet2DModel`` built from a config (never ``from_pretrained``; nothing is downloaded): three
  resolution levels with ``block_out_channels = (w, 2w, 2w)``, one ResNet block per level, plain ``DownBlock2D`` /
  ``UpBlock2D`` blocks and no attention anywhere (``add_attention=False``): attention costs most on a CPU and adds
  little at 28 px. GroupNorm with 8 groups (so ``w`` is a multiple of 8). A library U-Net rather than a hand-written
  one: it is the architecture diffusion models use, and one step of the default (w = 16) costs
  about 0.4 s for 64 MNIST images on one CPU core (0.26 M parameters; w = 32 has 1.05 M and costs 1.2 s), cheap
  enough for the ``standard`` suite. No hand-written U-Net was measured against it.
* Class templates: one learned image per class and one for the null class (zero at initialisation), added to the
  U-Net's output F. The convolutions are translation-equivariant, so a position-dependent target (a class's mean
  digit; the Gaussian mixture's per-pixel means, which have no spatial structure) would otherwise cost them capacity.
  Measured on the 8×8 mixture of the tests (σ = 0.1, w = 8, 8 epochs of 1,000 images, batch 32, lr 3e-3): cosine to the
  exact smoothed score 0.923 without templates at a constant learning rate, 0.929 with templates, 0.960 with templates
  and the cosine schedule below.
* Image sizes: the U-Net halves the resolution twice, so height and width are padded (replicate) up to multiples of
  4 and the output cropped back. MNIST (28×28), BlockMNIST (56×28) and the 16×16 Gaussian mixture need no padding.
* One noise level: the U-Net's timestep input is the constant EDM noise embedding c_noise = ln(σ')/4.
* EDM preconditioning (Karras et al. Table 1) in the coordinates EDM uses, u = 2x − 1 ∈ [−1, 1], σ' = 2σ,
  σ_data = 0.5: D(u) = c_skip·u + c_out·F(c_in·u), c_skip = σ_data²/(σ'² + σ_data²), c_out = σ'σ_data/√(σ'² + σ_data²),
  c_in = 1/√(σ'² + σ_data²); the loss is EDM's, ‖F − (u − c_skip·ũ)/c_out‖², which is ‖D − u‖² up to the constant
  weight 1/c_out² at a single σ. D is returned in pixel units, so the score is ∇x log p_σ(x) in pixel units.
* Conditional and unconditional in one model: ``num_class_embeds = K + 1``; label K is the null class. During
  training each label is replaced by the null class with probability ``uncond_prob`` (0.2, as in Ho & Salimans,
  "Classifier-Free Diffusion Guidance", 2022), so D(x; σ, y) gives ∇x log p_σ(x | y) and D(x; σ, K) gives ∇x log p_σ(x).
* Training: Adam, learning rate annealed from ``lr`` to 0 on a cosine over all steps (short trainings end far
  from the noise floor of a constant rate), fresh noise ε ~ N(0, I) for every batch, no data augmentation (flips are
  wrong for digits), a seeded shuffling and noise generator; optionally only the first ``max_train`` training images.
* Quality (recorded with the model; all per-pixel mean squared errors in pixel units on the *test* split, one fixed
  noise draw): ``loss_conditional`` and ``loss_unconditional`` of the denoiser, and the trivial denoisers for
  reference: ``loss_identity`` (D(x̃) = x̃, ≈ σ²), ``loss_mean`` (the train split's mean image) and
  ``loss_class_mean`` (the class's mean train image). ``gain_over_trivial`` = 1 − loss_unconditional /
  min(loss_identity, loss_mean): 0 for a denoiser no better than the best trivial one, 1 for a perfect one.


What the module offers (``score_alignment`` is its user; ``gibench run --estimate`` times its training step):

* :class:`DenoiserTraining`: the recipe, everything that determines a denoiser besides the data (σ, the width, the
  training options), declared once. :class:`DenoiserOptions` is the same recipe as flat options of an evaluator's
  Config (``sigma`` and ``denoiser_<field>``, :data:`OPTION_NAMES`), generated from it, with
  :meth:`DenoiserOptions.denoiser_training` to read the recipe back.
* :class:`Denoiser`: D(x; σ, y) in pixel units (y None: the null class), :meth:`Denoiser.score` the score
  (D(x; σ, y) − x)/σ² and :meth:`Denoiser.loss` EDM's training loss at one σ.
* :func:`build`: the untrained denoiser for a dataset bundle; :func:`train`: its training, returning the model (eval
  mode) and its quality (:func:`quality`).
* :func:`identity`: what the auxiliary-model key covers (the data's identity, :func:`architecture`, the recipe and
  :data:`DENOISER_CODE_VERSION`).

``diffusers`` is imported only when a denoiser is built or its identity taken, so importing this module stays cheap.
"""

from __future__ import annotations

__all__ = [
    "DENOISER_CODE_VERSION", "Denoiser", "DenoiserOptions", "DenoiserTraining", "DenoiserWidth", "OPTION_NAMES",
    "architecture", "build", "identity", "quality", "train",
]

import dataclasses
import math
import time
import typing
from dataclasses import asdict
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gibench.api.plugin import DatasetBundle
from gibench.core.config_types import Fraction, Limit, PositiveFloat, PositiveInt, Seed, Sigma, plugin_config

#: Bump when a change here changes the weights or the quality figures of a denoiser for the same identity.
DENOISER_CODE_VERSION = "1"
SIGMA_DATA = 0.5  # EDM's σ_data, in its [−1, 1] coordinates
DOWNSAMPLING = 4  # two halvings in the three-level U-Net

DenoiserWidth = Annotated[int, Field(ge=8, multiple_of=8)]
"""The U-Net's base width w (block_out_channels = (w, 2w, 2w)): GroupNorm with 8 groups needs a multiple of 8."""


@plugin_config
class DenoiserTraining:
    """What determines a denoiser besides the data: σ (pixel units), architecture width and the training recipe.

    The one declaration of these options: their types, ranges, defaults and help texts are also those of
    :class:`DenoiserOptions`, so the help texts are written for an evaluator's ``gibench list`` (the module docstring
    says how each is used: Adam's learning rate on a cosine schedule; the seed of the initialization, the noise and
    the batch order).
    """

    sigma: Sigma = 0.25
    """The learned score's noise level in pixel units (the paper's 0.5 in [−1, 1] coordinates)."""
    width: DenoiserWidth = 16
    """U-Net block_out_channels = (w, 2w, 2w)."""
    epochs: PositiveInt = 5
    """Denoiser training epochs."""
    lr: PositiveFloat = 2e-3
    """Denoiser learning rate."""
    batch_size: PositiveInt = 64
    """Denoiser training batch size."""
    uncond_prob: Fraction = 0.2
    """Share of training labels replaced by the null class."""
    max_train: Limit = 0
    """The first N training images; 0 = all."""
    seed: Seed = 0
    """Seed of the denoiser's training."""


#: The option name of each :class:`DenoiserTraining` field in an evaluator's Config (:class:`DenoiserOptions`):
#: ``denoiser_<field>``, except ``sigma``, which is also the noise level the evaluator itself reads.
OPTION_NAMES: dict[str, str] = {f.name: f.name if f.name == "sigma" else f"denoiser_{f.name}"
                                for f in dataclasses.fields(DenoiserTraining)}


_OPTIONS_DOC = """The denoiser's recipe as flat options of an evaluator's Config: inherit them, ``class
MyConfig(DenoiserOptions)`` under ``@plugin_config``, and read the recipe back with ``denoiser_training()``.

Generated from :class:`DenoiserTraining`, so the two cannot drift: one keyword-only field per recipe field, named by
:data:`OPTION_NAMES` (``sigma``, ``denoiser_width``, ``denoiser_epochs``, ``denoiser_lr``, ``denoiser_batch_size``,
``denoiser_uncond_prob``, ``denoiser_max_train``, ``denoiser_seed``), with the recipe field's type, range, default and
help text. Keyword-only for the reason :func:`gibench.core.config_types.plugin_config` gives; a dataclass lists its
bases' fields first, so ``gibench list`` shows them before the subclass's own.
"""


def _options_class() -> type:
    """:class:`DenoiserOptions`, generated from :class:`DenoiserTraining`'s fields (see its docstring)."""
    hints = typing.get_type_hints(DenoiserTraining, include_extras=True)
    annotations: dict[str, object] = {}
    namespace: dict[str, object] = {}
    for f in dataclasses.fields(DenoiserTraining):
        help_text = DenoiserTraining.__pydantic_fields__[f.name].description
        annotations[OPTION_NAMES[f.name]] = Annotated[hints[f.name], Field(description=help_text)]
        namespace[OPTION_NAMES[f.name]] = f.default

    def denoiser_training(self: typing.Any) -> DenoiserTraining:
        """The :class:`DenoiserTraining` these options describe, field by field (:data:`OPTION_NAMES`)."""
        return DenoiserTraining(**{name: getattr(self, option) for name, option in OPTION_NAMES.items()})

    denoiser_training.__qualname__ = "DenoiserOptions.denoiser_training"
    namespace.update(__annotations__=annotations, __module__=__name__, __qualname__="DenoiserOptions",
                     __doc__=_OPTIONS_DOC, denoiser_training=denoiser_training)
    return plugin_config(kw_only=True)(type("DenoiserOptions", (), namespace))


DenoiserOptions: typing.Any = _options_class()


class Denoiser(nn.Module):
    """D(x; σ, y) in pixel units around a ``UNet2DModel``; y = ``num_classes`` asks for the unconditional denoiser."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], num_classes: int, sigma: float, width: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.num_classes, self.sigma, self.image_size = num_classes, sigma, image_size
        padded = tuple(math.ceil(s / DOWNSAMPLING) * DOWNSAMPLING for s in image_size)
        self.unet = UNet2DModel(
            sample_size=padded, in_channels=in_chans, out_channels=in_chans, block_out_channels=(width, 2 * width,
            2 * width), layers_per_block=1, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
            add_attention=False, norm_num_groups=8, num_class_embeds=num_classes + 1,
        )
        # one learned image per class (and the null class), added to the U-Net's output: position-dependent structure
        # (the mean digit of a class; a mixture's per-pixel means) then costs the translation-equivariant convolutions
        # no capacity
        self.templates = nn.Parameter(torch.zeros(num_classes + 1, in_chans, *image_size))
        s = 2.0 * sigma  # σ in EDM's [−1, 1] coordinates
        total = s * s + SIGMA_DATA**2
        self.c_skip, self.c_out = SIGMA_DATA**2 / total, s * SIGMA_DATA / math.sqrt(total)
        self.c_in, self.c_noise = 1.0 / math.sqrt(total), math.log(s) / 4.0

    def network(self, u: Tensor, y: Tensor) -> Tensor:
        """F(c_in·u) for images u in [−1, 1] coordinates (padded to the U-Net's grid and cropped back)."""
        h, w = u.shape[-2:]
        ph, pw = (-h) % DOWNSAMPLING, (-w) % DOWNSAMPLING
        inp = F.pad(self.c_in * u, (0, pw, 0, ph), mode="replicate") if ph or pw else self.c_in * u
        t = torch.full((u.shape[0],), self.c_noise, device=u.device, dtype=u.dtype)
        return self.unet(inp, t, class_labels=y).sample[..., :h, :w] + self.templates[y]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The denoised image D(x; σ, y) in pixel units (y None: unconditional)."""
        y = self.null_labels(x) if y is None else y.to(x.device)
        u = 2.0 * x - 1.0
        return (self.c_skip * u + self.c_out * self.network(u, y) + 1.0) / 2.0

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """∇x log p_σ(x | y) (or ∇x log p_σ(x)) = (D(x; σ, y) − x)/σ², evaluated on the clean x as the paper does."""
        with torch.no_grad():
            return ((self(x, y) - x) / self.sigma**2).detach()

    def null_labels(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)

    def loss(self, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        """EDM's loss at one σ: ‖F(c_in·ũ) − (u − c_skip·ũ)/c_out‖², ũ = u + σ'ε (u, ũ in [−1, 1] coordinates)."""
        u = 2.0 * x - 1.0
        noisy = u + 2.0 * self.sigma * eps
        return (self.network(noisy, y) - (u - self.c_skip * noisy) / self.c_out).pow(2).mean()


def build(bundle: DatasetBundle, cfg: DenoiserTraining) -> Denoiser:
    """The untrained denoiser for ``bundle`` (seeded by the caller)."""
    return Denoiser(bundle.in_chans, bundle.image_size, bundle.num_classes, cfg.sigma, cfg.width)


def architecture(bundle: DatasetBundle, cfg: DenoiserTraining) -> dict:
    """The architecture part of a denoiser's identity."""
    import diffusers

    return {"unet": "diffusers.UNet2DModel", "diffusers": diffusers.__version__, "width": cfg.width,
            "levels": 3, "attention": False, "in_chans": bundle.in_chans, "image_size": list(bundle.image_size),
            "num_classes": bundle.num_classes, "null_class": bundle.num_classes, "preconditioning": "edm",
            "class_templates": True}


def identity(data_identity: dict, bundle: DatasetBundle, cfg: DenoiserTraining) -> dict:
    """Everything that determines a denoiser's weights (hashed by :mod:`gibench.store.auxiliary`)."""
    return {"data": data_identity, "architecture": architecture(bundle, cfg), "training": asdict(cfg),
            "code_version": DENOISER_CODE_VERSION}


def train(bundle: DatasetBundle, cfg: DenoiserTraining, device: torch.device) -> tuple[Denoiser, dict[str, float]]:
    """Train a denoiser by denoising score matching on the train split; return it (eval mode) and its quality."""
    from gibench.core.errors import GibenchError

    torch.manual_seed(cfg.seed)
    model = build(bundle, cfg).to(device).train()
    n = len(bundle.train) if cfg.max_train <= 0 else min(cfg.max_train, len(bundle.train))
    x_all, y_all = bundle.train.x[:n], bundle.train.y[:n]
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = x_all[idx], y_all[idx].clone()
            y[torch.rand(len(idx), generator=gen) < cfg.uncond_prob] = bundle.num_classes
            eps = torch.randn(x.shape, generator=gen)
            loss = model.loss(x.to(device), y.to(device), eps.to(device))
            if not torch.isfinite(loss):
                raise GibenchError(f"denoiser training diverged (loss {float(loss)}) in epoch {epoch + 1}; "
                                   f"lower the evaluator's denoiser_lr (now {cfg.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    return model, {**quality(model, bundle, cfg, device), "train_seconds": round(seconds, 3), "train_images": n}


@torch.no_grad()
def quality(model: Denoiser, bundle: DatasetBundle, cfg: DenoiserTraining, device: torch.device,
            batch_size: int = 256) -> dict[str, float]:
    """Held-out per-pixel denoising MSE on the test split (one fixed noise draw), and the trivial denoisers' MSE."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    mean = bundle.train.x.mean(0)
    class_means = torch.stack([bundle.train.x[bundle.train.y == k].mean(0) if (bundle.train.y == k).any() else mean
                               for k in range(bundle.num_classes)])
    sums = dict.fromkeys(("conditional", "unconditional", "identity", "mean", "class_mean"), 0.0)
    for i in range(0, len(bundle.test), batch_size):
        x, y = bundle.test.x[i:i + batch_size], bundle.test.y[i:i + batch_size]
        noisy = x + cfg.sigma * torch.randn(x.shape, generator=gen)
        outputs = {
            "conditional": model(noisy.to(device), y.to(device)).cpu(),
            "unconditional": model(noisy.to(device), None).cpu(),
            "identity": noisy, "mean": mean.expand_as(x), "class_mean": class_means[y],
        }
        for key, out in outputs.items():
            sums[key] += float((out - x).double().pow(2).sum())
    count = bundle.test.x.numel()
    losses = {f"loss_{key}": value / count for key, value in sums.items()}
    best_trivial = min(losses["loss_identity"], losses["loss_mean"])
    return {**losses, "gain_over_trivial": 1.0 - losses["loss_unconditional"] / best_trivial}
