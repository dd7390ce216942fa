"""The fully-connected network (its file format is model_file.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from signdigits.training.inputs import normalize_each_image

if TYPE_CHECKING:
    from signdigits.training.familiarity import Familiarity


@dataclass(frozen=True)
class Arch:
    image_size: int
    hidden: tuple[int, ...]
    n_classes: int
    dropout: float
    normalize_images: bool = False  # each image to zero mean and unit std first: evens out lighting

    @property
    def input_size(self) -> int:
        return self.image_size * self.image_size


class MLP(nn.Module):
    """Standardise each pixel with training-set statistics, then Linear-ReLU-Dropout blocks."""

    def __init__(self, arch: Arch, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.normalize_images = arch.normalize_images
        self.register_buffer("mean", mean.reshape(arch.input_size).clone())
        self.register_buffer("std", std.reshape(arch.input_size).clone())
        layers: list[nn.Module] = []
        width = arch.input_size
        for size in arch.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if arch.dropout > 0:
                layers.append(nn.Dropout(arch.dropout))
            width = size
        layers.append(nn.Linear(width, arch.n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.normalize_images:
            pixels = normalize_each_image(pixels)
        return self.layers((pixels - self.mean) / self.std)


class Classifier(nn.Module):
    """One or more MLPs; with several, the logits are the log of their mean probabilities.

    `familiarity` (None until train_best fits it) scores how unlike the training photos an input
    is; it never changes the logits.
    """

    def __init__(self, arch: Arch, classes: list[int], members: list[MLP], familiarity: Familiarity | None = None):
        super().__init__()
        self.arch = arch
        self.classes = list(classes)
        self.members = nn.ModuleList(members)
        self.familiarity = familiarity

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](pixels)
        probs = torch.stack([m(pixels).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()


def describe(arch: Arch) -> str:
    """784-128-10 style."""
    return "-".join(str(n) for n in (arch.input_size, *arch.hidden, arch.n_classes))
