"""prepare and split (issue 2): image decoding, the raw layout, signer recovery, split invariants."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import REAL_RAW, ROOT, run
from PIL import Image

from signdigits.core import data
from signdigits.core.data import (
    PARTS,
    decode_image,
    list_raw_images,
    load_prepared,
    load_split,
    prepare,
    recover_signers,
    split_indices,
    split_metrics,
    write_split,
)
from signdigits.core.errors import PipelineError
from signdigits.core.files import FORMAT_VERSION
from signdigits.core.params import PrepareParams, SplitParams

SIZE = 16


# --- decoding -----------------------------------------------------------------------------------


def half_and_half(size=(40, 40)) -> Image.Image:
    """RGB, left half white, right half black."""
    image = Image.new("RGB", size, "black")
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1]))
    return image


def assert_left_white_right_black(pixels: np.ndarray):
    assert pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint8
    assert pixels[:, : SIZE // 2 - 2].min() > 200
    assert pixels[:, SIZE // 2 + 2 :].max() < 55


def test_decode_rgb_jpeg(tmp_path):
    path = tmp_path / "IMG_1.JPG"
    half_and_half().save(path, format="JPEG")
    assert_left_white_right_black(decode_image(path, SIZE))


def test_decode_cmyk_jpeg(tmp_path):
    path = tmp_path / "IMG_2.JPG"
    half_and_half().convert("CMYK").save(path, format="JPEG")
    assert Image.open(path).mode == "CMYK"
    assert_left_white_right_black(decode_image(path, SIZE))


def test_decode_grayscale_png(tmp_path):
    path = tmp_path / "IMG_3.png"
    half_and_half().convert("L").save(path)
    assert Image.open(path).mode == "L"
    assert_left_white_right_black(decode_image(path, SIZE))


def test_decode_rgba_png_makes_transparency_white(tmp_path):
    """Black RGB everywhere; the right half fully transparent, so it must come out white."""
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (20, 0, 40, 40))
    path = tmp_path / "IMG_4.png"
    image.save(path)
    pixels = decode_image(path, SIZE)
    assert pixels[:, : SIZE // 2 - 2].max() < 30
    assert pixels[:, SIZE // 2 + 2 :].min() > 225


def test_decode_non_square_is_centre_cropped(tmp_path):
    """80x40: a black band on the outer quarters, which the centre crop of 40x40 removes."""
    image = Image.new("RGB", (80, 40), "white")
    image.paste((0, 0, 0), (0, 0, 20, 40))
    image.paste((0, 0, 0), (60, 0, 80, 40))
    path = tmp_path / "IMG_5.JPG"
    image.save(path, format="JPEG")
    pixels = decode_image(path, SIZE)
    assert pixels.shape == (SIZE, SIZE)
    assert pixels.min() > 200  # only the white centre is left, not squashed


def test_decode_applies_exif_orientation(tmp_path):
    """Stored upright as left-white/right-black with orientation 3 (rotate 180): displayed mirrored."""
    image = half_and_half()
    exif = Image.Exif()
    exif[0x0112] = 3
    path = tmp_path / "IMG_6.JPG"
    image.save(path, format="JPEG", exif=exif)
    pixels = decode_image(path, SIZE)
    assert pixels[:, : SIZE // 2 - 2].max() < 55
    assert pixels[:, SIZE // 2 + 2 :].min() > 200


@pytest.mark.parametrize("kind", ["text", "truncated", "empty"])
def test_decode_refuses_broken_files_naming_them(tmp_path, kind):
    path = tmp_path / "IMG_7.JPG"
    if kind == "text":
        path.write_text("not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        half_and_half((200, 200)).save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PipelineError) as info:
        decode_image(path, SIZE)
    assert str(path) in str(info.value)
    assert "not a readable image" in str(info.value)


def hand_photo_gray() -> np.ndarray:
    """A real hand photo from data/raw as 8-bit grayscale (64 x 64), or a skip where data/raw is absent."""
    photos = sorted((REAL_RAW / "3").glob("*.JPG"))[:1]
    if not photos:
        pytest.skip("data/raw is not checked out (dvc pull)")
    with Image.open(photos[0]) as photo:
        return np.asarray(photo.convert("L").resize((64, 64)))


def test_a_16_bit_photo_reads_like_its_8_bit_copy(tmp_path):
    gray = hand_photo_gray()
    eight, sixteen = tmp_path / "hand8.png", tmp_path / "hand16.png"
    Image.fromarray(gray).save(eight)
    Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I;16") or Image.open(sixteen).mode == "I"
    assert np.array_equal(decode_image(sixteen, SIZE), decode_image(eight, SIZE))
    assert decode_image(sixteen, SIZE).std() > 10  # the hand, not a white square


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_are_scaled_by_their_range(tmp_path, mode):
    """I holds 16-bit values (0..65535) and F floats in 0..1: both read like the 8-bit original."""
    gray = hand_photo_gray()
    values = gray.astype(np.int32) * 257 if mode == "I" else gray.astype(np.float32) / 255
    path = tmp_path / f"hand_{mode}.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == mode
    original = tmp_path / "hand8.png"
    Image.fromarray(gray).save(original)
    assert np.array_equal(decode_image(path, SIZE), decode_image(original, SIZE))


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "IMG_9.JPG"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: decode_image must not
    with pytest.raises(PipelineError, match="not a regular file") as info:
        decode_image(fifo, SIZE)
    assert str(fifo) in str(info.value)


def test_an_image_between_the_bomb_warning_and_error_sizes_is_read_quietly(tmp_path, monkeypatch):
    path = tmp_path / "IMG_8.png"
    half_and_half((40, 40)).save(path)  # 1600 pixels: above a limit of 1000, below the error at twice that
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_left_white_right_black(decode_image(path, SIZE))


# --- prepare on a synthetic tree ----------------------------------------------------------------


@pytest.fixture
def mixed_tree(tmp_path, raw_tree_writer):
    """3 signers of plain JPEGs, plus one odd image each in digits 4 to 7 (numbers after the signers)."""
    raw = tmp_path / "raw"
    raw_tree_writer(raw, per_digit=3, size=20)
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    rgba.paste((10, 10, 10, 255), (0, 0, 15, 30))
    rgba.save(raw / "4" / "IMG_2004.png")
    half_and_half().convert("CMYK").save(raw / "5" / "IMG_2005.JPG", format="JPEG")
    half_and_half().convert("L").save(raw / "6" / "IMG_2006.JPG", format="JPEG")
    half_and_half((60, 24)).save(raw / "7" / "IMG_2007.JPG", format="JPEG")
    return raw


def test_prepare_converts_every_kind_of_image(mixed_tree, tmp_path):
    out = tmp_path / "prepared" / "images.npz"
    metrics = prepare(mixed_tree, out, PrepareParams(image_size=SIZE))
    assert metrics["images"] == 34
    assert metrics["skipped_files"] == 0
    assert metrics["image_size"] == SIZE
    assert metrics["images_per_digit"] == {str(d): 4 if d in (4, 5, 6, 7) else 3 for d in range(10)}
    prepared = load_prepared(out)
    assert prepared.pixels.shape == (34, SIZE, SIZE) and prepared.pixels.dtype == np.uint8
    files = list(prepared.files)
    assert {"4/IMG_2004.png", "5/IMG_2005.JPG", "6/IMG_2006.JPG", "7/IMG_2007.JPG"} <= set(files)
    assert all(prepared.labels[i] == int(f.split("/")[0]) for i, f in enumerate(files))
    rgba = prepared.pixels[files.index("4/IMG_2004.png")]
    assert rgba[:, : SIZE // 2 - 2].max() < 40 and rgba[:, SIZE // 2 + 2 :].min() > 225
    assert_left_white_right_black(prepared.pixels[files.index("5/IMG_2005.JPG")])


def test_prepare_stops_at_a_corrupt_file_naming_it(mixed_tree, tmp_path):
    bad = mixed_tree / "3" / "IMG_2003.JPG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    out = tmp_path / "images.npz"
    with pytest.raises(PipelineError) as info:
        prepare(mixed_tree, out, PrepareParams(image_size=SIZE))
    assert str(bad) in str(info.value)
    assert "on_bad_image: skip" in str(info.value)
    assert not out.exists()


def test_prepare_skips_and_counts_bad_files(mixed_tree, tmp_path):
    (mixed_tree / "3" / "IMG_2003.JPG").write_bytes(b"garbage")
    (mixed_tree / "8" / "notes.txt").write_text("not an image")
    out = tmp_path / "images.npz"
    metrics = prepare(mixed_tree, out, PrepareParams(image_size=SIZE, on_bad_image="skip"))
    assert metrics["skipped_files"] == 2
    assert metrics["images"] == 34
    files = set(load_prepared(out).files)
    assert "3/IMG_2003.JPG" not in files and "8/notes.txt" not in files


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_prepare_treats_a_fifo_as_a_bad_image(mixed_tree, tmp_path, policy):
    os.mkfifo(mixed_tree / "2" / "IMG_2002.JPG")
    out = tmp_path / "images.npz"
    if policy == "fail":
        with pytest.raises(PipelineError, match="IMG_2002.JPG: not a regular file"):
            prepare(mixed_tree, out, PrepareParams(image_size=SIZE))
        return
    metrics = prepare(mixed_tree, out, PrepareParams(image_size=SIZE, on_bad_image="skip"))
    assert metrics["skipped_files"] == 1 and "2/IMG_2002.JPG" not in set(load_prepared(out).files)


def test_prepare_is_deterministic(mixed_tree, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    prepare(mixed_tree, a, PrepareParams(image_size=SIZE))
    prepare(mixed_tree, b, PrepareParams(image_size=SIZE))
    assert a.read_bytes() == b.read_bytes()


def test_prepared_file_carries_the_format_version(mixed_tree, tmp_path):
    out = tmp_path / "images.npz"
    prepare(mixed_tree, out, PrepareParams(image_size=SIZE))
    with np.load(out) as npz:
        assert int(npz["format_version"]) == FORMAT_VERSION


@pytest.mark.integration
@pytest.mark.parametrize("on_bad_image", ["fail", "skip"])
def test_prepare_in_a_process_pool_gives_the_same_file_in_the_same_order(
    mixed_tree, tmp_path, monkeypatch, on_bad_image
):
    (mixed_tree / "8" / "IMG_2008.JPG").write_bytes(b"garbage")
    (mixed_tree / "9" / "IMG_2009.JPG").write_bytes(b"garbage too")
    outcomes = []
    for pool_from in (10**9, 1):  # in this process, then in a pool however few the images
        monkeypatch.setattr(data, "_POOL_MIN_IMAGES", pool_from)
        out = tmp_path / f"{pool_from}.npz"
        try:
            outcomes.append((prepare(mixed_tree, out, PrepareParams(image_size=SIZE, on_bad_image=on_bad_image)),
                             out.read_bytes()))  # fmt: skip
        except PipelineError as e:
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]
    assert "IMG_2008.JPG" in str(outcomes[0]) if on_bad_image == "fail" else outcomes[0][0]["skipped_files"] == 2


# --- the raw layout -----------------------------------------------------------------------------


def raw_tree_with_file_manager_litter(root: Path, raw_tree_writer) -> Path:
    """root/data/raw of 2 signers, plus what macOS and Windows write into photo folders; root has our .dvcignore."""
    raw = root / "data" / "raw"
    raw_tree_writer(raw, per_digit=2)
    shutil.copy2(ROOT / ".dvcignore", root / ".dvcignore")
    (raw / "0" / ".DS_Store").write_bytes(b"\0")
    (raw / "1" / "._IMG_1001.JPG").write_bytes(b"\0")  # a macOS resource fork on a foreign disk
    (raw / "2" / "Thumbs.db").write_bytes(b"\0")
    (raw / ".cache").mkdir()
    (raw / ".cache" / "IMG_1.JPG").write_bytes(b"\0")
    return raw


def test_list_raw_images_skips_what_dvcignore_ignores(tmp_path, raw_tree_writer):
    raw = raw_tree_with_file_manager_litter(tmp_path, raw_tree_writer)
    entries = list_raw_images(raw)
    assert len(entries) == 20
    assert sorted({d for _, d in entries}) == list(range(10))


def test_prepare_reads_exactly_the_files_dvc_hashes(tmp_path, raw_tree_writer):
    """One list, .dvcignore: a file DVC leaves out of data/raw's hash is not read, and every file it hashes is."""
    raw = raw_tree_with_file_manager_litter(tmp_path, raw_tree_writer)
    run(["dvc", "init", "--no-scm", "--quiet"], cwd=tmp_path)
    every_file = sorted(p.relative_to(tmp_path).as_posix() for p in raw.rglob("*") if p.is_file())
    checked = run(["dvc", "check-ignore", "--stdin"], cwd=tmp_path, check=False, input="\n".join(every_file) + "\n")
    ignored_by_dvc = set(checked.stdout.split())
    read_by_prepare = {path.relative_to(tmp_path).as_posix() for path, _ in list_raw_images(raw)}
    assert ignored_by_dvc == {"data/raw/0/.DS_Store", "data/raw/1/._IMG_1001.JPG", "data/raw/2/Thumbs.db",
                              "data/raw/.cache/IMG_1.JPG"}  # fmt: skip
    assert read_by_prepare == set(every_file) - ignored_by_dvc


def test_without_a_dvcignore_prepare_reads_what_dvc_would_hash(tmp_path, raw_tree_writer):
    raw = tmp_path / "raw"
    raw_tree_writer(raw, per_digit=2)
    (raw / "0" / ".DS_Store").write_bytes(b"\0")
    assert (raw / "0" / ".DS_Store") in [path for path, _ in list_raw_images(raw)]  # then a bad image, named


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing", "folder not found"),
        ("empty", "no digit folders"),
        ("empty digit", "digit folder holds no images"),
        ("letter folder", "label folder is not a digit 0-9"),
        ("two-digit folder", "label folder is not a digit 0-9"),
    ],
)
def test_list_raw_images_checks_the_layout(tmp_path, raw_tree_writer, breakage, message):
    raw = tmp_path / "raw"
    if breakage == "empty":
        raw.mkdir()
    elif breakage != "missing":
        raw_tree_writer(raw, per_digit=2)
        folder = {"empty digit": "5", "letter folder": "a", "two-digit folder": "10"}[breakage]
        if breakage == "empty digit":
            for f in (raw / "5").iterdir():
                f.unlink()
        else:
            (raw / folder).mkdir()
            (raw / "0" / "IMG_1000.JPG").rename(raw / folder / "IMG_1000.JPG")
    with pytest.raises(PipelineError, match=message) as info:
        list_raw_images(raw)
    assert str(raw) in str(info.value)


# --- signer recovery ----------------------------------------------------------------------------


def test_recover_signers_splits_where_the_digit_stops_increasing():
    files = ["0/IMG_10.JPG", "1/IMG_11.JPG", "3/IMG_13.JPG", "0/IMG_14.JPG", "2/IMG_15.JPG", "1/IMG_16.JPG"]
    labels = np.array([0, 1, 3, 0, 2, 1])
    signers = recover_signers(files, labels)
    assert list(signers) == [0, 0, 0, 1, 1, 2]


def test_recover_signers_sorts_by_number_not_by_folder():
    files = ["0/IMG_20.JPG", "0/IMG_9.JPG", "1/IMG_21.JPG", "1/IMG_10.JPG"]
    labels = np.array([0, 0, 1, 1])
    signers = recover_signers(files, labels)
    assert signers[1] == signers[3] != signers[0] == signers[2]


def test_recover_signers_file_without_number_is_its_own_group():
    files = ["0/IMG_1.JPG", "1/IMG_2.JPG", "2/photo.JPG", "3/other.JPG"]
    signers = recover_signers(files, np.array([0, 1, 2, 3]))
    assert signers[0] == signers[1]
    assert len({signers[0], signers[2], signers[3]}) == 3


def test_recover_signers_on_a_synthetic_tree(tmp_path, raw_tree_writer):
    raw = tmp_path / "raw"
    raw_tree_writer(raw, per_digit=7)
    metrics = prepare(raw, tmp_path / "images.npz", PrepareParams(image_size=SIZE))
    assert metrics["signers"] == 7
    prepared = load_prepared(tmp_path / "images.npz")
    for signer in np.unique(prepared.signers):
        assert sorted(prepared.labels[prepared.signers == signer]) == list(range(10))


def file_numbers(files) -> np.ndarray:
    return np.array([int(re.search(r"(\d+)(?!.*\d)", Path(f).stem)[1]) for f in files])


def test_real_data_signer_count(real_prepared):
    prepared, metrics = real_prepared
    assert metrics["images"] == 2062
    assert len(prepared.labels) == 2062
    assert 215 <= metrics["signers"] <= 225
    assert metrics["signers"] == len(np.unique(prepared.signers))


def test_real_data_no_group_mixes_two_signers(real_prepared):
    """Within a group, sorted by file number: digits strictly increase and numbers are (nearly) consecutive."""
    prepared, _ = real_prepared
    numbers = file_numbers(prepared.files)
    for signer in np.unique(prepared.signers):
        idx = np.flatnonzero(prepared.signers == signer)
        idx = idx[np.argsort(numbers[idx], kind="stable")]
        digits, nums = prepared.labels[idx], numbers[idx]
        assert (np.diff(digits) > 0).all(), f"group {signer}: digits {digits} by number {nums}"
        # the largest gap in the real data is 5 (IMG_5549 -> IMG_5554, one signer's 1 and 2)
        assert (np.diff(nums) <= 5).all(), f"group {signer}: numbers {nums}"
        assert len(idx) <= 10


def test_real_data_groups_are_contiguous_in_number_order(real_prepared):
    """Sorted by number, each group is one run: a group never resumes after another began."""
    prepared, _ = real_prepared
    order = np.argsort(file_numbers(prepared.files), kind="stable")
    runs = prepared.signers[order]
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    assert len(starts) == len(np.unique(runs))


# --- split invariants on the real data ----------------------------------------------------------


@pytest.fixture(scope="module")
def real_splits(real_prepared):
    prepared, _ = real_prepared
    cache = {}

    def get(strategy="signer", seed=0, fractions=(0.70, 0.15, 0.15)):
        key = (strategy, seed, fractions)
        if key not in cache:
            params = SplitParams(strategy, *fractions, seed=seed)
            cache[key] = split_indices(prepared.labels, prepared.signers, params)
        return cache[key]

    return get


CASES = [("signer", 0, (0.70, 0.15, 0.15)), ("signer", 3, (0.6, 0.2, 0.2)), ("random", 0, (0.70, 0.15, 0.15))]


@pytest.mark.parametrize("strategy, seed, fractions", CASES)
def test_split_parts_are_disjoint_and_complete(real_prepared, real_splits, strategy, seed, fractions):
    prepared, _ = real_prepared
    parts = real_splits(strategy, seed, fractions)
    assert set(parts) == set(PARTS)
    everything = np.concatenate([parts[p] for p in PARTS])
    assert len(everything) == len(prepared.labels)
    assert np.array_equal(np.sort(everything), np.arange(len(prepared.labels)))
    for p in PARTS:
        assert np.array_equal(parts[p], np.unique(parts[p]))  # sorted, no repeats


@pytest.mark.parametrize("strategy, seed, fractions", CASES)
def test_split_is_stratified_within_one_image_per_digit(real_prepared, real_splits, strategy, seed, fractions):
    prepared, _ = real_prepared
    parts = real_splits(strategy, seed, fractions)
    per_digit = np.bincount(prepared.labels, minlength=10)
    for name, fraction in zip(PARTS, fractions, strict=True):
        counts = np.bincount(prepared.labels[parts[name]], minlength=10)
        off = np.abs(counts - fraction * per_digit)
        assert off.max() <= 1 + 1e-9, f"{strategy} seed {seed} {name}: {counts} vs {fraction * per_digit}"


@pytest.mark.parametrize("seed", [0, 3])
def test_signer_split_keeps_every_signer_in_one_part(real_prepared, real_splits, seed):
    prepared, _ = real_prepared
    fractions = (0.70, 0.15, 0.15) if seed == 0 else (0.6, 0.2, 0.2)
    parts = real_splits("signer", seed, fractions)
    signer_sets = [set(prepared.signers[parts[p]]) for p in PARTS]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not signer_sets[a] & signer_sets[b]
    metrics = split_metrics(prepared, parts, SplitParams("signer", *fractions, seed=seed))
    assert metrics["audit"]["signers_in_several_parts"] == 0
    assert sum(metrics["sizes"].values()) == len(prepared.labels)
    assert sum(metrics["signers"].values()) == len(np.unique(prepared.signers))


def test_random_split_mixes_signers(real_prepared, real_splits):
    """The control: without grouping, signers do land in several parts (so the audit can fail)."""
    prepared, _ = real_prepared
    parts = real_splits("random", 0)
    metrics = split_metrics(prepared, parts, SplitParams("random"))
    assert metrics["audit"]["signers_in_several_parts"] > 50


@pytest.mark.parametrize("strategy", ["signer", "random"])
def test_split_same_seed_same_split_other_seed_other_split(real_prepared, real_splits, strategy):
    prepared, _ = real_prepared
    first = real_splits(strategy, 0)
    params = SplitParams(strategy, seed=0)
    again = split_indices(prepared.labels, prepared.signers, params)  # recomputed, not cached
    assert all(np.array_equal(first[p], again[p]) for p in PARTS)
    other = split_indices(prepared.labels, prepared.signers, SplitParams(strategy, seed=1))
    assert not all(np.array_equal(first[p], other[p]) for p in PARTS)


# --- split files --------------------------------------------------------------------------------


def test_split_file_round_trip_and_index_check(tmp_path):
    parts = {"train": np.array([0, 2, 4]), "val": np.array([1]), "test": np.array([3])}
    path = tmp_path / "split.npz"
    write_split(path, parts)
    loaded = load_split(path, n_images=5)
    assert all(np.array_equal(loaded[p], parts[p]) for p in PARTS)
    with pytest.raises(PipelineError, match="indices do not match data/prepared"):
        load_split(path, n_images=4)


def test_old_format_version_is_refused(tmp_path):
    path = tmp_path / "split.npz"
    np.savez(path, format_version=np.array(0), train=np.arange(3), val=np.arange(1), test=np.arange(1))
    with pytest.raises(PipelineError) as info:
        load_split(path, n_images=5)
    assert f"format 0, expected {FORMAT_VERSION}" in str(info.value)
    assert "dvc repro" in str(info.value)


def test_split_refuses_to_write_an_empty_part():
    """Two signers cannot fill three parts: a clear error, not an empty val part that breaks training later."""
    labels = np.tile(np.arange(10), 2)
    signers = np.repeat([0, 1], 10)
    with pytest.raises(PipelineError) as info:
        split_indices(labels, signers, SplitParams())
    message = str(info.value)
    assert "would be empty" in message and "20 images from 2 signers" in message and "0.7/0.15/0.15" in message
    with pytest.raises(PipelineError, match="would be empty: 20 images are too few"):
        split_indices(labels, signers, SplitParams(strategy="random"))
    labels = np.tile(np.arange(10), 10)  # ten signers: enough for every part
    parts = split_indices(labels, np.repeat(np.arange(10), 10), SplitParams())
    assert all(len(parts[p]) for p in PARTS)


def test_foreign_npz_with_a_non_numeric_version_is_refused(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, format_version=np.array("v2"), pixels=np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(PipelineError, match="written by another version"):
        load_prepared(path)


# --- JPEG draft (prepare.jpeg_draft, off by default) ------------------------------------------------


def test_jpeg_draft_reads_a_large_photo_a_level_apart_and_leaves_small_ones_as_they_are(tmp_path):
    """Draft decodes a large JPEG at reduced scale (still 4x the target): nearly the full decode's pixels."""
    (shipped,) = sorted((REAL_RAW / "3").glob("*"))[:1]
    with Image.open(shipped) as image:
        big = image.convert("RGB").resize((2016, 1512), Image.Resampling.BICUBIC)
    big.save(tmp_path / "phone.jpg", quality=92)
    full, drafted = decode_image(tmp_path / "phone.jpg", 28), decode_image(tmp_path / "phone.jpg", 28, jpeg_draft=True)
    assert np.abs(full.astype(int) - drafted).mean() < 1.0  # a level apart on average, out of 255
    assert not np.array_equal(full, drafted)  # it did decode at another scale
    # a photo that cannot shrink while staying 4x the target decodes exactly as without draft
    assert np.array_equal(decode_image(shipped, 28), decode_image(shipped, 28, jpeg_draft=True))
    png = tmp_path / "photo.png"
    big.save(png)  # draft is for JPEGs only
    assert np.array_equal(decode_image(png, 28), decode_image(png, 28, jpeg_draft=True))


def test_array_files_have_fixed_zip_headers_whatever_the_python(tmp_path):
    """np.savez's forced ZIP64 headers came out differently from CPython 3.11.2 and 3.11.7: ours are plain and fixed."""
    import zipfile

    from signdigits.core.files import read_arrays, write_arrays

    pixels = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    path = write_arrays(tmp_path / "a.npz", pixels=pixels, files=np.array(["0/IMG_1.JPG", "1/IMG_2.JPG"]))
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    assert [e.filename for e in entries] == ["format_version.npy", "pixels.npy", "files.npy"]
    for entry in entries:
        assert entry.date_time == (1980, 1, 1, 0, 0, 0) and entry.create_system == 3
        assert entry.extract_version == 20 and entry.extra == b""  # no ZIP64 fields
        assert entry.compress_type == zipfile.ZIP_DEFLATED
    raw = path.read_bytes()
    assert raw[4:6] == (20).to_bytes(2, "little")  # the first local header: version needed 2.0, not 4.5
    arrays = read_arrays(path, ("pixels", "files"))
    assert np.array_equal(arrays["pixels"], pixels) and list(arrays["files"]) == ["0/IMG_1.JPG", "1/IMG_2.JPG"]
    assert write_arrays(tmp_path / "b.npz", pixels=pixels, files=arrays["files"]).read_bytes() == raw
