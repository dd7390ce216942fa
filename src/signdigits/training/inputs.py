"""What the network reads: photos as flattened pixels in [0, 1], and the per-image normalisation.

Its own module because both the network (model.py) and the familiarity check (familiarity.py)
must see an image the same way, and the model holds the check: neither may import the other.
"""

from __future__ import annotations

import torch


def to_inputs(pixels) -> torch.Tensor:
    """uint8 images (n, size, size), a numpy array, -> flattened float32 pixels in [0, 1]: what the network reads."""
    return torch.from_numpy(pixels.reshape(len(pixels), -1)).to(torch.float32) / 255.0


def normalize_each_image(pixels: torch.Tensor) -> torch.Tensor:
    """Every row (one flattened image) to zero mean and unit standard deviation (the unbiased one).

    In two passes (the mean, then the sum of squared deviations): several times faster than
    torch.std's one-pass kernel on rows of pixels, as exact, and row by row, like it.
    """
    centred = pixels - pixels.mean(dim=1, keepdim=True)
    std = (centred.square().sum(dim=1, keepdim=True) / max(pixels.shape[1] - 1, 1)).sqrt()
    return centred / std.clamp_min(1e-3)
