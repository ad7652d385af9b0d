"""``gaussian_mixture``: a synthetic class-conditional Gaussian mixture in image shape, with exact ground truth.

Each class k has a Gaussian p(x | k) = N(μ_k, diag σ_k²) over the C×H×W pixels and prior p(k) = 1/K. Everything an
evaluator may compare against is then exact (``ANALYTIC_SCORE``):

* the class-conditional score ∇x log p(x | k) = −(x − μ_k) / σ_k²,
* the unconditional score ∇x log p(x) = Σ_k p(k | x) ∇x log p(x | k),
* the Bayes-optimal logits log p(x | k) + log p(k) (:class:`BayesClassifier` wraps them as a model).

Bundle extras: ``score(x, y=None)`` (the score for the given labels, or the unconditional score when y is None),
``log_prob(x, y=None)``, ``bayes_logits(x)`` and ``density`` (the :class:`GaussianMixtureDensity` itself). All accept
any device and floating dtype and compute in the dtype of x.

Choices:

* Parameters: per coordinate μ_k ~ U(0.5 − ``mean_spread``, 0.5 + ``mean_spread``) (default [0.3, 0.7]);
  ``covariance: diagonal`` draws σ_k per coordinate from U(``sigma_min``, ``sigma_max``) (default [0.02, 0.05]);
  ``isotropic`` draws one σ_k per class from the same range.
* The [0, 1] pixel contract: the config requires every mean to lie at least 6·``sigma_max`` inside [0, 1], so a
  coordinate leaves [0, 1] with probability below 1e-9. Samples are clipped to [0, 1] anyway; the clip touches only
  that vanishing tail, and the analytic score and density are those of the unclipped Gaussians.
* Labels are drawn i.i.d. from the uniform prior; then x = μ_y + σ_y ⊙ ε, ε ~ N(0, I). Images are stored as float32
  (the bundle contract); the score is exact at the stored points.
* Randomness: NumPy's ``Generator(PCG64(seed))``: the parameters first, then the train split, then the test split,
  so the parameters do not depend on the split sizes. Deterministic in the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from gibench.api.plugin import ANALYTIC_SCORE, Dataset, DatasetBundle, DataSizes
from gibench.core.config_types import PositiveInt, Seed, Sigma, plugin_config
from gibench.core.params import check
from gibench.data.tensors import make_bundle


@plugin_config
class GaussianMixtureConfig:
    num_classes: Annotated[int, Field(ge=2)] = 3
    """Mixture components, one per class."""
    channels: PositiveInt = 1
    """Image channels."""
    height: PositiveInt = 16
    """Image height."""
    width: PositiveInt = 16
    """Image width."""
    train_size: PositiveInt = 3000
    """Training images."""
    test_size: PositiveInt = 1000
    """Test images."""
    covariance: Literal["diagonal", "isotropic"] = "diagonal"
    """diagonal: one σ per class and coordinate; isotropic: one σ per class."""
    mean_spread: Annotated[float, Field(ge=0, lt=0.5)] = 0.2
    """Class means per coordinate ~ U(0.5 − spread, 0.5 + spread)."""
    sigma_min: Sigma = 0.02
    """Smallest component std in pixel units (stds ~ U(sigma_min, sigma_max))."""
    sigma_max: Sigma = 0.05
    """Largest component std in pixel units; 6·sigma_max must fit in 0.5 − mean_spread."""
    seed: Seed = 0
    """Seed of the mixture's parameters and samples."""

    def __post_init__(self) -> None:
        check(self.sigma_min <= self.sigma_max,
              f"need sigma_min <= sigma_max, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")
        check(0.5 - self.mean_spread >= 6 * self.sigma_max - 1e-12,
              f"sigma_max={self.sigma_max} is too large for mean_spread={self.mean_spread}: samples must stay in "
              f"[0, 1], so 0.5 − mean_spread must be >= 6·sigma_max; lower sigma_max or mean_spread")


@dataclass(frozen=True, eq=False)
class GaussianMixtureDensity:
    """p(x) = Σ_k p(k) N(x; μ_k, diag σ_k²) with parameters in image shape: means/stds (K, C, H, W), log_prior (K,)."""

    means: Tensor
    stds: Tensor
    log_prior: Tensor

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (self.means.to(device=x.device, dtype=x.dtype), self.stds.to(device=x.device, dtype=x.dtype),
                self.log_prior.to(device=x.device, dtype=x.dtype))

    def class_log_likelihoods(self, x: Tensor) -> Tensor:
        """log p(x | k) for every image and class, (N, K)."""
        mu, sd, _ = self._params(x)
        z = (x.unsqueeze(1) - mu.unsqueeze(0)) / sd.unsqueeze(0)
        dim = mu[0].numel()
        log_norm = sd.log().flatten(1).sum(1) + 0.5 * dim * math.log(2 * math.pi)
        return -0.5 * z.pow(2).flatten(2).sum(2) - log_norm.unsqueeze(0)

    def bayes_logits(self, x: Tensor) -> Tensor:
        """log p(x | k) + log p(k), (N, K): the logits of the Bayes-optimal classifier."""
        return self.class_log_likelihoods(x) + self._params(x)[2].unsqueeze(0)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x | y) for the given labels, or log p(x) when y is None; (N,)."""
        if y is None:
            return torch.logsumexp(self.bayes_logits(x), dim=1)
        return self.class_log_likelihoods(x).gather(1, y.view(-1, 1).to(x.device)).squeeze(1)

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """∇x log p(x | y) for the given labels, or ∇x log p(x) when y is None; same shape as x."""
        mu, sd, _ = self._params(x)
        if y is not None:
            y = y.to(x.device)
            return -(x - mu[y]) / sd[y].pow(2)
        per_class = -(x.unsqueeze(1) - mu.unsqueeze(0)) / sd.pow(2).unsqueeze(0)  # (N, K, C, H, W)
        posterior = torch.softmax(self.bayes_logits(x), dim=1)
        return (posterior.view(*posterior.shape, 1, 1, 1) * per_class).sum(1)


class BayesClassifier(nn.Module):
    """The Bayes-optimal classifier of a mixture: logits log p(x | k) + log p(k), so ∇x f_y(x) = ∇x log p(x | y)."""

    def __init__(self, density: GaussianMixtureDensity) -> None:
        super().__init__()
        self.density = density

    def forward(self, x: Tensor) -> Tensor:
        return self.density.bayes_logits(x)


def draw_parameters(cfg: GaussianMixtureConfig, rng: np.random.Generator) -> GaussianMixtureDensity:
    """Means, stds and the uniform prior of the mixture, in float64."""
    shape = (cfg.num_classes, cfg.channels, cfg.height, cfg.width)
    means = 0.5 + cfg.mean_spread * (2.0 * rng.random(shape) - 1.0)
    if cfg.covariance == "diagonal":
        stds = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * rng.random(shape)
    else:
        per_class = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * rng.random(cfg.num_classes)
        stds = np.broadcast_to(per_class.reshape(-1, 1, 1, 1), shape).copy()
    log_prior = np.full(cfg.num_classes, -math.log(cfg.num_classes))
    return GaussianMixtureDensity(torch.from_numpy(means), torch.from_numpy(stds), torch.from_numpy(log_prior))


def sample(density: GaussianMixtureDensity, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """n labels from the prior and images x = μ_y + σ_y ⊙ ε, clipped to [0, 1] (float64)."""
    num_classes = density.means.shape[0]
    y = torch.from_numpy(rng.integers(0, num_classes, size=n)).long()
    eps = torch.from_numpy(rng.standard_normal((n, *density.means.shape[1:])))
    x = density.means[y] + density.stds[y] * eps
    return x.clamp(0.0, 1.0), y


class GaussianMixture(Dataset):
    """Class-conditional Gaussians in image shape with exact score, density and Bayes classifier."""

    name: ClassVar[str] = "gaussian_mixture"
    Config = GaussianMixtureConfig
    version = "1"

    def sizes(self) -> DataSizes:
        cfg = self.config
        return DataSizes((cfg.channels, cfg.height, cfg.width), cfg.num_classes, cfg.train_size, cfg.test_size,
                         frozenset({ANALYTIC_SCORE}))

    def load(self, data_root: Path | None = None, download: bool = False) -> DatasetBundle:
        cfg = self.config
        rng = np.random.Generator(np.random.PCG64(cfg.seed))
        density = draw_parameters(cfg, rng)
        train_x, train_y = sample(density, cfg.train_size, rng)
        test_x, test_y = sample(density, cfg.test_size, rng)
        extras = {
            "score": density.score,
            "log_prob": density.log_prob,
            "bayes_logits": density.bayes_logits,
            "density": density,
        }
        return make_bundle(
            self.name or "gaussian_mixture",
            train_x.float(), train_y, test_x.float(), test_y,
            num_classes=cfg.num_classes,
            class_names=tuple(str(k) for k in range(cfg.num_classes)),
            capabilities={ANALYTIC_SCORE},
            extras=extras,
        )
