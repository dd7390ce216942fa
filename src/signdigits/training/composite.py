"""Training photos on other backgrounds: the hand cut out of its light wall, laid on a random smooth one.

Why: every training photo shows a hand on the same light wall, so a network learns the wall too and
reads photos taken elsewhere at about 30% (issue 32). Cutting the hand out and compositing it on
random backgrounds, sometimes smaller and off centre, teaches it that the background says nothing.

The masks are computed once, before training, in numpy on the uint8 pixels with exact arithmetic
(sorting, counting, float64 basic operations), so they are the same bits on any CPU. The backgrounds
are drawn from the training loop's seeded CPU generator and built on the device in float32 with
elementwise operations, F.interpolate and F.grid_sample, as `engine.augment` is.

The familiarity check of a model trained so is fitted on the training photos as training lays them
(`composited_once`): its pixel score then knows the backgrounds the network learned to ignore.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WALL_PERCENTILE = 98  # per pixel over the training photos: the wall's light falloff (the hand rarely covers it)
NOISE_CELLS = 4  # a background is a NOISE_CELLS x NOISE_CELLS random field, upsampled smoothly
MAX_CONTRAST = 0.5  # the field's amplitude, at most


def hand_masks(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Soft masks (n, image_size**2) in [0, 1], 1 on the hand, for flattened training pixels in [0, 1].

    Each photo is first divided by the wall's light falloff (the WALL_PERCENTILE-th percentile of
    each pixel over these photos), then thresholded at its own Otsu level: the hand is what is darker.
    """
    pixels = np.rint(x.cpu().numpy() * 255).astype(np.uint8).reshape(len(x), -1)
    wall = np.percentile(pixels, WALL_PERCENTILE, axis=0).clip(min=1.0)
    flat = np.clip(np.rint(pixels * (wall.max() / wall)), 0, 255).astype(np.int64)
    hand = flat <= otsu_levels(flat)[:, None]
    masks = torch.from_numpy(hand.astype(np.float32)).view(len(x), 1, image_size, image_size)
    soft = F.avg_pool2d(masks, 3, stride=1, padding=1, count_include_pad=False)  # soft edges, no jagged cut
    return soft.reshape(len(x), -1).to(x.device)


def otsu_levels(pixels: np.ndarray) -> np.ndarray:
    """Per row of uint8 levels (n, k), Otsu's threshold: the level that best splits it into two classes."""
    n, k = pixels.shape
    hist = np.zeros((n, 256), np.int64)
    np.add.at(hist, (np.repeat(np.arange(n), k), pixels.ravel()), 1)
    below = np.cumsum(hist, axis=1).astype(np.float64)  # pixels at or below each level
    below_sum = np.cumsum(hist * np.arange(256), axis=1).astype(np.float64)
    total = below_sum[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * below - k * below_sum) ** 2 / (below * (k - below))  # between-class variance, scaled
    between[~np.isfinite(between)] = -1.0
    return np.argmax(between, axis=1)


def composite(x: torch.Tensor, masks: torch.Tensor, image_size: int, cfg, rng: torch.Generator) -> torch.Tensor:
    """A batch of flattened images with cfg.share of them on random smooth backgrounds.

    Of those, cfg.zoom_share are first made up to cfg.zoom_out times smaller at a random place
    (the hand whole in the frame). A background: a random level, plus a random field of
    NOISE_CELLS x NOISE_CELLS values upsampled bilinearly, of a random contrast up to MAX_CONTRAST.
    """
    n, side = len(x), image_size
    draws = torch.rand(n, 7, generator=rng)
    field = torch.rand(n, 1, NOISE_CELLS, NOISE_CELLS, generator=rng) * 2 - 1
    draws, field = draws.to(x.device), field.to(x.device)
    chosen = (draws[:, 0] < cfg.share).to(x.dtype)
    zoomed = (draws[:, 1] < cfg.zoom_share).to(x.dtype) * chosen
    scale = 1 + zoomed * draws[:, 2] * (cfg.zoom_out - 1)  # how many times smaller
    room = scale - 1  # how far the smaller image may move and stay whole in the frame
    zeros = torch.zeros_like(scale)
    theta = torch.stack(
        [
            torch.stack([scale, zeros, room * (draws[:, 3] * 2 - 1)], 1),
            torch.stack([zeros, scale, room * (draws[:, 4] * 2 - 1)], 1),
        ],
        dim=1,
    )
    layers = torch.stack([x.view(n, side, side), masks.view(n, side, side)], dim=1)
    grid = F.affine_grid(theta, [n, 2, side, side], align_corners=False)
    image, mask = F.grid_sample(layers, grid, padding_mode="zeros", align_corners=False).unbind(dim=1)
    smooth = F.interpolate(field, size=(side, side), mode="bilinear", align_corners=False).view(n, side, side)
    level, contrast = draws[:, 5].view(n, 1, 1), (draws[:, 6] * MAX_CONTRAST).view(n, 1, 1)
    background = (level + contrast * smooth).clamp(0, 1)
    placed = mask * image + (1 - mask) * background
    keep = chosen.view(n, 1, 1)
    return (keep * placed + (1 - keep) * x.view(n, side, side)).view(n, -1)


def composited_once(x: torch.Tensor, image_size: int, cfg, seed: int) -> torch.Tensor:
    """The training photos (flattened, in [0, 1]) as training lays them: `composite` applied once to all
    of them, from their masks and a CPU generator seeded with `seed`, on the CPU in float32 (the same
    bits on any device the network trained on)."""
    x = x.detach().cpu()
    return composite(x, hand_masks(x, image_size), image_size, cfg, torch.Generator().manual_seed(seed))
