"""Training photos on random backgrounds (training/composite.py, issue 32): masks, compositing, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from signdigits.core.params import Composite, TrainParams
from signdigits.training.composite import composite, hand_masks, otsu_levels
from signdigits.training.engine import Part, train
from signdigits.training.inputs import to_inputs

SIZE = 16
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def light_wall_photos(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 photos like the dataset's: a light wall much darker towards the corners, a darker hand (a block
    at a random place, some texture on it); and each photo's hand as a boolean mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    wall = 235 - 95 * (yy**2 + xx**2) / (2 * ((SIZE - 1) / 2) ** 2)  # 235 in the centre, 140 in the corners
    photos, hands = [], []
    for _ in range(n):
        top, left = rng.integers(2, SIZE // 2, size=2)
        hand = np.zeros((SIZE, SIZE), bool)
        hand[top : top + SIZE // 3, left : left + SIZE // 3] = True
        hand[top + SIZE // 3 :, left + 1 : left + SIZE // 3 - 1] = True  # an arm down to the edge
        level = rng.uniform(70, 120) + rng.normal(0, 8, size=(SIZE, SIZE))
        photos.append(np.clip(np.where(hand, level, wall + rng.normal(0, 3, size=(SIZE, SIZE))), 0, 255))
        hands.append(hand)
    return np.rint(photos).astype(np.uint8), np.array(hands)


def test_otsu_splits_two_levels_between_them():
    rows = np.array([[10] * 5 + [200] * 11, [50] * 8 + [60] * 8], dtype=np.int64)
    levels = otsu_levels(rows)
    assert 10 <= levels[0] < 200 and 50 <= levels[1] < 60


def test_mask_covers_the_hand_and_not_the_darker_corners_of_the_wall():
    photos, hands = light_wall_photos(40)
    masks = hand_masks(to_inputs(photos), SIZE).view(-1, SIZE, SIZE).numpy()
    assert masks.shape == (40, SIZE, SIZE) and masks.min() >= 0 and masks.max() <= 1
    inner_hand = hands & np.roll(hands, 1, 1) & np.roll(hands, -1, 1) & np.roll(hands, 1, 2) & np.roll(hands, -1, 2)
    assert masks[inner_hand].mean() > 0.95  # the hand, away from its soft edge
    wall = ~(hands | np.roll(hands, 1, 1) | np.roll(hands, -1, 1) | np.roll(hands, 1, 2) | np.roll(hands, -1, 2))
    assert masks[wall].mean() < 0.05
    corners = np.zeros((SIZE, SIZE), bool)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    assert masks[:, corners][wall[:, corners]].max() < 0.5  # the darker corners stay wall


def batch(n: int = 12, seed: int = 0):
    photos, _ = light_wall_photos(n, seed)
    x = to_inputs(photos)
    return x, hand_masks(x, SIZE)


def test_composite_keeps_shape_and_range_and_changes_only_the_chosen_photos():
    x, masks = batch()
    out = composite(
        x, masks, SIZE, Composite(share=0.5, zoom_share=0.5, zoom_out=1.8), torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    changed = (out != x).any(dim=1)
    assert 0 < changed.sum() < len(x)  # about half of them
    assert torch.equal(composite(x, masks, SIZE, Composite(share=0.0), torch.Generator().manual_seed(0)), x)


def test_composited_photo_keeps_the_hand_and_replaces_the_wall():
    x, masks = batch()
    out = composite(x, masks, SIZE, Composite(share=1.0), torch.Generator().manual_seed(3))
    hand, wall = masks == 1, masks == 0
    assert torch.allclose(out[hand], x[hand], atol=1e-5)  # the hand's own pixels, unchanged
    assert (out[wall] - x[wall]).abs().mean() > 0.1  # the wall gone: a random background instead


def test_zooming_out_makes_the_hand_smaller():
    _, masks = batch()
    cfg = Composite(share=1.0, zoom_share=1.0, zoom_out=2.0)

    def placed(level: float) -> torch.Tensor:  # every photo all `level`, on the same backgrounds
        return composite(torch.full_like(masks, level), masks, SIZE, cfg, torch.Generator().manual_seed(0))

    placed_masks = placed(1.0) - placed(0.0)  # mask * 1 + (1 - mask) * background, minus the same with 0
    assert placed_masks.min() >= -1e-6
    assert placed_masks.sum() < 0.8 * masks.sum()  # 1 to 2 times smaller: 1/4 to 1 of the area


def test_same_seed_same_bits_other_seed_other_backgrounds():
    x, masks = batch()
    cfg = Composite(share=0.7, zoom_share=0.5, zoom_out=1.8)
    first = composite(x, masks, SIZE, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(first, composite(x, masks, SIZE, cfg, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, composite(x, masks, SIZE, cfg, torch.Generator().manual_seed(8)))


def test_training_with_backgrounds_is_reproducible_and_differs_from_without():
    photos, _ = light_wall_photos(32)
    labels = np.arange(32) % 2
    data = Part.from_arrays(photos, labels, CPU)
    cfg = TrainParams(
        hidden=(), batch_size=8, epochs=2, optimizer="adamw", lr=0.003, normalize_images=True, channels=(4,)
    )
    backgrounds = Composite(share=0.7, zoom_share=0.5, zoom_out=1.8)

    def weights(composite: Composite) -> torch.Tensor:
        model = train(dataclasses.replace(cfg, composite=composite), data, data, [0, 1]).model
        return torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()])

    with_backgrounds = weights(backgrounds)
    assert torch.equal(with_backgrounds, weights(backgrounds))
    assert not torch.equal(with_backgrounds, weights(Composite()))  # share 0: the loop as before


def test_a_composite_trained_models_pixel_score_is_fitted_on_its_composited_photos_thresholded_on_val():
    """The check of a model trained on composite backgrounds: its pixel score fitted on the training photos
    as composited_once lays them (deterministic, and not the plain fit), its network signals on the plain
    photos, and its scale and threshold on the plain validation photos only."""
    from signdigits.training.composite import composited_once
    from signdigits.training.familiarity import fit_familiarity
    from signdigits.training.model import Arch, Classifier, Network
    from signdigits.training.stage import StageData, fit_check

    photos, _ = light_wall_photos(70)
    labels = np.arange(70) % 10
    data = StageData(Part.from_arrays(photos[:50], labels[:50], CPU), Part.from_arrays(photos[50:], labels[50:], CPU),
                     list(range(10)))  # fmt: skip
    torch.manual_seed(0)
    arch = Arch(image_size=SIZE, hidden=(16,), n_classes=10, dropout=0.0, normalize_images=True)
    model = Classifier(arch, list(range(10)), [Network(arch, torch.zeros(SIZE**2), torch.ones(SIZE**2))]).eval()
    backgrounds = Composite(share=0.5, zoom_share=0.5, zoom_out=1.5)
    reads = model.read(data.train.x), model.read(data.val.x)
    plain = fit_check(data, *reads, True, 5)
    first, again = (fit_check(data, *reads, True, 5, backgrounds, seed=3) for _ in range(2))
    laid = fit_familiarity(composited_once(data.train.x, SIZE, backgrounds, 3), data.val.x, True, 5)
    for name in ("mean", "std", "components", "variances", "photo_mean", "photo_precision", "log_mean", "log_std"):
        assert np.array_equal(getattr(first.pixels, name), getattr(again.pixels, name)), name  # the same bits
        assert np.array_equal(getattr(first.pixels, name), getattr(laid, name)), name  # on these photos
    assert not np.array_equal(first.pixels.mean, plain.pixels.mean)  # not the plain photos' fit
    assert not np.array_equal(first.pixels.photo_mean, plain.pixels.photo_mean)
    other_seed = fit_check(data, *reads, True, 5, backgrounds, seed=4)
    assert not np.array_equal(first.pixels.mean, other_seed.pixels.mean)  # the seed draws the backgrounds
    assert np.array_equal(first.feature_means, plain.feature_means)  # the network's signals: plain photos
    assert np.array_equal(first.feature_whitening, plain.feature_whitening)
    # the scale and the threshold: the plain validation photos' scores, nothing composited
    val_scores = first.scores(data.val.x, *model.signals(data.val.x))
    np.testing.assert_array_equal(first.val_scores, val_scores)
    assert first.threshold(90.0) == pytest.approx(np.percentile(val_scores, 90.0))
    # disabled (share 0) is the plain fit, bit for bit: train_best and the study's models are unchanged
    off = fit_check(data, *reads, True, 5, Composite(share=0.0), seed=3)
    assert np.array_equal(off.pixels.mean, plain.pixels.mean) and np.array_equal(off.val_scores, plain.val_scores)
