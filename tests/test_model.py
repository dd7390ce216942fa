"""Model files (issues 3 and 6): exact round trips, architecture checks, and refusing anything else."""

from __future__ import annotations

import hashlib
import io
import pickletools
import zipfile

import numpy as np
import pytest
import torch
from helpers import RunsOnUnpickle, requires_cuda

from signdigits.core.errors import PipelineError
from signdigits.core.files import FORMAT_VERSION
from signdigits.training.model import Arch, Classifier, Network, describe
from signdigits.training.model_file import load_model, model_bytes, save_model, tensor_digest

SIZE = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def make_classifier(hidden=(16, 8), classes=(0, 1, 2), members=1, dropout=0.2, seed=0) -> Classifier:
    """Random weights and random standardisation buffers: every number in the file matters."""
    torch.manual_seed(seed)
    arch = Arch(SIZE, tuple(hidden), len(classes), dropout)
    nets = [Network(arch, torch.rand(SIZE * SIZE), torch.rand(SIZE * SIZE) + 0.5) for _ in range(members)]
    return Classifier(arch, list(classes), nets).eval()


def pixels(n=32, seed=1) -> torch.Tensor:
    return torch.rand(n, SIZE * SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model_file(tmp_path):
    model = make_classifier()
    return model, save_model(model, tmp_path / "models" / "m.pt")


# --- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 3])
def test_round_trip_predicts_bitwise_identically(tmp_path, members):
    model = make_classifier(members=members, classes=(3, 7, 9))
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    x = pixels()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.arch == model.arch
    assert loaded.classes == [3, 7, 9]
    assert len(loaded.members) == members
    assert not loaded.training  # dropout off: predictions are repeatable
    with torch.no_grad():
        assert torch.equal(loaded(x), loaded(x))
    assert model_bytes(loaded) == model_bytes(model)


@pytest.mark.parametrize("members, channels", [(1, ()), (3, ()), (1, (4, 8))], ids=["mlp", "ensemble", "cnn"])
def test_one_pass_reads_the_logits_and_the_signals_bit_for_bit(members, channels):
    """read() takes the logits from the features it returns (one pass, not three): the same bits as forward and as
    the penultimate layer computed on its own."""
    torch.manual_seed(0)
    arch = Arch(SIZE, (16,), 3, 0.2, kind="cnn" if channels else "mlp", channels=channels)
    nets = [Network(arch, torch.rand(SIZE * SIZE), torch.rand(SIZE * SIZE) + 0.5) for _ in range(members)]
    model, x = Classifier(arch, [0, 1, 2], nets).train(), pixels()
    logits, features, top = model.read(x)
    assert model.training  # left as it was
    with torch.inference_mode():
        model.eval()
        assert torch.equal(logits, model(x))
        assert torch.equal(features, torch.cat([m.penultimate(x) for m in model.members], dim=1))
        assert torch.equal(top, model(x).softmax(dim=1).max(dim=1).values)
    assert features.shape == (len(x), members * 16)


def test_the_digest_names_every_tensor_of_the_file_and_its_bytes(tmp_path):
    """metrics/digests/<stage>.tsv: a changed tensor shows as its own line in git diff."""
    model = make_classifier(members=2)
    path = save_model(model, tmp_path / "m.pt")
    header, *lines = tensor_digest(path).splitlines()
    assert header.split("\t") == ["name", "shape", "dtype", "md5"]
    payload = torch.load(path, weights_only=True)
    names = [line.split("\t")[0] for line in lines]
    assert names == [f"members[{i}].{key}" for i in range(2) for key in sorted(payload["members"][i])]
    for line in lines:
        name, shape, dtype, md5 = line.split("\t")
        index, key = name.removeprefix("members[").split("].")
        tensor = payload["members"][int(index)][key]
        assert (shape, dtype) == (str(tuple(tensor.shape)), str(tensor.dtype))
        assert md5 == hashlib.md5(tensor.numpy().tobytes()).hexdigest()
    other = make_classifier(members=2)
    with torch.no_grad():
        other.members[1].layers[0].bias[0] += 1e-6
    other_path = save_model(other, tmp_path / "o.pt")
    changed = set(tensor_digest(path).splitlines()) ^ set(tensor_digest(other_path).splitlines())
    assert {line.split("\t")[0] for line in changed} == {"members[1].layers.0.bias"}


def test_file_bytes_are_deterministic_and_written_atomically(tmp_path):
    model = make_classifier()
    path = save_model(model, tmp_path / "m.pt")
    assert path.read_bytes() == model_bytes(model) == model_bytes(make_classifier())
    save_model(make_classifier(seed=1), path)  # overwrite in place
    assert path.read_bytes() == model_bytes(make_classifier(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary files left beside it


def test_matching_architecture_checks_pass(model_file):
    model, path = model_file
    loaded = load_model(path, image_size=SIZE, n_classes=3, hidden=(16, 8))
    assert describe(loaded.arch) == "64-16-8-3"


@pytest.mark.parametrize(
    "asked, named",
    [
        ({"image_size": 12}, "image_size 8, expected 12"),
        ({"n_classes": 10}, "n_classes 3, expected 10"),
        ({"hidden": (16,)}, r"hidden \(16, 8\), expected \(16,\)"),
        ({"hidden": (16, 8, 4)}, r"hidden \(16, 8\), expected \(16, 8, 4\)"),
    ],
)
def test_mismatched_architecture_is_refused(model_file, asked, named):
    _, path = model_file
    with pytest.raises(PipelineError, match=named) as failure:
        load_model(path, **asked)
    assert "64-16-8-3" in str(failure.value) and "dvc repro" in str(failure.value)


# --- refusing what is not a model file ----------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_pickle_payload_is_refused_without_running_it(tmp_path, wrapped):
    marker = tmp_path / "marker"
    payload = RunsOnUnpickle(marker)
    path = tmp_path / "evil.pt"
    # wrapped: it hides inside an otherwise valid-looking model file
    real = torch.load(io.BytesIO(model_bytes(make_classifier())), weights_only=True)
    torch.save({**real, "classes": payload} if wrapped else payload, path)
    assert zipfile.is_zipfile(path)  # it looks like a torch archive
    with pytest.raises(PipelineError, match="refused"):
        load_model(path)
    assert not marker.exists()
    # the payload is live: unpickling it for real would have created the marker
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_file_of_another_format_version(model_file, tmp_path):
    payload = torch.load(model_file[1], weights_only=True)
    payload["format_version"] = 0
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=f"format {FORMAT_VERSION} \\(found 0\\)"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="file not found"):
        load_model(tmp_path / "nothing.pt")
    with pytest.raises(PipelineError, match="file not found"):
        load_model(tmp_path)  # a folder is not a file


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    data = model_bytes(make_classifier())
    path = tmp_path / "m.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(PipelineError, match="m.pt"):
        load_model(path)


def test_random_bytes_and_text_files(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "text.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    for name in ("random.pt", "text.pt"):
        with pytest.raises(PipelineError, match="not a signdigits model file"):
            load_model(tmp_path / name)


def test_foreign_zip_files(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"format_version": FORMAT_VERSION + 1, "arch": {}}, tmp_path / "newer.pt")
    torch.save({"format_version": FORMAT_VERSION}, tmp_path / "incomplete.pt")
    for name in ("plain.zip", "arrays.npz", "tensor.pt", "newer.pt", "incomplete.pt"):
        with pytest.raises(PipelineError, match=name.replace(".", r"\.")):
            load_model(tmp_path / name)


def test_damaged_contents_are_refused(tmp_path):
    """A file of the right format whose state dicts do not fit its architecture."""
    payload = torch.load(io.BytesIO(model_bytes(make_classifier())), weights_only=True)
    wrong_arch = {**payload, "arch": {**payload["arch"], "hidden": [32, 8]}}
    missing_weight = {
        **payload,
        "members": [{k: v for k, v in payload["members"][0].items() if k != "layers.0.weight"}],
    }
    for i, bad in enumerate([wrong_arch, missing_weight]):
        torch.save(bad, tmp_path / f"bad{i}.pt")
        with pytest.raises(PipelineError, match="damaged model file"):
            load_model(tmp_path / f"bad{i}.pt")


def test_inconsistent_members_or_classes_are_refused(tmp_path):
    payload = torch.load(io.BytesIO(model_bytes(make_classifier())), weights_only=True)
    for name, bad in {"none.pt": {**payload, "members": []}, "classes.pt": {**payload, "classes": [0, 1]}}.items():
        torch.save(bad, tmp_path / name)
        with pytest.raises(PipelineError, match="damaged model file"):
            load_model(tmp_path / name)


def test_changed_weight_bytes_are_detected(tmp_path):
    """torch.load reads stored tensors without checking the archive's CRCs: a changed byte must not load."""
    model = make_classifier()
    data = bytearray(model_bytes(model))
    weights = model.members[0].state_dict()["layers.0.weight"].numpy().tobytes()
    at = bytes(data).find(weights)
    assert at > 0
    data[at + 100] ^= 0x40
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="damaged model file"):
        load_model(tmp_path / "m.pt")


def test_random_damage_is_always_a_pipeline_error(tmp_path):
    """Bytes changed anywhere: the file loads (the bytes did not matter) or fails with PipelineError, never else."""
    original = model_bytes(make_classifier(members=2))
    rng = np.random.default_rng(0)
    path, refused = tmp_path / "m.pt", 0
    for _ in range(300):
        data = bytearray(original)
        for at in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[at] = (data[at] + rng.integers(1, 256)) % 256
        path.write_bytes(bytes(data))
        try:
            load_model(path)
        except PipelineError:
            refused += 1
    assert refused > 250  # nearly every byte matters


# --- what is inside ----------------------------------------------------------------------------


def test_file_holds_plain_data_only(model_file):
    model, path = model_file
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickled classes: this loads
    assert type(payload) is dict
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["arch"] == {
        "image_size": SIZE,
        "hidden": [16, 8],
        "n_classes": 3,
        "dropout": 0.2,
        "normalize_images": False,
    }
    assert payload["classes"] == [0, 1, 2]
    assert len(payload["members"]) == 1 and type(payload["members"][0]) is dict
    for key, value in model.members[0].state_dict().items():
        assert torch.equal(payload["members"][0][key], value)
    # and the pickle names no global but torch's tensor rebuilding (storages, and the OrderedDict it uses)
    with zipfile.ZipFile(path) as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        ops = list(pickletools.genops(z.read(pkl)))
    globals_, strings = set(), []
    for op, arg, _ in ops:
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            globals_.add(arg)
        elif op.name == "STACK_GLOBAL":  # protocol 4+: module and name are the last two strings pushed
            globals_.add(f"{strings[-2]} {strings[-1]}")
    assert "torch._utils _rebuild_tensor_v2" in globals_  # sanity: the pickle was parsed
    allowed = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict"}
    assert all(g in allowed or (g.startswith("torch ") and g.endswith("Storage")) for g in globals_), globals_
    assert not any("signdigits" in g for g in globals_)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_load_to_a_device_argument(model_file, device):
    """A model loads onto the device asked for and predicts there what it predicts on the CPU."""
    model, path = model_file
    loaded = load_model(path, device=device)
    assert {p.device.type for p in loaded.parameters()} | {b.device.type for b in loaded.buffers()} == {device}
    with torch.no_grad():
        expected, got = model(pixels()), loaded(pixels().to(device)).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # the same kernels on the CPU: exact there
    if device == "cpu":
        assert torch.equal(got, expected)
