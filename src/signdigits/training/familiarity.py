"""The familiarity check: how far a photo lies from the training photos, and where "too far" starts.

The network answers every input with some digit, often confidently, even for photos unlike its
training photos (another background, light, framing or focus), and is then mostly wrong. Its
softmax probability does not tell these apart; the distance of the image from the training images
does. The score adds three distances from the training part, each a log put on the training
images' scale so that none dominates:
- inside the top principal components of the standardised training images (standardised as the
  network sees them): the Mahalanobis distance, an unusual mix of usual patterns (dark wall,
  turned hand, small hand);
- outside them: the reconstruction error, patterns the training photos never show (sensor noise),
  or too little of them (a blurred photo), hence its absolute value;
- the photo's brightness, contrast and sharpness (mean, log standard deviation, log gradient
  energy of the raw pixels): their Mahalanobis distance. The network standardises every image, so
  the first two cannot see exposure, and blur hides in them.
On shifted and re-backgrounded validation photos this sum flagged every shift and the fewest right
answers among the combinations tried (studies/choose_familiarity.py).

The threshold is a percentile of the validation photos' scores, kept with the check, so that
changing the percentile never retrains anything: predict and evaluate apply it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from signdigits.core.errors import PipelineError
from signdigits.training.inputs import normalize_each_image


@dataclass
class Familiarity:
    """Everything needed to score images: standardisation, principal axes, and the validation scores."""

    normalize_images: bool
    mean: torch.Tensor  # (d,) per-pixel mean of the training images, after per-image normalisation if any
    std: torch.Tensor  # (d,) per-pixel std, the same way
    components: torch.Tensor  # (k, d) principal axes of the standardised training images
    variances: torch.Tensor  # (k,) variance of the training images along each axis
    photo_mean: torch.Tensor  # (3,) mean brightness, log contrast and log sharpness of the training photos
    photo_precision: torch.Tensor  # (3, 3) the inverse of their covariance
    log_mean: torch.Tensor  # (3,) mean of the three log distances on the training images
    log_std: torch.Tensor  # (3,) their standard deviations
    val_scores: torch.Tensor  # (n_val,) scores of the validation images: where the threshold comes from

    def standardise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Flattened pixels in [0, 1] -> what the network's first layer sees."""
        pixels = pixels.to(torch.float64)
        if self.normalize_images:
            pixels = normalize_each_image(pixels)
        return (pixels - self.mean) / self.std

    @torch.inference_mode()
    def distances(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3) logs: Mahalanobis distance inside the subspace, RMS reconstruction error outside it,
        Mahalanobis distance of the photo statistics."""
        pixels = pixels.cpu().to(torch.float64)
        z = self.standardise(pixels)
        projected = z @ self.components.T
        mahalanobis = (projected.square() / self.variances).sum(dim=1).sqrt()
        reconstruction = (z - projected @ self.components).square().mean(dim=1).sqrt()
        photo = photo_statistics(pixels) - self.photo_mean
        photo_distance = ((photo @ self.photo_precision) * photo).sum(dim=1).sqrt()
        return torch.stack([mahalanobis, reconstruction, photo_distance], dim=1).clamp_min(1e-12).log()

    def scores(self, pixels: torch.Tensor) -> np.ndarray:
        """One number per image (flattened, in [0, 1]): higher is farther from the training photos."""
        mahalanobis, reconstruction, photo = ((self.distances(pixels) - self.log_mean) / self.log_std).unbind(dim=1)
        return (mahalanobis + reconstruction.abs() + photo).numpy()

    def threshold(self, percentile: float) -> float:
        """Scores above this are unfamiliar: `percentile` percent of the validation photos lie at or below it."""
        return float(np.percentile(self.val_scores.numpy(), percentile))

    def to_payload(self) -> dict:
        """Plain tensors and data for the model file."""
        return {
            "normalize_images": self.normalize_images,
            "mean": self.mean,
            "std": self.std,
            "components": self.components,
            "variances": self.variances,
            "photo_mean": self.photo_mean,
            "photo_precision": self.photo_precision,
            "log_mean": self.log_mean,
            "log_std": self.log_std,
            "val_scores": self.val_scores,
        }

    @classmethod
    def from_payload(cls, payload: dict) -> Familiarity:
        tensors = [field.name for field in fields(cls)[1:]]
        check = cls(bool(payload["normalize_images"]), *(payload[name].to(torch.float64) for name in tensors))
        k, d = check.components.shape
        shapes = [getattr(check, name).shape for name in tensors if name not in ("components", "val_scores")]
        if shapes != [(d,), (d,), (k,), (3,), (3, 3), (3,), (3,)] or check.val_scores.ndim != 1:
            raise ValueError(f"familiarity check of inconsistent shapes ({k} axes of {d} pixels)")
        return check


def require_components_fit(components: int, n_train: int, pixels: int) -> None:
    """familiarity.components below both the training images and the pixels: checked before training."""
    if components >= min(n_train, pixels):
        raise PipelineError(
            f"params.yaml: familiarity.components = {components} is not allowed: "
            f"must be below {min(n_train, pixels)} (the training images' {n_train} and pixels' {pixels})"
        )


def fit_familiarity(train_x: torch.Tensor, val_x: torch.Tensor, normalize_images: bool, components: int) -> Familiarity:
    """Fit on the training images only; score the validation images for the threshold.

    Both are flattened pixels in [0, 1]. Computed in float64 on the CPU: the same bits on every device
    (for the same thread count, as the network).
    """
    n, d = train_x.shape
    require_components_fit(components, n, d)
    pixels = train_x.detach().cpu().to(torch.float64)
    x = normalize_each_image(pixels) if normalize_images else pixels
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-3)
    z = (x - mean) / std
    # z has zero mean per pixel; its principal axes are the right singular vectors.
    singular, axes = _portable_linalg(lambda: np.linalg.svd(z.numpy(), full_matrices=False)[1:])
    singular, axes = torch.from_numpy(singular), torch.from_numpy(axes)
    variances = (singular[:components].square() / (n - 1)).clamp_min(1e-6)
    signs = torch.where(axes[:components].sum(dim=1) < 0, -1.0, 1.0).to(torch.float64)  # a fixed sign per axis
    axes = axes[:components] * signs[:, None]
    photo = photo_statistics(pixels)
    # pinv: a statistic constant in training is left out
    photo_precision = torch.from_numpy(_portable_linalg(lambda: np.linalg.pinv(np.cov(photo.numpy().T))))
    unscaled = {"log_mean": torch.zeros(3, dtype=torch.float64), "log_std": torch.ones(3, dtype=torch.float64)}
    check = Familiarity(
        normalize_images, mean, std, axes, variances, photo.mean(dim=0), photo_precision, **unscaled,
        val_scores=torch.empty(0),
    )  # fmt: skip
    train_distances = check.distances(train_x)  # puts the three distances on the training images' scale
    check.log_mean, check.log_std = train_distances.mean(dim=0), train_distances.std(dim=0).clamp_min(1e-6)
    check.val_scores = torch.from_numpy(check.scores(val_x))
    return check


def _portable_linalg(compute):
    """compute() with numpy's LAPACK on one thread: the same bits on any CPU under the portable pin.

    torch's LAPACK (MKL) gave other bits on Intel AVX-512 than on AMD even with MKL_CBWR=COMPATIBLE;
    OpenBLAS pinned to its Haswell kernels (core/kernels.py) on one thread gives the same bits on both.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return compute()


def photo_statistics(pixels: torch.Tensor) -> torch.Tensor:
    """(n, 3): brightness (mean), log contrast (standard deviation) and log sharpness (RMS difference
    of neighbouring pixels) of square images, flattened, in [0, 1]."""
    x = pixels.to(torch.float64)
    side = math.isqrt(x.shape[1])
    images = x.reshape(len(x), side, side)
    gradient = images.diff(dim=1).square().mean(dim=(1, 2)) + images.diff(dim=2).square().mean(dim=(1, 2))
    return torch.stack([x.mean(dim=1), x.std(dim=1).clamp_min(1e-3).log(), gradient.sqrt().clamp_min(1e-4).log()], 1)
