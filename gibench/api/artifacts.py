"""The evaluator artifact writer: the evaluated test subset, batching, and the small leaderboard artifacts.

Public for every evaluator, built-in or plugin (re-exported by :mod:`gibench`): an evaluator scores the same images
for every model (:func:`eval_subset`), walks them in batches (:func:`batches`), and leaves a small, uniform record
for the leaderboard next to its numbers.

Artifacts are deliberately small: a PNG grid of a few inputs above their saliency maps (``torchvision.utils``), and
curves as JSON (``{name: {"x": [...], "y": [...], "x_label": ..., "y_label": ...}}``). Files are written atomically
(:func:`gibench.core.fsio.atomic_write_with`: temporary file + rename) so that a run killed mid-write never leaves a
half-written artifact behind.
"""

from __future__ import annotations

__all__ = [
    "GRID_IMAGES", "GRID_MIN_SIDE", "batches", "eval_subset", "save_curves", "save_grid", "save_saliency_grid",
    "to_unit",
]

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gibench.api.plugin import Curve, EvalContext
from gibench.core.fsio import atomic_write_with

#: images shown in a saliency grid
GRID_IMAGES = 8
#: small images are upscaled (nearest neighbour) to at least this many pixels per side in a grid
GRID_MIN_SIDE = 56


def eval_subset(ctx: EvalContext, max_images: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The first ``max_images`` test images (0 = all), their labels and per-sample extras, on the CPU.

    Test splits are stored in seeded random order (``gibench.data.tensors.stratified_split``), so a prefix is a
    near-uniform sample over classes and the same images are used for every model.
    """
    test = ctx.data.test
    n = len(test) if max_images <= 0 else min(max_images, len(test))
    extras = {key: value[:n] for key, value in test.extras.items()}
    return test.x[:n], test.y[:n], extras


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``."""
    for start in range(0, n, max(int(batch_size), 1)):
        yield slice(start, min(start + batch_size, n))


def to_unit(maps: Tensor, signed: bool = False) -> Tensor:
    """Per-image scaling of (N, C, H, W) maps to [0, 1] for display.

    Unsigned maps are divided by their per-image maximum; signed maps are shown as 0.5 + 0.5·m/max|m| (grey = 0).
    An all-zero map stays 0 (unsigned) or 0.5 (signed).
    """
    maps = maps.detach().float()
    peak = maps.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * maps / peak) if signed else (maps / peak).clamp(0, 1)


def save_grid(ctx: EvalContext, filename: str, rows: list[Tensor]) -> str:
    """Save rows of (n, C, H, W) images in [0, 1] (each row one kind: inputs, saliency, ...) as one PNG grid.

    Rows with one channel are repeated to the largest channel count so that they can share a grid; images smaller
    than ``GRID_MIN_SIDE`` are upscaled by an integer factor (nearest neighbour). Returns ``filename``.
    """
    from torchvision.utils import save_image

    n = min(r.shape[0] for r in rows)
    channels = max(r.shape[1] for r in rows)
    tiles = []
    for row in rows:
        row = row[:n].detach().float().cpu().clamp(0, 1)
        if row.shape[1] != channels:
            row = row.expand(-1, channels, -1, -1)
        factor = -(-GRID_MIN_SIDE // min(row.shape[-2:]))
        if factor > 1:
            row = F.interpolate(row, scale_factor=factor, mode="nearest")
        tiles.append(row)
    grid = torch.cat(tiles, 0)
    atomic_write_with(Path(ctx.artifact_dir) / filename,
                      lambda tmp: save_image(grid, tmp, nrow=n, padding=2, format="png"))
    return filename


def save_saliency_grid(ctx: EvalContext, filename: str, x: Tensor, scores: Tensor) -> str:
    """Inputs (top row) above their per-pixel saliency scores (bottom row, (n, H, W) or (n, 1, H, W), max-scaled)."""
    if scores.dim() == 3:
        scores = scores.unsqueeze(1)
    return save_grid(ctx, filename, [x[:GRID_IMAGES], to_unit(scores[:GRID_IMAGES])])


def save_curves(ctx: EvalContext, filename: str, curves: Mapping[str, Curve]) -> str:
    """Write curves as JSON: ``{name: {"x": [...], "y": [...], "x_label": str, "y_label": str}}``."""
    payload = {
        name: {"x": list(c.x), "y": list(c.y), "x_label": c.x_label, "y_label": c.y_label}
        for name, c in curves.items()
    }
    text = json.dumps(payload, indent=1, allow_nan=True)
    atomic_write_with(Path(ctx.artifact_dir) / filename,
                      lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return filename
