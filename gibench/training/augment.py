"""Training-time data augmentation on whole batches, on the batch's device (``train.augment``).

The seed papers train CIFAR models with torchvision's ``RandomCrop(32, padding=4)`` followed by
``RandomHorizontalFlip()`` (Srinivas & Fleuret, idiap/rethinking-saliency ``train.py``; the PAGs and
off-manifold codes use the same recipe). :func:`crop_flip` is that recipe applied to a whole batch at once with index
arithmetic: the batch is zero-padded once, every image gets its own crop offset and flip, and one advanced-indexing
gather reads all crops (no per-image Python loop, no host synchronization). Choices stated:

* Zero padding is in pixel space: gibench's images are in [0, 1] and the model normalizes inside (its first layer),
  so the padded border is black, as torchvision's default ``fill=0`` on the un-normalized image.
* Offsets are uniform over the 2·padding + 1 positions in each axis (torchvision draws them the same way), the flip
  has probability 1/2; the crop is taken first and flipped after, as the torchvision pipeline does.
* Random numbers come from the generator the trainer passes (its own, on the device, seeded from the job's seed; see
  :mod:`gibench.training.train`), so two runs on the same device give the same batches, and neither the batch order nor
  the regularizers' noise (the global generator) changes when augmentation is turned on.
* Images that are not square work (BlockMNIST's 56×28): the crop keeps each image's size.

Augmentation is the user's choice per dataset: nothing is turned off silently, so ``crop_flip`` on digits also flips
digits; the ``full`` suite uses ``train_per_dataset`` to give MNIST-like data ``augment: none``.

To add an augmentation, write ``def name(x: Tensor, generator: torch.Generator) -> Tensor`` (a batch in, a batch
of the same shape out, on the same device) and add it to :data:`AUGMENTATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gibench.core.errors import ConfigError
from gibench.core.params import did_you_mean

__all__ = ["AUGMENTATIONS", "Augmentation", "apply_crop_flip", "augmentation", "crop_flip", "draw_crop_flip"]

Augmentation = Callable[[Tensor, torch.Generator], Tensor]

#: Padding of :func:`crop_flip`, in pixels (the seed papers' ``RandomCrop(32, padding=4)``).
CROP_PADDING = 4


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image row offsets, column offsets (each in 0..2·padding) and flip flags, on the generator's device."""
    device = generator.device
    rows = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    cols = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flips = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return rows, cols, flips


def apply_crop_flip(x: Tensor, rows: Tensor, cols: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Crop every image of ``x`` (N, C, H, W) at its offsets from the zero-padded batch, then flip where drawn."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    row_index = rows.view(n, 1) + torch.arange(h, device=x.device)  # (N, H)
    columns = torch.arange(w, device=x.device)
    columns = torch.where(flips.view(n, 1), w - 1 - columns, columns)  # a flipped crop reads its columns backwards
    col_index = cols.view(n, 1) + columns  # (N, W)
    return padded[
        torch.arange(n, device=x.device).view(n, 1, 1, 1),
        torch.arange(c, device=x.device).view(1, c, 1, 1),
        row_index.view(n, 1, h, 1),
        col_index.view(n, 1, 1, w),
    ]


def crop_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, per image, on the whole batch."""
    return apply_crop_flip(x, *draw_crop_flip(len(x), CROP_PADDING, generator), padding=CROP_PADDING)


def no_augmentation(x: Tensor, generator: torch.Generator) -> Tensor:
    """The batch as it is (``augment: none``, the default)."""
    return x


#: ``train.augment`` name -> batch function.
AUGMENTATIONS: dict[str, Augmentation] = {
    "none": no_augmentation,
    "crop_flip": crop_flip,
}


def augmentation(name: str) -> Augmentation:
    """The batch function of ``train.augment = name``; a ConfigError listing the choices for an unknown name."""
    if name not in AUGMENTATIONS:
        raise ConfigError(
            f"unknown augmentation train.augment = {name!r}.{did_you_mean(str(name), list(AUGMENTATIONS))} "
            f"Choices: {', '.join(AUGMENTATIONS)}."
        )
    return AUGMENTATIONS[name]
