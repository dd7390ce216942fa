"""The familiarity check (issue 11; the network's signals: issue 32): fitted on training images only,
thresholded on validation, kept in the model file and measured by evaluate on shifted photos
(predict's use of it: test_predict.py; on photos from elsewhere: studies/foreign.py, test_foreign_study.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import fit_check, train_tiny_final_model

from signdigits.core import paths
from signdigits.reporting.familiarity_shifts import (
    SHIFT_COLUMNS,
    SHIFTS,
    measure_familiarity,
    shifted,
    write_shifts_csv,
)
from signdigits.reporting.report import familiarity_section
from signdigits.training.familiarity import (
    MODEL_ARRAYS,
    Familiarity,
    ModelCheck,
    fit_familiarity,
    fit_model_check,
    photo_statistics,
    require_components_fit,
)
from signdigits.training.inputs import to_inputs
from signdigits.training.model import Arch, Classifier, Network
from signdigits.training.model_file import load_model, model_bytes, save_model

CHECK_TENSORS = ("mean", "std", "components", "variances", "photo_mean", "photo_precision", "log_mean", "log_std")


def test_the_check_is_fitted_on_training_images_only(tiny_layout, one_thread):
    first = train_tiny_final_model().familiarity
    pixels = tiny_layout.pixels.copy()
    pixels[60:] = 255 - pixels[60:]  # other val and test images, the same training images
    from signdigits.core.files import write_arrays

    write_arrays(paths.PREPARED, pixels=pixels, labels=tiny_layout.labels, signers=np.arange(120) // 10,
                 files=tiny_layout.files)  # fmt: skip
    second = train_tiny_final_model().familiarity
    for name in CHECK_TENSORS:
        assert np.array_equal(getattr(first.pixels, name), getattr(second.pixels, name)), name
    for name in ("feature_means", "feature_whitening"):  # the network's signals: fitted on training photos too
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert not np.array_equal(first.val_scores, second.val_scores)  # the threshold does follow val
    assert not np.array_equal(first.signal_mean, second.signal_mean)  # and so does the signals' scale


def test_threshold_is_the_percentile_of_validation_scores():
    rng = np.random.default_rng(0)
    train, val = torch.rand(200, 64, generator=torch.Generator().manual_seed(0)), torch.from_numpy(rng.random((80, 64)))
    check = fit_familiarity(train, val.float(), normalize_images=True, components=10)
    val_scores = check.scores(val.float())
    np.testing.assert_allclose(check.val_scores, val_scores)
    for percentile in (80.0, 97.5):
        assert check.threshold(percentile) == pytest.approx(np.percentile(val_scores, percentile))
        assert (val_scores > check.threshold(percentile)).mean() == pytest.approx(1 - percentile / 100, abs=1 / 80)


def test_exposure_and_blur_raise_the_score_though_the_network_cannot_see_exposure(tiny_layout):
    """The network standardises each image, so its view of a photo at half the light is unchanged;
    the photo statistics (brightness, contrast, sharpness) see it, and see blur."""
    x = to_inputs(tiny_layout.pixels)
    check = fit_familiarity(x[:60], x[60:90], normalize_images=True, components=5)
    photos = x[90:]
    dim = photos * 0.5
    side = tiny_layout.pixels.shape[1]
    blurred = torch.nn.functional.avg_pool2d(photos.reshape(-1, 1, side, side), 3, stride=1, padding=1,
                                             count_include_pad=False).reshape(len(photos), -1)  # fmt: skip
    brightness, contrast, sharpness = (photo_statistics(dim) - photo_statistics(photos)).T
    assert (brightness < 0).all() and np.allclose(contrast, np.log(0.5))
    assert (photo_statistics(blurred)[:, 2] < photo_statistics(photos)[:, 2]).all()  # less sharp
    # the two distances in the network's view do not move at half the light; the photo distance grows
    np.testing.assert_allclose(check.distances(dim)[:, :2], check.distances(photos)[:, :2], atol=1e-9)
    assert (check.distances(dim)[:, 2] > check.distances(photos)[:, 2]).all()
    threshold = check.threshold(97.5)
    assert (check.scores(dim) > threshold).mean() > (check.scores(photos) > threshold).mean()
    assert (check.scores(blurred) > threshold).mean() > (check.scores(photos) > threshold).mean()


def test_a_check_of_inconsistent_shapes_is_refused():
    check = fit_familiarity(torch.rand(30, 16), torch.rand(10, 16), normalize_images=False, components=3)
    payload = check.to_payload()
    assert Familiarity.from_payload(payload).photo_precision.shape == (3, 3)
    for name, wrong in (("photo_mean", torch.zeros(2)), ("log_std", torch.ones(2)), ("mean", torch.zeros(15))):
        with pytest.raises(ValueError, match="inconsistent shapes"):
            Familiarity.from_payload({**payload, name: wrong})


def test_too_many_components_is_a_user_error():
    from signdigits.core.errors import PipelineError

    require_components_fit(59, 60, 784)  # below both the training images and the pixels
    with pytest.raises(PipelineError, match=r"familiarity.components = 60 is not allowed: must be below 60"):
        require_components_fit(60, 60, 784)
    with pytest.raises(PipelineError, match="familiarity.components = 64 is not allowed"):
        fit_familiarity(torch.rand(100, 64), torch.rand(10, 64), normalize_images=False, components=64)


def small_model(hidden=(16,), members: int = 1, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    arch = Arch(image_size=8, hidden=hidden, n_classes=10, dropout=0.0, normalize_images=True)
    nets = [Network(arch, torch.zeros(64), torch.ones(64)) for _ in range(members)]
    return Classifier(arch, list(range(10)), nets).eval()


def test_the_check_survives_the_model_file_and_changes_no_prediction(tmp_path, one_thread):
    model = small_model(members=2)
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(1))
    save_model(model, tmp_path / "plain.pt")
    model.familiarity = fit_check(model, x[:40], np.arange(40) % 10, x[40:], normalize_images=True, components=6)
    save_model(model, tmp_path / "checked.pt")
    plain, checked = load_model(tmp_path / "plain.pt"), load_model(tmp_path / "checked.pt")
    assert plain.familiarity is None
    for name in (*CHECK_TENSORS, "val_scores"):
        assert np.array_equal(getattr(checked.familiarity.pixels, name), getattr(model.familiarity.pixels, name)), name
    for name in MODEL_ARRAYS:
        assert np.array_equal(getattr(checked.familiarity, name), getattr(model.familiarity, name)), name
    assert checked.familiarity.feature_whitening.shape == (32, 32)  # both members' 16 features side by side
    with torch.inference_mode():
        assert torch.equal(plain(x), checked(x))
    np.testing.assert_array_equal(checked.familiarity_scores(x), model.familiarity_scores(x))


def test_the_threshold_comes_from_the_validation_scores_of_the_combined_check(one_thread):
    model = small_model()
    x = torch.rand(140, 64, generator=torch.Generator().manual_seed(2))
    check = fit_check(model, x[:100], np.arange(100) % 10, x[100:], normalize_images=True, components=6)
    model.familiarity = check
    val_scores = model.familiarity_scores(x[100:])
    np.testing.assert_array_equal(check.val_scores, val_scores)
    z = (check.signals(x[100:], *model.signals(x[100:])) - check.signal_mean) / check.signal_std
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)  # every signal on the validation photos' scale
    np.testing.assert_allclose(val_scores, z.max(axis=1))  # the largest signal decides
    assert check.threshold(90.0) == pytest.approx(np.percentile(val_scores, 90.0))
    # other validation photos move the scale and the threshold, never what was fitted on training photos
    other = fit_check(model, x[:100], np.arange(100) % 10, x[100:] * 0.5, normalize_images=True, components=6)
    assert np.array_equal(other.feature_whitening, check.feature_whitening)
    assert not np.array_equal(other.signal_mean, check.signal_mean)


def test_the_network_signals_react_to_its_features_where_the_pixel_score_cannot():
    """The same pixels with features far from every class: only the feature signal moves, and the
    combined score follows it (one strong signal is not diluted by two quiet ones)."""
    rng = np.random.default_rng(0)
    pixels = torch.rand(200, 64, generator=torch.Generator().manual_seed(3))
    labels = np.arange(200) % 10
    centres = rng.normal(0, 5, size=(10, 12))
    features = centres[labels] + rng.normal(0, 1, size=(200, 12))
    top = rng.uniform(0.8, 1.0, size=200)
    pixel_check = fit_familiarity(pixels[:150], pixels[150:], normalize_images=True, components=6)
    check = fit_model_check(pixel_check, features[:150], labels[:150], pixels[150:], features[150:], top[150:])
    near, far = features[150:], features[150:] + 40.0
    before, after = check.signals(pixels[150:], near, top[150:]), check.signals(pixels[150:], far, top[150:])
    np.testing.assert_array_equal(before[:, [0, 2]], after[:, [0, 2]])
    assert (after[:, 1] > before[:, 1] + 1).all()
    threshold = check.threshold(97.5)
    assert (check.scores(pixels[150:], far, top[150:]) > threshold).all()
    unsure = check.scores(pixels[150:], near, np.full(50, 0.2))  # the network unsure of every photo
    assert (unsure > threshold).all()
    # class-conditional: a photo at another class's mean is familiar, not far from "the" mean
    at_class_means = check.signals(pixels[150:160], centres, top[150:160])[:, 1]
    assert (at_class_means < np.percentile(before[:, 1], 50)).all()


def test_a_model_check_of_inconsistent_shapes_is_refused():
    model = small_model()
    x = torch.rand(60, 64, generator=torch.Generator().manual_seed(4))
    payload = fit_check(model, x[:40], np.arange(40) % 10, x[40:], normalize_images=True, components=4).to_payload()
    assert ModelCheck.from_payload(payload, 10, 16).feature_whitening.shape == (16, 16)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        ModelCheck.from_payload(payload, 10, 15)  # a network of other features
    with pytest.raises(ValueError, match="inconsistent shapes"):
        ModelCheck.from_payload(payload, 2, 16)  # of other classes
    for name, wrong in (("signal_mean", torch.zeros(2)), ("feature_whitening", torch.zeros(16, 15))):
        with pytest.raises(ValueError, match="inconsistent shapes"):
            ModelCheck.from_payload({**payload, name: wrong}, 10, 16)
    with pytest.raises(ValueError, match="version 1"):
        ModelCheck.from_payload({k: v for k, v in payload.items() if k != "version"}, 10, 16)


def test_a_model_file_with_the_pixel_only_check_is_refused_in_one_line(tmp_path, one_thread):
    """Files written before the check read the network hold the pixel check's tensors directly: retrain."""
    import io

    from signdigits.core.errors import PipelineError

    model = small_model()
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(1))
    model.familiarity = fit_check(model, x[:40], np.arange(40) % 10, x[40:], normalize_images=True, components=6)
    payload = torch.load(io.BytesIO(model_bytes(model)), weights_only=True)
    payload["familiarity"] = payload["familiarity"]["pixels"]  # as a file of the pixel-only check held it
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(
        PipelineError, match=r"familiarity check is of version 1 \(1: pixels only.*retrain it with `dvc repro`"
    ):
        load_model(tmp_path / "old.pt")


@pytest.fixture(scope="module")
def real_check(real_prepared):
    """A check fitted on the real training part (an untrained network beside it), and the test part."""
    from signdigits.core.data import split_indices
    from signdigits.core.params import SplitParams

    prepared, _ = real_prepared
    parts = split_indices(prepared.labels, prepared.signers, SplitParams())
    train, val, test = parts["train"], parts["val"], parts["test"]
    size = prepared.pixels.shape[1]
    arch = Arch(image_size=size, hidden=(8,), n_classes=10, dropout=0.0, normalize_images=True)
    torch.manual_seed(0)
    model = Classifier(arch, list(range(10)), [Network(arch, torch.zeros(size * size), torch.ones(size * size))]).eval()
    x = to_inputs(prepared.pixels)
    model.familiarity = fit_check(model, x[train], prepared.labels[train], x[val], normalize_images=True, components=60)
    return model, prepared.pixels[test], prepared.labels[test]


def test_shifts_keep_shape_and_type():
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    for name in SHIFTS:
        out = shifted(name, pixels)
        assert out.shape == pixels.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, pixels), name


@pytest.mark.integration
def test_evaluate_measures_the_check_on_shifted_photos(real_check, tmp_path, monkeypatch):
    model, pixels, digits = real_check
    result = measure_familiarity(model, pixels, digits, percentile=97.5)
    by_shift = {row["shift"]: row for row in result.rows}
    assert list(by_shift) == ["clean", *SHIFTS]
    # the clean test part: near what the threshold promises (2.5%; 310 images, about 4 standard deviations)
    assert 0.0 <= by_shift["clean"]["flagged"] <= 0.08
    # every shift is flagged far more often than the clean photos
    for name in SHIFTS:
        assert by_shift[name]["flagged"] > max(0.5, 5 * by_shift["clean"]["flagged"]), name
        assert by_shift[name]["roc_auc"] > 0.9, name
    assert set(result.headline) == {"test_flagged", "mean_shift_roc_auc"}
    monkeypatch.chdir(tmp_path)
    lines = write_shifts_csv(result).read_text().splitlines()
    assert lines[0] == ",".join(SHIFT_COLUMNS) and len(lines) == 1 + len(result.rows)
    section = familiarity_section(97.5, {"train_best": result.rows})
    assert "| rotated 90 |" in section and "familiarity_shifts.png" in section


def test_the_percentile_is_a_checked_parameter():
    from signdigits.core.errors import PipelineError
    from signdigits.core.params import parse_params

    assert dataclasses.astuple(parse_params({}).familiarity) == (60, 97.5)
    assert parse_params({"familiarity": {"percentile": 99}}).familiarity.percentile == 99.0
    with pytest.raises(PipelineError, match="familiarity.percentile = 100"):
        parse_params({"familiarity": {"percentile": 100}})


def test_evaluate_counts_right_answers_among_the_photos_called_familiar(tiny_layout, one_thread):
    model = train_tiny_final_model()
    pixels, digits = tiny_layout.pixels[tiny_layout.test], tiny_layout.labels[tiny_layout.test]
    result = measure_familiarity(model, pixels, digits, percentile=80.0)
    x = to_inputs(pixels)
    familiar = model.familiarity_scores(x) <= model.familiarity.threshold(80.0)
    with torch.inference_mode():
        right = model(x).argmax(dim=1).numpy() == digits
    clean = result.rows[0]
    assert list(clean) == list(SHIFT_COLUMNS)
    assert clean["right_among_familiar"] == pytest.approx(right[familiar].mean(), abs=1e-6)  # as the CSV keeps it
    assert clean["flagged"] == pytest.approx(1 - familiar.mean(), abs=1e-6)
    assert all(r["right_among_familiar"] == "" for r in result.rows if r["flagged"] == 1.0)  # none to count
