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

Everything here computes in float64 numpy, not torch, so that every x86-64 CPU stores the same bits:
torch sends float64 matrix products and decompositions to MKL's BLAS and LAPACK, and elementwise
square roots and logs to MKL's vector math, whose results differ between Intel and AMD processors
(docs/reproducibility.md, "Why the same bits").
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
    """Everything needed to score images: standardisation, principal axes, and the validation scores (float64)."""

    normalize_images: bool
    mean: np.ndarray  # (d,) per-pixel mean of the training images, after per-image normalisation if any
    std: np.ndarray  # (d,) per-pixel std, the same way
    components: np.ndarray  # (k, d) principal axes of the standardised training images
    variances: np.ndarray  # (k,) variance of the training images along each axis
    photo_mean: np.ndarray  # (3,) mean brightness, log contrast and log sharpness of the training photos
    photo_precision: np.ndarray  # (3, 3) the inverse of their covariance
    log_mean: np.ndarray  # (3,) mean of the three log distances on the training images
    log_std: np.ndarray  # (3,) their standard deviations
    val_scores: np.ndarray  # (n_val,) scores of the validation images: where the threshold comes from

    def standardise(self, pixels: np.ndarray) -> np.ndarray:
        """Flattened float64 pixels in [0, 1] -> what the network's first layer sees."""
        if self.normalize_images:
            pixels = _normalize_each_image(pixels)
        return (pixels - self.mean) / self.std

    def distances(self, pixels) -> np.ndarray:
        """(n, 3) logs: Mahalanobis distance inside the subspace, RMS reconstruction error outside it,
        Mahalanobis distance of the photo statistics. `pixels`: flattened, in [0, 1] (tensor or array)."""
        pixels = _float64(pixels)
        z = self.standardise(pixels)
        projected = _matmul(z, self.components.T)
        mahalanobis = np.sqrt((np.square(projected) / self.variances).sum(axis=1))
        reconstruction = np.sqrt(np.square(z - _matmul(projected, self.components)).mean(axis=1))
        photo = photo_statistics(pixels) - self.photo_mean
        photo_distance = np.sqrt((_matmul(photo, self.photo_precision) * photo).sum(axis=1))
        return np.log(np.maximum(np.stack([mahalanobis, reconstruction, photo_distance], axis=1), 1e-12))

    def scores(self, pixels) -> np.ndarray:
        """One number per image (flattened, in [0, 1]): higher is farther from the training photos."""
        mahalanobis, reconstruction, photo = ((self.distances(pixels) - self.log_mean) / self.log_std).T
        return mahalanobis + np.abs(reconstruction) + photo

    def threshold(self, percentile: float) -> float:
        """Scores above this are unfamiliar: `percentile` percent of the validation photos lie at or below it."""
        return float(np.percentile(self.val_scores, percentile))

    def to_payload(self) -> dict:
        """Plain tensors and data for the model file."""
        return {"normalize_images": self.normalize_images} | {
            name: torch.from_numpy(getattr(self, name)) for name in PAYLOAD_ARRAYS
        }

    @classmethod
    def from_payload(cls, payload: dict) -> Familiarity:
        check = cls(
            bool(payload["normalize_images"]), *(payload[name].to(torch.float64).numpy() for name in PAYLOAD_ARRAYS)
        )
        k, d = check.components.shape
        shapes = [getattr(check, name).shape for name in PAYLOAD_ARRAYS if name not in ("components", "val_scores")]
        if shapes != [(d,), (d,), (k,), (3,), (3, 3), (3,), (3,)] or check.val_scores.ndim != 1:
            raise ValueError(f"familiarity check of inconsistent shapes ({k} axes of {d} pixels)")
        return check


PAYLOAD_ARRAYS = tuple(field.name for field in fields(Familiarity)[1:])  # every field but normalize_images


def require_components_fit(components: int, n_train: int, pixels: int) -> None:
    """familiarity.components below both the training images and the pixels: checked before training."""
    if components >= min(n_train, pixels):
        raise PipelineError(
            f"params.yaml: familiarity.components = {components} is not allowed: "
            f"must be below {min(n_train, pixels)} (the training images' {n_train} and pixels' {pixels})"
        )


def fit_familiarity(train_x, val_x, normalize_images: bool, components: int) -> Familiarity:
    """Fit on the training images only; score the validation images for the threshold.

    Both are flattened pixels in [0, 1] (tensors on any device, or arrays): the same bits on every device
    and CPU, and for any thread count.
    """
    pixels = _float64(train_x)
    n, d = pixels.shape
    require_components_fit(components, n, d)
    x = _normalize_each_image(pixels) if normalize_images else pixels
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0, ddof=1), 1e-3)
    z = (x - mean) / std
    # z has zero mean per pixel; its principal axes are the right singular vectors.
    _, singular, axes = _on_openblas(np.linalg.svd, z, full_matrices=False)
    variances = np.maximum(np.square(singular[:components]) / (n - 1), 1e-6)
    signs = np.where(axes[:components].sum(axis=1) < 0, -1.0, 1.0)  # a fixed sign per axis
    axes = axes[:components] * signs[:, None]
    photo = photo_statistics(pixels)
    centred = photo - photo.mean(axis=0)
    covariance = _matmul(centred.T, centred) / (n - 1)
    photo_precision = _on_openblas(np.linalg.pinv, covariance)  # pinv: a statistic constant in training is left out
    unscaled = {"log_mean": np.zeros(3), "log_std": np.ones(3)}
    check = Familiarity(
        normalize_images, mean, std, axes, variances, photo.mean(axis=0), photo_precision, **unscaled,
        val_scores=np.empty(0),
    )  # fmt: skip
    train_distances = check.distances(pixels)  # puts the three distances on the training images' scale
    check.log_mean, check.log_std = train_distances.mean(axis=0), np.maximum(train_distances.std(axis=0, ddof=1), 1e-6)
    check.val_scores = check.scores(val_x)
    return check


def photo_statistics(pixels) -> np.ndarray:
    """(n, 3): brightness (mean), log contrast (standard deviation) and log sharpness (RMS difference
    of neighbouring pixels) of square images, flattened, in [0, 1]."""
    x = _float64(pixels)
    side = math.isqrt(x.shape[1])
    images = x.reshape(len(x), side, side)
    down, across = np.square(np.diff(images, axis=1)), np.square(np.diff(images, axis=2))
    gradient = down.mean(axis=(1, 2)) + across.mean(axis=(1, 2))
    contrast, sharpness = np.maximum(x.std(axis=1, ddof=1), 1e-3), np.maximum(np.sqrt(gradient), 1e-4)
    return np.stack([x.mean(axis=1), np.log(contrast), np.log(sharpness)], axis=1)


def _float64(pixels) -> np.ndarray:
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu().numpy()
    return np.asarray(pixels, dtype=np.float64)


def _normalize_each_image(pixels: np.ndarray) -> np.ndarray:
    """inputs.normalize_each_image, in numpy: the same formula as the network's."""
    return normalize_each_image(torch.from_numpy(pixels)).numpy()


def _on_openblas(function, *args, **kwargs):
    """function(*args) with numpy's BLAS and LAPACK (OpenBLAS) on one thread: the one path for the
    check's matrix products and decompositions.

    OpenBLAS is pinned to its Haswell kernels (OPENBLAS_CORETYPE, core/kernels.py): one kernel, with
    blocking fixed when OpenBLAS was compiled, and on one thread one summation order, on any CPU.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return function(*args, **kwargs)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64 through `_on_openblas`."""
    return _on_openblas(np.matmul, a, b)
