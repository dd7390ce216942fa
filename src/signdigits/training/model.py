"""The networks: fully connected (MLP) or small convolutional (CNN); their file format is model_file.py.

Both read flattened pixels in [0, 1], standardise them the same way (per image if asked, then per
pixel with training statistics) and end in the same dense head, so the engine, the model file,
evaluate and predict treat them alike; `Arch.kind` says which one a model is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from signdigits.core.limits import dense_inputs
from signdigits.training.inputs import normalize_each_image
from signdigits.training.products import BatchNorm, Conv3x3, Dense

if TYPE_CHECKING:
    import numpy as np

    from signdigits.core.params import TrainParams
    from signdigits.training.familiarity import ModelCheck

KINDS = ("mlp", "cnn")


@dataclass(frozen=True)
class Arch:
    image_size: int
    hidden: tuple[int, ...]  # widths of the dense layers (for a CNN: after its convolutions)
    n_classes: int
    dropout: float
    normalize_images: bool = False  # each image to zero mean and unit std first: evens out lighting
    kind: str = "mlp"  # mlp | cnn
    channels: tuple[int, ...] = ()  # cnn: output channels of each conv block (3x3 conv, batch norm, ReLU, 2x2 max pool)

    @classmethod
    def of(cls, cfg: TrainParams, image_size: int, n_classes: int) -> Arch:
        """The network a training config describes (its hidden, dropout, normalize_images and channels), for
        the data's image size and classes: what the memory estimate (core.limits.training_bytes) reads too."""
        return cls(image_size, cfg.hidden, n_classes, cfg.dropout, cfg.normalize_images, cfg.kind, cfg.channels)

    @property
    def input_size(self) -> int:
        return self.image_size * self.image_size

    @property
    def flat_size(self) -> int:
        """What the dense layers read: the pixels, or the last conv block's channels times its pooled side."""
        return dense_inputs(self.image_size, self.channels)


class Network(nn.Module):
    """Standardise each pixel with training-set statistics, then conv blocks (a CNN's), then Linear-ReLU-Dropout."""

    def __init__(self, arch: Arch, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.image_size = arch.image_size
        self.normalize_images = arch.normalize_images
        self.register_buffer("mean", mean.reshape(arch.input_size).clone())
        self.register_buffer("std", std.reshape(arch.input_size).clone())
        if arch.kind == "cnn":
            blocks: list[nn.Module] = []
            for before, after in zip((1, *arch.channels), arch.channels, strict=False):
                blocks += [Conv3x3(before, after), BatchNorm(after), nn.ReLU()]
                blocks.append(nn.MaxPool2d(2))
            self.features = nn.Sequential(*blocks, nn.Flatten())
        layers: list[nn.Module] = []
        width = arch.flat_size
        for size in arch.hidden:
            layers += [Dense(width, size), nn.ReLU()]
            if arch.dropout > 0:
                layers.append(nn.Dropout(arch.dropout))
            width = size
        layers.append(Dense(width, arch.n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardize(pixels))

    def standardize(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the learned layers read: each image normalised (if asked), then each pixel standardised.

        Row by row and element by element, so a whole epoch at once gives the numbers batch by batch
        would: the training loop does it once an epoch (engine._epoch_inputs).
        """
        if self.normalize_images:
            pixels = normalize_each_image(pixels)
        return (pixels - self.mean) / self.std

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The learned layers, on standardised pixels: conv blocks (a CNN's), then the dense layers."""
        return self.layers(self._conv_blocks(x))

    def penultimate(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the last linear layer reads: forward's steps up to it (for the familiarity check)."""
        return self.layers[:-1](self._conv_blocks(self.standardize(pixels)))

    def _conv_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """A CNN's conv blocks on standardised pixels, flattened; a fully-connected network's input as it is."""
        if hasattr(self, "features"):
            x = self.features(x.view(len(x), 1, self.image_size, self.image_size))
        return x

    @property
    def feature_width(self) -> int:
        return self.layers[-1].in_features


class Reading(NamedTuple):
    """Classifier.read of some photos: the logits (on the model's device) and the familiarity check's view of
    the network on the CPU, every member's penultimate features side by side and the top probability."""

    logits: torch.Tensor
    features: torch.Tensor  # (n, members x width)
    top: torch.Tensor  # (n,)


class Classifier(nn.Module):
    """One or more networks; with several, the logits are the log of their mean probabilities.

    `familiarity` (None unless the training stage fits it) scores how unlike the training photos an
    input is, from its pixels and the networks' own signals (`familiarity_scores`); it never changes the logits.
    """

    def __init__(self, arch: Arch, classes: list[int], members: list[Network], familiarity: ModelCheck | None = None):
        super().__init__()
        self.arch = arch
        self.classes = list(classes)
        self.members = nn.ModuleList(members)
        self.familiarity = familiarity

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._combined([m(pixels) for m in self.members])

    def _combined(self, member_logits: list[torch.Tensor]) -> torch.Tensor:
        if len(member_logits) == 1:
            return member_logits[0]
        probs = torch.stack([logits.softmax(dim=1) for logits in member_logits]).mean(dim=0)
        return probs.clamp_min(1e-12).log()

    def read(self, pixels: torch.Tensor) -> Reading:
        """The logits and the familiarity check's view of the network (Reading).

        One pass: each member's last layer reads the features, so the logits are forward's, bit for bit.
        Inference mode; the model stays as it was.
        """
        was_training, device = self.training, next(self.parameters()).device
        self.eval()
        with torch.inference_mode():
            x = pixels.to(device)
            features = [m.penultimate(x) for m in self.members]
            logits = self._combined([m.layers[-1](f) for m, f in zip(self.members, features, strict=True)])
            top = logits.softmax(dim=1).max(dim=1).values
        self.train(was_training)
        return Reading(logits, torch.cat(features, dim=1).cpu(), top.cpu())

    def signals(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """read's features and top probability."""
        _, features, top = self.read(pixels)
        return features, top

    @property
    def feature_width(self) -> int:
        return sum(m.feature_width for m in self.members)

    def familiarity_scores(self, pixels: torch.Tensor) -> np.ndarray:
        """The familiarity check's score of each input (flattened pixels in [0, 1]): higher is less familiar."""
        return self.answer(pixels)[1]

    def answer(self, pixels: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The logits and the familiarity scores of flattened pixels in [0, 1], from one pass through the network."""
        logits, features, top = self.read(pixels)
        return logits, self.familiarity.scores(pixels, features, top)


def describe(arch: Arch) -> str:
    """784-128-10 style; a CNN as 28x28-c16-c32-c64-576-10 (its conv channels, then the dense widths)."""
    if arch.kind == "mlp":
        return "-".join(str(n) for n in (arch.input_size, *arch.hidden, arch.n_classes))
    convs = (f"c{c}" for c in arch.channels)
    return "-".join(
        (f"{arch.image_size}x{arch.image_size}", *convs, *map(str, (arch.flat_size, *arch.hidden, arch.n_classes)))
    )
