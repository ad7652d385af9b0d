"""``jem``: the Joint Energy-based Model, the classifier's logits trained as an energy model of the images.

Grathwohl, Wang, Jacobsen, Duvenaud, Norouzi & Swersky, "Your Classifier is Secretly an Energy Based Model and You
Should Treat it Like One" (ICLR 2020), ``train_wrn_ebm.py`` of wgrathwohl/JEM. The logits f(x) define the energy
E(x) = −LSE(x), LSE(x) = logsumexp_k f(x)[k], so log p(x) = LSE(x) − log Z; p(x) is fitted by maximum likelihood with
persistent contrastive divergence (samples x̃ from SGLD chains kept in a replay buffer), beside the cross-entropy:

    total = mean_b CE(f(x_b), y_b) + w · (mean_j LSE(x̃_j) − mean_b LSE(x_b))

The second term is the reference's ``p_x_weight · l_p_x`` with ``l_p_x = −(fp − fq)``: its parameter gradient is the
contrastive estimate of that of −mean_b log p(x_b) (the samples are constants of the loss).

Sampler (the reference's ``sample_q`` and ``sample_p_0`` with its defaults, per step):

* the replay buffer: ``buffer_size`` images drawn uniform over the pixel range, created on the first call with the
  batch's image shape, dtype and device and kept on the regularizer instance (one instance trains one job, so a job
  starts from a fresh buffer);
* N = batch-size buffer entries drawn at random with replacement (``torch.randint``), each replaced with probability
  ``reinit_freq`` by a fresh uniform image;
* ``sgld_steps`` steps x̃ ← x̃ + α·∇x̃ Σ_j LSE(x̃_j) + s·N(0, I) (α = ``sgld_step_size``, s = ``sgld_noise``), with every
  module in eval mode (the reference calls ``f.eval()``), gradients with respect to x̃ only
  (``torch.autograd.grad``: no ``.grad`` on the parameters); the samples are **not clipped** to the pixel range (the
  reference does not clip them either);
* the final samples are detached and written back to the buffer at the drawn indices. Where an index was drawn
  twice, the buffer keeps the sample of its last occurrence (what a sequential write leaves, as the reference's
  ``replay_buffer[inds] = ...`` on its CPU buffer), written so that the result is the same on every device.

Draws come from torch's global generators (seeded by the trainer), in this order: the data noise, the buffer (first
call only), the indices, the fresh images, the reinitialisation coins, one Gaussian per SGLD step. Two runs with the
same seed are identical.

Units. The reference normalises images to [−1, 1] (x = 2·x01 − 1); gibench's are in [0, 1] pixel units (x01), with the
normalisation inside the model. Its defaults, converted so that the chains are the same chains of the same function:
the uniform start U(−1, 1) is U(0, 1); an SGLD step of size 1 on x is a step of 1/4 on x01 (∂/∂x01 = 2·∂/∂x and
Δx01 = Δx/2), so ``sgld_step_size`` = 0.25; its noise std 0.01 is 0.005 in pixel units; its data noise σ = 0.03
(``--sigma``, added by the training transform after normalisation, not clipped) is ``data_noise`` = 0.015. Unchanged:
``weight`` = ``p_x_weight`` = 1, ``sgld_steps`` = ``n_steps`` = 20 (its help: "20 works for PCD"), ``buffer_size``
= 10,000, ``reinit_freq`` = 0.05.

Data noise. The reference adds it to both of its batches (the transform). One noise draw is added to the batch here,
and that noisy batch serves both the cross-entropy and the data term, through one forward whose logits give both
(the reference draws the p(x) batch and the labelled batch from two loaders, two forwards; with every label used,
as in its CIFAR-10 runs, both come from the same training set). The noise applies whenever ``data_noise`` > 0, also
at w = 0, so the loss is continuous in w; ``zero_strength`` is therefore ``{weight: 0, data_noise: 0}``: w = 0 skips
the sampler (no buffer, no draws, no sample forward), and without data noise the loss is then exactly ``erm``'s.

Module modes: the sampler runs in eval mode and every submodule's own train/eval flag is restored afterwards (not a
blanket ``model.train()`` as in the reference). The data and sample forwards of the loss run in the mode the model
arrived in (train), the data first, as the reference's ``f(x_p_d)`` then ``f(x_q)``: with BatchNorm each batch is
normalised with its own statistics and both update the running statistics (the reference's default WRN has no
normalisation, ``--norm None``: "none works fine").

Instability. Contrastive-divergence training of an energy model can diverge; the reference stops the run when
|L| > 1e8 and advises small learning rates. A step here cannot read the loss on the host, so it does not raise:
where |total| > 1e8 (or total is not finite) ``total`` is NaN, which the trainer's non-finite check turns into a failed
job with its reason (never a score). ``parts``: ``cross_entropy``, ``energy_data`` (−mean LSE of the noisy batch),
``energy_samples`` (−mean LSE of the samples; 0 when no sample is drawn, at w = 0) and ``diverged`` (1 at a step
whose total passed the bound, else 0), all detached.

Left out: the reference's network (WRN-28-10 without normalisation), its optimisation (Adam 1e-4, 200 epochs, decay
by 0.3 at epochs 160 and 180; its README's command adds a 1,000-iteration linear warm-up), its validation split and
its augmentation (pad-crop-flip): the suite's ``train`` section applies to every regularizer alike. Not offered: the
class-conditional sampler (``--class_cond_p_x_sample``) and the p(x, y) term (``--p_x_y_weight``, 0 by default).

Measured on the bundled MNIST subset, ``gibench_cnn`` softplus, 3 epochs Adam 1e-3 (the shipped suites' training),
batch 64, seed 0 (test accuracy on the 1,000 test images and mean ‖∇x f_y‖² of the first 500; ``erm``: 0.963, 8.42):

    w = 0 (data noise only): 0.966, 7.88        w = 0.1: diverged at step 185 of 189 (|total| > 1e8: a failed job)
    w = 0.001:               0.968, 6.00        w = 1:   diverged at step 150 (the default)
    w = 0.01:                0.961, 5.72        w = 3:   diverged at step 124
    w = 0.03:                0.891, 418

At w = 0.03 the model trains but pushes the samples' energy far above the data's (42 against −1.5 in the last steps) and
its input gradients grow fifty-fold; from w = 0.1 the energies run away within three epochs (the samples' energy at
1.6·10⁷ to 5.9·10⁸ in the last logged steps). At the reference's learning rate, Adam 1e-4, the default w = 1 trains to
the end (0.767 against ``erm``'s 0.881 at that rate, 3 epochs, squared gradient norm 2.96 against 2.80): at the suite's
Adam 1e-3 the default is a failed job, recorded with its reason, where the reference's 1e-4 is not; a suite meant to
train JEM at its default sets ``train.lr`` accordingly.

Cost per step: ``sgld_steps`` forwards and input-only backwards of the model on a batch of samples (20 by default, in
eval mode), then the two training forwards (data, samples) and one backward through both: 22 plain steps by pass
count (what ``passes_per_step`` declares to the estimate), about 15 by arithmetic (an input-only backward skips the
weight gradients). Measured with
``benchmarks/regularizer_step_cost.py`` (batch 64, one CPU thread): 21.4× ``erm`` on ``gibench_cnn`` 1×28×28 and
16.6× on ``resnet18`` 3×32×32, peak step memory 1.9× and 2.1× ``erm``'s (two forward graphs), plus the replay
buffer (10,000 images: 30 MiB at 1×28×28 in float32); see docs/benchmarks.md ("JEM: step cost against its
pass-count floor").

Sweep: w ∈ {0.001, 0.01, 0.03, 0.1, 0.3, 1, 3} (log). w = 1 is the reference's only setting (its CIFAR-10 JEM keeps
92.9 % test accuracy against 95.8 % for its plain WRN); the sweep holds it with one stronger point above, w = 3, and
goes down to where the model trains at the suite's Adam 1e-3 (above): 0.001, nearly ``erm`` in accuracy (its squared
gradient norm is already 0.71 of ``erm``'s, against 0.94 for the data noise alone), a decade below 0.01 (between them
accuracy and gradient norm barely move), then half decades, where the behaviour turns from trained (0.01) through
clearly strong (0.03) to diverged (0.1 and up at Adam 1e-3; a diverged setting fails and so does not qualify in a
selection). The values are in units of the cross-entropy, not of pixels: no conversion.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gibench.api.passes import Passes, batch_view, module_modes
from gibench.api.regularizer import Regularizer, Sweep, TrainingLoss
from gibench.core.config_types import (
    NoiseStd,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Probability,
    Weight,
    plugin_config,
)

#: |total| above which a step counts as diverged (the reference's bound).
DIVERGENCE_BOUND = 1e8


@plugin_config
class JEMConfig:
    weight: Weight = 1.0
    """w on the contrastive p(x) term (the reference's p_x_weight); 0 skips the sampler."""
    sgld_steps: NonNegativeInt = 20
    """SGLD steps per training step (the reference's n_steps)."""
    sgld_step_size: NonNegativeFloat = 0.25
    """SGLD step on ∇x LSE in pixel units (the reference's sgld_lr 1 on [−1, 1] images)."""
    sgld_noise: NoiseStd = 0.005
    """SGLD noise std in pixel units (the reference's sgld_std 0.01 on [−1, 1] images)."""
    buffer_size: PositiveInt = 10000
    """Replay-buffer entries."""
    reinit_freq: Probability = 0.05
    """Probability that a drawn chain restarts from a fresh uniform image."""
    data_noise: NoiseStd = 0.015
    """Std of the Gaussian noise added to the training batch, pixel units (the reference's sigma 0.03)."""


def lse(logits: Tensor) -> Tensor:
    """LSE(x) = logsumexp_k f(x)[k] = −E(x) per sample, shape (N,)."""
    return logits.logsumexp(dim=1)


def sgld(model: nn.Module, start: Tensor, steps: int, step_size: float, noise: float) -> Tensor:
    """``steps`` SGLD steps x ← x + step_size·∇x Σ LSE(x) + noise·N(0, I) from ``start``, every module in eval mode
    (each submodule's own flag restored after); gradients with respect to x only. Returns the detached samples."""
    x = start.detach()
    with module_modes(model, train=False), torch.enable_grad():
        for _ in range(steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(lse(model(x)).sum(), x)
            x = x.detach() + step_size * grad
            if noise > 0:
                x = x + noise * torch.randn_like(x)
    return x.detach()


def last_occurrence(indices: Tensor) -> Tensor:
    """For each position i, the last position j with indices[j] == indices[i] (no host synchronization)."""
    positions = torch.arange(indices.shape[0], device=indices.device)
    same = indices[:, None] == indices[None, :]
    return torch.where(same, positions[None, :], -1).amax(dim=1)


class JEM(Regularizer):
    """CE(f(x), y) + w·(mean LSE(x̃) − mean LSE(x)), x̃ from persistent SGLD chains on the energy −LSE of the logits."""

    Config = JEMConfig
    family = "energy model"
    history = {"1": "first version: JEM, w 1, 20 SGLD steps of 0.25 with noise 0.005, buffer 10,000, reinit 0.05, "
                    "data noise 0.015 (the reference's defaults in pixel units)"}
    zero_strength: ClassVar[dict] = {"weight": 0.0, "data_noise": 0.0}
    amp_safe = False
    sweep = Sweep("weight", (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0), "log",
                  "the reference's p_x_weight 1, 3 above it, down to 0.001, nearly erm; 0.1 up diverge at Adam 1e-3")

    def __init__(self, config: JEMConfig | None = None) -> None:
        super().__init__(config)
        self.buffer: Tensor | None = None

    def passes_per_step(self) -> Passes:
        """A forward and an input gradient per SGLD step, then the data and the sample training forwards with the
        backward through both (w = 0: the cross-entropy alone, no sampler)."""
        c = self.config
        if c.weight == 0:
            return Passes(forward=1, backward=1)
        return Passes(forward=c.sgld_steps + 2, backward=c.sgld_steps + 2)

    def buffer_for(self, x: Tensor) -> Tensor:
        """The replay buffer, created uniform in [0, 1] on the first call (or when the image shape, dtype or device
        changes)."""
        b = self.buffer
        if b is None or b.shape[1:] != x.shape[1:] or b.dtype != x.dtype or b.device != x.device:
            self.buffer = torch.rand(self.config.buffer_size, *x.shape[1:], dtype=x.dtype, device=x.device)
        return self.buffer

    def draw_chains(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The chains' starting points for a batch like ``x`` and their buffer indices: buffer entries drawn with
        replacement, each replaced by a fresh uniform image with probability ``reinit_freq``."""
        buffer = self.buffer_for(x)
        n = x.shape[0]
        indices = torch.randint(0, buffer.shape[0], (n,), device=x.device)
        fresh = torch.rand_like(x)
        restart = torch.rand(n, dtype=x.dtype, device=x.device) < self.config.reinit_freq
        return torch.where(batch_view(restart, x), fresh, buffer[indices]), indices

    def sample(self, model: nn.Module, x: Tensor) -> Tensor:
        """Samples x̃ for a batch like ``x`` (persistent SGLD), written back to the buffer at their indices."""
        c = self.config
        start, indices = self.draw_chains(x)
        samples = sgld(model, start, c.sgld_steps, c.sgld_step_size, c.sgld_noise)
        self.buffer[indices] = samples[last_occurrence(indices)]  # duplicates carry one value: deterministic
        return samples

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> TrainingLoss:
        c = self.config
        if c.data_noise > 0:
            x = x + c.data_noise * torch.randn_like(x)
        samples = self.sample(model, x) if c.weight > 0 else None
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        lse_data = lse(logits).mean()
        if samples is None:
            total, lse_samples = ce, torch.zeros_like(lse_data)
        else:
            lse_samples = lse(model(samples)).mean()
            total = ce + c.weight * (lse_samples - lse_data)
        diverged = ~(total.detach().abs() <= DIVERGENCE_BOUND)  # also true for NaN
        total = torch.where(diverged, torch.full_like(total, float("nan")), total)
        return TrainingLoss(total=total, parts={
            "cross_entropy": ce.detach(), "energy_data": -lse_data.detach(), "energy_samples": -lse_samples.detach(),
            "diverged": diverged.to(ce.dtype)})
