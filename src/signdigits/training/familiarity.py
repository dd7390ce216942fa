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

That pixel score is blind to the network: photos of a hand on a plain wall by another person pass
it and are read wrong (issue 32). So the check a model carries (`ModelCheck`) adds two of the
network's own signals, fitted on the same training photos:
- the Mahalanobis distance of the network's penultimate features from the nearest class mean
  (one covariance shared by the classes, from the training features): inputs the network
  represents unlike any digit it learned;
- one minus the top probability: where the network itself is unsure.
Each signal is put on the validation photos' scale (z-score) and the score is the largest of the
three, so one strong signal is not diluted by two quiet ones. studies/foreign.py measures it on
photos from elsewhere (studies/README.md).

The threshold is a percentile of the validation photos' scores, kept with the check, so that
changing the percentile never retrains anything: predict and evaluate apply it.

Everything here computes in float64 numpy, not torch, so that every x86-64 CPU stores the same bits:
torch sends float64 matrix products and decompositions to MKL's BLAS and LAPACK, and elementwise
square roots and logs to MKL's vector math, whose results differ between Intel and AMD processors
(docs/reproducibility.md, "Why the same bits"). The network's features and probabilities come from
its float32 forward pass (as reproducible as its outputs); all the check's own arithmetic on them
(covariance, whitening, distances) is float64 numpy too.
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


CHECK_VERSION = 2  # inside the model file's "familiarity": 2 adds the network's signals (1: pixels only, unmarked)
SIGNALS = ("pixels", "features", "unsure")  # the pixel score, the feature distance, one minus the top probability


@dataclass
class ModelCheck:
    """A model's familiarity check: the pixel score and the network's own signals, each standardised on
    the validation photos, combined as their maximum (float64)."""

    pixels: Familiarity
    feature_means: np.ndarray  # (classes, f) each class's mean penultimate features, whitened
    feature_whitening: np.ndarray  # (f, f) maps features to coordinates of unit shared class covariance
    signal_mean: np.ndarray  # (3,) mean of each signal on the validation photos
    signal_std: np.ndarray  # (3,) their standard deviations
    val_scores: np.ndarray  # (n_val,) combined scores of the validation photos: where the threshold comes from

    def signals(self, pixels, features, top_probability) -> np.ndarray:
        """(n, 3) raw signals: pixel score, log distance to the nearest class in feature space, 1 - top probability.

        pixels: flattened, in [0, 1]; features: (n, f) the network's penultimate features; top_probability: (n,).
        """
        whitened = _matmul(_float64(features), self.feature_whitening)
        nearest = np.min([np.square(whitened - mean).sum(axis=1) for mean in self.feature_means], axis=0)
        distance = 0.5 * np.log(np.maximum(nearest, 1e-24))
        return np.stack([self.pixels.scores(pixels), distance, 1.0 - _float64(top_probability)], axis=1)

    def scores(self, pixels, features, top_probability) -> np.ndarray:
        """One number per image: the largest of its validation-standardised signals (higher: less familiar)."""
        return ((self.signals(pixels, features, top_probability) - self.signal_mean) / self.signal_std).max(axis=1)

    def threshold(self, percentile: float) -> float:
        """Scores above this are unfamiliar: `percentile` percent of the validation photos lie at or below it."""
        return float(np.percentile(self.val_scores, percentile))

    def to_payload(self) -> dict:
        arrays = {name: torch.from_numpy(getattr(self, name)) for name in MODEL_ARRAYS}
        return {"version": CHECK_VERSION, "pixels": self.pixels.to_payload(), **arrays}

    @classmethod
    def from_payload(cls, payload: dict, n_classes: int, n_features: int) -> ModelCheck:
        """The check from a model file, its shapes checked against the network's classes and feature width."""
        if payload.get("version") != CHECK_VERSION:
            raise ValueError(f"familiarity check of version {payload.get('version', 1)!r}, expected {CHECK_VERSION}")
        arrays = (payload[name].to(torch.float64).numpy() for name in MODEL_ARRAYS)
        check = cls(Familiarity.from_payload(payload["pixels"]), *arrays)
        shapes = [getattr(check, name).shape for name in MODEL_ARRAYS[:-1]]
        expected = [(n_classes, n_features), (n_features, n_features), (3,), (3,)]
        if shapes != expected or check.val_scores.ndim != 1:
            raise ValueError(f"familiarity check of inconsistent shapes {shapes}, expected {expected} and scores")
        return check


MODEL_ARRAYS = tuple(field.name for field in fields(ModelCheck)[1:])  # every field but the pixel check


def fit_model_check(
    pixel_check: Familiarity, train_features, train_labels, val_pixels, val_features, val_top_probability
) -> ModelCheck:
    """The network's signals fitted on the training features; every signal standardised on the validation photos.

    Features: the network's penultimate features (n, f) of the training and validation photos; labels: the
    training photos' class indices 0..k-1; val_top_probability: the network's top probability per val photo.
    """
    features, labels = _float64(train_features), np.asarray(train_labels)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    residuals = features - means[np.searchsorted(classes, labels)]
    covariance = _matmul(residuals.T, residuals) / max(len(features) - len(classes), 1)
    # a small ridge: a unit silent on every training photo still gets a finite (large) scale
    covariance += np.eye(len(covariance)) * 1e-6 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    variances, axes = _on_openblas(np.linalg.eigh, covariance)
    axes = axes * np.where(axes.sum(axis=0) < 0, -1.0, 1.0)  # a fixed sign per axis
    whitening = axes / np.sqrt(np.maximum(variances, 1e-12))
    unscaled = {"signal_mean": np.zeros(3), "signal_std": np.ones(3), "val_scores": np.empty(0)}
    check = ModelCheck(pixel_check, _matmul(means, whitening), whitening, **unscaled)
    signals = check.signals(val_pixels, val_features, val_top_probability)
    check.signal_mean, check.signal_std = signals.mean(axis=0), np.maximum(signals.std(axis=0, ddof=1), 1e-6)
    check.val_scores = check.scores(val_pixels, val_features, val_top_probability)
    return check
