"""Per-image random draws for evaluators that perturb inputs (the built-in ``sensitivity`` and ``infidelity``).

Public core module, so that every evaluator (built-in or plugin) draws its noise by the same batch-independent rule.

Every image gets its own ``torch.Generator``, seeded from the evaluation seed, a stream number (one per kind of draw)
and the image's position in the evaluated subset. An image's draws therefore do not depend on which other images
share its batch, so the scores are independent of ``batch_size`` (the conformance contract), and two evaluators (or
two perturbation kinds of one evaluator) never share draws.
"""

from __future__ import annotations

__all__ = ["image_seed", "per_image_draws"]

from typing import Literal

import torch
from torch import Tensor

_MASK = (1 << 63) - 1


def image_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit generator seed for image ``index`` of draw stream ``stream`` under evaluation seed ``seed``."""
    return ((seed * 1_000_003 + stream) * 10_000_019 + index) & _MASK


def per_image_draws(
    seed: int, stream: int, start: int, count: int, num_samples: int, shape: tuple[int, ...],
    device: torch.device, kind: Literal["uniform", "normal"],
) -> Tensor:
    """``num_samples`` draws for each of the images ``start .. start + count - 1``: shape (count, S, *shape).

    ``uniform`` draws U[-1, 1) per coordinate; ``normal`` draws N(0, 1). Float32, on ``device`` (the generator runs
    on that device; the same seed gives different numbers on the CPU and on CUDA).
    """
    out = torch.empty((count, num_samples, *shape), device=device)
    generator = torch.Generator(device=device)
    for i in range(count):
        generator.manual_seed(image_seed(seed, stream, start + i))
        if kind == "uniform":
            out[i].uniform_(-1.0, 1.0, generator=generator)
        else:
            out[i].normal_(0.0, 1.0, generator=generator)
    return out
