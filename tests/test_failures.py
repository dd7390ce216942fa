"""Failure behaviour (issue 6), end to end through the stage entry points.

Every failing stage must exit 2 with one `error: ...` line that names the problem, print no
traceback, and leave the outputs of the previous successful run byte-identical, with no
temporary files behind. The stages run as `python stages/<stage>.py` in a tiny copy of the
repository (see helpers.TinyRepo), as DVC runs them.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, assert_fails_cleanly, stage_env

from signdigits.core import files, workspace
from signdigits.core.errors import PipelineError
from signdigits.core.files import FORMAT_VERSION, write_bytes_atomic
from signdigits.training.stage import require_batch_fits

# --- parameters ---------------------------------------------------------------------------------

PARAM_ERRORS = {
    "unknown optimizer": (
        "train_base",
        {"train_base.optimizer": "rmsprop"},
        ["train_base.optimizer = 'rmsprop'", "choose one of sgd, adam, adamw"],
    ),
    "negative lr": ("train_base", {"train_base.lr": -0.01}, ["train_base.lr = -0.01", "must be > 0"]),
    "batch size 0": ("train_base", {"train_base.batch_size": 0}, ["train_base.batch_size = 0", "must be >= 1"]),
    "fractions": ("split", {"split.train": 0.8}, ["split.train + split.val + split.test = 1.1", "sum to 1"]),
    "binary digit 10": ("train_binary", {"train_binary.digits": [0, 10]}, ["train_binary.digits = [0, 10]", "<= 9"]),
    "binary same digit": (
        "train_binary",
        {"train_binary.digits": [4, 4]},
        ["train_binary.digits = [4, 4]", "two different digits"],
    ),
    "empty grid": ("sweep_exp2", {"exp2.batch_size": []}, ["exp2.batch_size = []", "at least 1 value"]),
    "image size 4": ("prepare", {"prepare.image_size": 4}, ["prepare.image_size = 4", "must be >= 8"]),
    "error in another section": ("prepare", {"train_exp1.optimizer": "sgdd"}, ["train_exp1.optimizer = 'sgdd'"]),
    "unknown key": ("split", {"split.sed": 1}, ["unknown key split.sed", "seed"]),
    "huge seed": (
        "train_base",
        {"train_base.seed": 99999999999999999999999},
        ["train_base.seed = 99999999999999999999999 is not allowed: must be < 2**63"],
    ),
    # the file read strictly: a function of its text rewrites it
    "empty file": ("train_base", lambda text: "", ["the file is empty"]),
    "alias": ("train_base", lambda text: text + "a: &a [1, 1]\nb: &b [*a, *a]\n", ["a = &a is not allowed"]),
    "section missing": ("train_base", lambda text: _without_section(text, "train_base"), ["train_base is missing"]),
}


@pytest.mark.parametrize("stage, change, expected", PARAM_ERRORS.values(), ids=PARAM_ERRORS.keys())
def test_bad_params_stop_the_stage(repo, stage, change, expected):
    """A dict sets keys, as `dvc exp run -S` would; a function rewrites the file's text."""
    if callable(change):
        repo.params_file.write_text(change(repo.params_file.read_text()))
    else:
        repo.set_params(change)
    assert_fails_cleanly(repo, stage, "params.yaml: ", *expected)


def _without_section(text: str, section: str) -> str:
    """params.yaml text without one top-level section (its line and the indented lines under it)."""
    lines, skipping = [], False
    for line in text.splitlines():
        if line.startswith(f"{section}:"):
            skipping = True
            continue
        if skipping and (line.startswith(" ") or not line.strip()):
            continue
        skipping = False
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_require_batch_fits():
    require_batch_fits("train_base.batch_size", 32, 32)
    with pytest.raises(PipelineError) as info:
        require_batch_fits("train_base.batch_size", 33, 32)
    message = str(info.value)
    assert "train_base.batch_size = 33" in message
    assert "larger than the 32 training images" in message


def test_batch_larger_than_the_training_part(repo):
    """Checked once the data is loaded (140 training images here), before any training."""
    repo.set_params({"train_base.batch_size": 1000})
    message = assert_fails_cleanly(repo, "train_base", "train_base.batch_size = 1000", "larger than the 140 training")
    assert "epoch" not in message


def test_familiarity_components_beyond_the_data_stop_before_training(repo):
    repo.set_params({"familiarity.components": 2000})
    message = assert_fails_cleanly(repo, "train_best", "familiarity.components = 2000 is not allowed: must be below")
    assert "epoch" not in message


def test_conv_blocks_that_shrink_the_image_to_nothing_stop_before_training(repo):
    """16x16 photos: four 2x2 poolings leave 1 pixel, a fifth none (torch would fail inside its first batch)."""
    repo.set_params({"train_cnn.channels": [4, 4, 4, 4, 5]})
    message = assert_fails_cleanly(
        repo, "train_cnn", "train_cnn.channels = [4, 4, 4, 4, 5] is not allowed: 5 conv blocks halve the 16x16"
    )
    assert "list at most 4, or raise prepare.image_size" in message and "epoch" not in message
    repo.set_params({"train_cnn.channels": [4, 4, 4, 5], "train_cnn.epochs": 1})
    repo.run("train_cnn", check=True)  # four blocks fit


# --- inputs changed while a stage runs (the end-to-end runs: test_workspace.py) -------------------


def test_stage_inputs_change_only_with_what_dvc_lock_records(tmp_path, monkeypatch):
    """The stage's keys' values (a dotted key alone: familiarity.components, not its section) and its deps' files."""
    monkeypatch.chdir(tmp_path)
    Path("dvc.yaml").write_text("stages:\n  s:\n    cmd: x\n    deps: [d]\n    params: [a, familiarity.components]\n")
    Path("d").mkdir()
    Path("d/f.py").write_text("x = 1\n")
    Path("params.yaml").write_text("a: {lr: 0.001, h: [1, 2]}\nfamiliarity: {components: 60, percentile: 97.5}\nb: 1\n")
    inputs = workspace.StageInputs.read("s")
    Path("params.yaml").write_text(
        "# note\na: {h: [1, 2], lr: 1e-3}  # reordered\nfamiliarity: {components: 60, percentile: 99}\n"
    )
    assert inputs.changed() == []  # a comment, order, 1e-3 for 0.001 (YAML 1.2, as DVC reads it), keys of others
    Path("params.yaml").write_text("a: {lr: 0.002, h: [1]}\nfamiliarity: {percentile: 97.5}\n")
    Path("d/f.py").write_text("x = 2\n")
    Path(".dvcignore").write_text(".*\n")
    Path("d/.hidden").write_text("DVC leaves it out\n")
    assert inputs.changed() == [
        "params.yaml:a.h", "params.yaml:a.lr", "params.yaml:familiarity.components", "d/f.py"
    ]  # fmt: skip
    Path("params.yaml").write_text("a: [unclosed\n")
    assert inputs.changed()[0] == "params.yaml"


# --- data ---------------------------------------------------------------------------------------


def empty_folder(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_empty_raw_folder(repo):
    empty_folder(repo.path / "data/raw")
    assert_fails_cleanly(repo, "prepare", "data/raw: no digit folders")


def test_digit_folder_without_images(repo):
    empty_folder(repo.path / "data/raw/5")
    (repo.path / "data/raw/5/.gitkeep").write_text("")  # hidden files do not count
    assert_fails_cleanly(repo, "prepare", "data/raw/5: digit folder holds no images")


def test_missing_digit_folder(repo):
    empty_folder(repo.path / "data/raw/4")
    (repo.path / "data/raw/4").rmdir()
    assert_fails_cleanly(repo, "prepare", "data/raw: no folder for digit 4")


def test_file_that_is_not_an_image(repo):
    (repo.path / "data/raw/3/IMG_9999.JPG").write_text("these are notes, not a photo\n")
    assert_fails_cleanly(repo, "prepare", "data/raw/3/IMG_9999.JPG: not a readable image", "on_bad_image: skip")


def test_truncated_jpeg(repo):
    victim = repo.path / "data/raw/7/IMG_1057.JPG"
    assert victim.is_file()
    truncate(victim)
    assert_fails_cleanly(repo, "prepare", "data/raw/7/IMG_1057.JPG: not a readable image")


def test_truncated_jpeg_skipped_when_asked(repo):
    """The other policy: the stage succeeds, leaves the file out and counts it."""
    truncate(repo.path / "data/raw/7/IMG_1057.JPG")
    repo.set_params({"prepare.on_bad_image": "skip"})
    result = repo.run("prepare", check=True)
    assert "199 images" in result.stdout and "1 skipped" in result.stdout
    assert "IMG_1057.JPG" in result.stderr


def test_label_folder_that_is_not_a_digit(repo):
    (repo.path / "data/raw/seven").mkdir()
    (repo.path / "data/raw/7/IMG_1007.JPG").rename(repo.path / "data/raw/seven/IMG_1007.JPG")
    assert_fails_cleanly(repo, "prepare", "data/raw/seven: label folder is not a digit 0-9")


def test_prepared_file_from_an_older_pipeline(repo):
    path = repo.path / "data/prepared/images.npz"
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["format_version"] = np.array(0)
    np.savez_compressed(path, **arrays)
    assert_fails_cleanly(
        repo, "split", "data/prepared/images.npz: written by another version", f"format 0, expected {FORMAT_VERSION}"
    )


def test_prepared_file_that_is_not_an_npz(repo):
    (repo.path / "data/prepared/images.npz").write_bytes(b"PK\x03\x04 but not really a zip")
    assert_fails_cleanly(repo, "split", "data/prepared/images.npz: cannot read arrays", "rerun the stage")


def test_split_file_from_an_older_pipeline(repo):
    path = repo.path / "data/split/split.npz"
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "format_version"}
    np.savez(path, format_version=np.array(0), **arrays)
    assert_fails_cleanly(
        repo, "train_base", "data/split/split.npz: written by another version", f"format 0, expected {FORMAT_VERSION}"
    )


# --- divergence ---------------------------------------------------------------------------------


def test_divergence_stops_without_writing_a_model(repo):
    """lr 10 is the largest params allow (1e6 is refused outright); with SGD it still blows up."""
    repo.set_params({"train_base.lr": 10.0, "train_base.momentum": 0.9, "train_base.epochs": 50})
    message = assert_fails_cleanly(repo, "train_base", "training diverged", "lower the learning rate", "No model")
    assert re.search(r"in epoch \d+", message)


def test_huge_lr_is_refused_before_training(repo):
    repo.set_params({"train_base.lr": 1e6, "train_base.optimizer": "sgd"})
    assert_fails_cleanly(repo, "train_base", "train_base.lr = 1000000.0", "must be <= 10")


# --- interrupted stages -------------------------------------------------------------------------


def wait_for_line(stream, pattern: str, timeout: float) -> list[str]:
    """Lines read from stream until one matches pattern; fails after timeout seconds."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{''.join(seen)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_leaves_earlier_outputs(repo, signum):
    repo.set_params({"train_base.epochs": 10_000, "train_base.batch_size": 1})
    before = repo.snapshot()
    process = repo.popen("train_base", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(process.stderr, r"train_base epoch 1/10000", timeout=90)
        process.send_signal(signum)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if signum == signal.SIGTERM:
        assert code == 130  # run_stage turns SIGTERM into a clean interruption
    else:
        assert code == -signal.SIGKILL
    assert repo.snapshot() == before
    assert repo.temporary_files() == []


def test_a_stage_killed_while_writing_leaves_only_ignored_temporaries_that_its_next_run_removes(repo):
    """SIGKILL with every output written under its temporary name, none renamed yet: held there by a FIFO
    among its deps, which the check before renaming opens (src/signdigits/core: a dep in dvc.yaml)."""
    shutil.copy2(ROOT / ".gitignore", repo.path / ".gitignore")
    subprocess.run(["git", "init", "--quiet"], cwd=repo.path, check=True)
    repo.set_params({"train_base.epochs": 100})  # a second or more: the FIFO is in place before the end
    inputs = ("params.yaml", "data/raw", "stages", "dvc.yaml", ".gitignore", ".git")
    before = repo.snapshot(exclude=inputs)
    process = repo.popen("train_base", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fifo = repo.path / "src/signdigits/core/hold"
    try:
        wait_for_line(process.stderr, r"train_base epoch 1/100", timeout=90)  # its inputs are read
        fifo.parent.mkdir(parents=True)
        os.mkfifo(fifo)
        deadline = time.monotonic() + 180
        while len(repo.temporary_files()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    shutil.rmtree(repo.path / "src")
    left = repo.temporary_files()
    assert [re.sub(r"\.\d+-\w+\.tmp$", ".PID-RANDOM.tmp", name) for name in left] == [
        "metrics/.train_base.json.PID-RANDOM.tmp",
        "models/.train_base.pt.PID-RANDOM.tmp",
        "plots/train_base/.history.csv.PID-RANDOM.tmp",
    ]
    assert repo.snapshot(exclude=(*inputs, *left)) == before  # every earlier output as it was
    untracked = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo.path, capture_output=True, text=True
    ).stdout
    assert ".tmp" not in untracked and "metrics/train_base.json" in untracked  # `git add -A` leaves them out
    assert all(workspace.DvcIgnore(repo.path / name).ignores(repo.path / name) for name in left)  # and DVC
    repo.set_params({"train_base.epochs": 1})
    repo.run("train_base", check=True)
    assert repo.temporary_files() == []


@pytest.mark.parametrize("under_dvc", [False, True], ids=["alone", "under-dvc-repro"])
def test_the_interrupted_message_says_what_happened_to_the_outputs(repo, tmp_path, under_dvc):
    """Alone, the earlier outputs stay; under `dvc repro` (DVC_STAGE set), DVC removed them before the stage ran."""
    repo.set_params({"train_base.epochs": 10_000, "train_base.batch_size": 1})
    env = {**stage_env(), **({"DVC_STAGE": "train_base", "DVC_ROOT": str(repo.path)} if under_dvc else {})}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "stages/train_base.py"], cwd=repo.path, env=env, stderr=err)
    try:
        deadline = time.monotonic() + 90
        while "epoch 1/10000" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    last = log.read_text().strip().splitlines()[-1]
    expected = "dvc repro removed this stage's outputs" if under_dvc else "earlier outputs are left as they were"
    assert last.startswith("interrupted: ") and expected in last, last


# --- all or nothing -----------------------------------------------------------------------------

FILL_AND_TRAIN = """
set -e
saved=$(mktemp -d)
cp -a metrics/. "$saved"/
mount -t tmpfs -o size=1m tmpfs metrics
cp -a "$saved"/. metrics/
dd if=/dev/zero of=metrics/filler bs=4096 2>/dev/null || true
set +e
python stages/train_base.py
code=$?
cp metrics/train_base.json "$1"/train_base.json
ls -a metrics > "$1"/listing
exit $code
"""


def test_a_full_disk_leaves_every_earlier_output(repo, tmp_path):
    """metrics/ on a full 1 MB tmpfs: the metrics write fails, so neither model nor history changes either."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(tmp_path)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode().strip()}")
    repo.set_params({"train_base.epochs": 3})  # other settings: every output would change
    before = repo.snapshot()
    seen = tmp_path / "seen"
    seen.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", FILL_AND_TRAIN, "sh", str(seen)],
        cwd=repo.path, env=stage_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == [f"error: {Path('metrics/train_base.json')}: the disk is full (No space left on device); "
                           "free space there and rerun"], done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr
    assert (seen / "train_base.json").read_text() == (repo.path / "metrics/train_base.json").read_text()
    assert [name for name in (seen / "listing").read_text().split() if name.endswith(".tmp")] == []
    assert repo.snapshot() == before  # the model and the history on the real disk: the old ones
    assert repo.temporary_files() == []


def test_outputs_are_renamed_together_or_not_at_all(tmp_path):
    first, second = tmp_path / "model.pt", tmp_path / "metrics" / "model.json"
    write_bytes_atomic(first, b"old model")
    with pytest.raises(RuntimeError), files.outputs():
        write_bytes_atomic(first, b"new model")
        write_bytes_atomic(second, b"new metrics")
        assert first.read_bytes() == b"old model"  # nothing is renamed before the end
        raise RuntimeError("the stage fails after writing")
    assert first.read_bytes() == b"old model" and not second.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.pt"]
    with files.outputs():
        write_bytes_atomic(first, b"draft")
        write_bytes_atomic(first, b"new model")  # the last write of a file counts
        write_bytes_atomic(second, b"new metrics")
    assert (first.read_bytes(), second.read_bytes()) == (b"new model", b"new metrics")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.json", "model.pt"]


def test_nothing_is_written_after_abandon(tmp_path, monkeypatch):
    """Once the owner of the stage is gone, no output is renamed into place, inside outputs() or not."""
    monkeypatch.setattr(files, "_abandoned", False)
    target = tmp_path / "metrics.json"
    write_bytes_atomic(target, b"old")
    with pytest.raises(KeyboardInterrupt), files.outputs():
        write_bytes_atomic(target, b"new")
        files.abandon()
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(target, b"newer")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# --- atomic writes (unit) -----------------------------------------------------------------------


def test_write_bytes_atomic_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "out" / "file.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    assert (target.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("failure", ["write", "fsync", "replace", "interrupt"])
def test_write_bytes_atomic_keeps_the_old_file_when_writing_raises(tmp_path, monkeypatch, failure):
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous model")
    data: object = b"new model"
    error: type[BaseException] = PipelineError  # an OSError of a write: one line naming the file (write_error)
    if failure == "write":
        data, error = "text, not bytes", TypeError  # f.write raises half way
    elif failure == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    elif failure == "replace":
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("read-only")))
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
        error = KeyboardInterrupt
    with pytest.raises(error):
        write_bytes_atomic(target, data)  # type: ignore[arg-type]
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_too_few_signers_for_a_split(tiny_repo_factory):
    """Two signers cannot fill train, val and test: split stops instead of writing an empty part."""
    repo = tiny_repo_factory("two_signers", per_digit=2)
    repo.run("prepare", check=True)
    assert_fails_cleanly(repo, "split", "the val and test parts would be empty", "20 images from 2 signers")
    assert not (repo.path / "data/split/split.npz").exists()


# --- every failure one line, exit 2: params.yaml in another encoding, write errors ----------------

WINDOWS_1252_PARAMS_LINE = "# caf\x96 notes\n".encode("latin-1")  # an en dash as Windows-1252 writes it


def params_in_windows_1252(params: Path) -> str:
    """params.yaml with one Windows-1252 byte appended; the message the reader gives for it."""
    data = params.read_bytes()
    params.write_bytes(data + WINDOWS_1252_PARAMS_LINE)
    position, line = len(data) + len("# caf"), data.count(b"\n") + 1
    return f"not UTF-8 text: byte 0x96 at position {position} (line {line})"


def test_params_yaml_in_another_encoding_stops_a_stage_naming_the_byte(repo):
    expected = params_in_windows_1252(repo.params_file)
    assert_fails_cleanly(repo, "train_base", "params.yaml: " + expected, "save the file as UTF-8")


def write_into_read_only_models(repo) -> subprocess.CompletedProcess:
    """train_base with models/ bind-mounted read-only, in a user and mount namespace of its own."""
    script = "mount --bind models models && mount -o remount,ro,bind models && exec python stages/train_base.py"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=repo.path, env=stage_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("kind", ["read-only", "not a folder", "permission"])
def test_a_write_error_is_one_line_and_keeps_every_earlier_output(repo, tmp_path, kind):
    repo.set_params({"train_base.epochs": 3})  # other settings: every output would change
    model = repo.path / "models"
    if kind == "read-only":
        if not shutil.which("unshare"):
            pytest.skip("needs unshare (util-linux) to mount read-only")
        probe = subprocess.run(["unshare", "-rm", "mount", "--bind", str(tmp_path), str(tmp_path)], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot bind-mount in a user namespace here: {probe.stderr.decode().strip()}")
        before = repo.snapshot()
        done = write_into_read_only_models(repo)
        expected = f"error: {Path('models/train_base.pt')}: cannot write: the file system is read-only"
    else:
        if kind == "not a folder":
            shutil.rmtree(model)
            model.write_text("a file where the models folder belongs")
            expected = f"error: {Path('models')}: cannot write: a part of this path is a file, not a folder"
        else:
            if os.geteuid() == 0:
                pytest.skip("root writes into any folder (test_write_errors_name_the_problem covers the message)")
            model.chmod(0o555)
            expected = f"error: {Path('models/train_base.pt')}: cannot write: permission denied"
        before = repo.snapshot()
        done = repo.run("train_base")
        if kind == "permission":
            model.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert (
        [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        == [line for line in done.stderr.splitlines() if line.startswith(expected)]
        != []
    ), done.stderr
    assert "Traceback" not in done.stderr
    assert repo.snapshot() == before
    assert repo.temporary_files() == []


@pytest.mark.parametrize(
    "error, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied"), "cannot write: permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "cannot write: the file system is read-only"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "cannot write: a part of this path is a file"),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full (No space left on device)"),
        (OSError(errno.EIO, "Input/output error"), "cannot write (Input/output error)"),
    ],
)
def test_write_errors_name_the_problem(tmp_path, monkeypatch, error, expected):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(files.tempfile, "mkstemp", failing)
    with pytest.raises(PipelineError) as info:
        write_bytes_atomic(tmp_path / "out.json", b"{}")
    assert str(info.value).startswith(f"{tmp_path / 'out.json'}: {expected}")
