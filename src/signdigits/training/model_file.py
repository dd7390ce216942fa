"""The model file: what train_* writes to models/<name>.pt and evaluate and predict load.

A model file is a plain dict of tensors, lists, numbers and strings written with `torch.save` and
read with `torch.load(weights_only=True)`, so loading never runs code from the file. It holds the
architecture, the class labels, and one state dict per ensemble member; the per-pixel
standardisation lives in the network as buffers, so prediction needs only pixels in [0, 1].
The final model and train_cnn also carry their familiarity check (training/familiarity.py) as plain
tensors, so that one file gives predict everything it needs; the check has its own version inside it
(a file whose check predates the network's signals is refused with a line that says so). A CNN's
architecture records its kind and channels; a file without them holds a fully-connected network.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from signdigits.core.errors import PipelineError
from signdigits.core.files import FORMAT_VERSION, digest_text, require_file, write_bytes_atomic
from signdigits.training.familiarity import CHECK_VERSION, ModelCheck
from signdigits.training.model import KINDS, Arch, Classifier, Network, describe


def model_bytes(model: Classifier) -> bytes:
    """Serialise in memory: torch.save records the file name it writes to, so no temp-file rename."""
    payload = {
        "format_version": FORMAT_VERSION,
        "arch": arch_payload(model.arch),
        "classes": list(model.classes),
        "members": [{k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()} for m in model.members],
    }
    if model.familiarity is not None:
        payload["familiarity"] = model.familiarity.to_payload()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def arch_payload(arch: Arch) -> dict:
    """The architecture as plain data. A fully-connected network's holds no kind and no channels (absent
    means MLP), so its files keep the bytes they had before CNNs existed; the format version is unchanged."""
    payload = {**asdict(arch), "hidden": list(arch.hidden), "channels": list(arch.channels)}
    if arch.kind == "mlp":
        del payload["kind"], payload["channels"]
    return payload


def save_model(model: Classifier, path: str | Path) -> Path:
    return write_bytes_atomic(path, model_bytes(model))


def tensor_digest(path: str | Path) -> str:
    """digest_text of every tensor a model file holds (files.digest_text)."""
    return digest_text(dict(_tensors(torch.load(require_file(path), map_location="cpu", weights_only=True))))


def _tensors(value, name: str = ""):
    """(name, tensor) for every tensor in the payload, named by path: members[0].layers.0.weight, familiarity.mean."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _tensors(value[key], f"{name}.{key}" if name else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}[{i}]")


def load_model(
    path: str | Path,
    image_size: int | None = None,
    n_classes: int | None = None,
    hidden: tuple[int, ...] | None = None,
    device: str | torch.device = "cpu",
    kind: str | None = None,
) -> Classifier:
    """Rebuild a Classifier; a missing, foreign, truncated or mismatched file is a PipelineError.

    The checks that are given (image_size, n_classes, hidden: the dense widths, kind: mlp or cnn) must
    match the file's architecture.
    """
    path = require_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # torch.load checks no CRC: changed bytes would load as other weights
    except Exception:  # BadZipFile, OSError, EOFError, ...: all mean the same, not a readable archive
        raise PipelineError(
            f"{path}: not a signdigits model file (not a torch archive: truncated or foreign)"
        ) from None
    if damaged is not None:
        raise PipelineError(f"{path}: damaged model file (checksum mismatch in {damaged})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise PipelineError(
            f"{path}: refused: it holds Python objects other than tensors and plain data, and model files "
            "are never unpickled; it is not a signdigits model file"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, LookupError, TypeError) as e:
        raise PipelineError(f"{path}: damaged model file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise PipelineError(
            f"{path}: not a signdigits model file of format {FORMAT_VERSION} (found {version!r}); "
            "retrain it with `dvc repro`"
        )
    check = payload.get("familiarity")
    if isinstance(check, dict) and check.get("version", 1) != CHECK_VERSION:
        raise PipelineError(
            f"{path}: its familiarity check is of version {check.get('version', 1)!r} (1: pixels only, before "
            f"the check read the network), this code reads version {CHECK_VERSION}; retrain it with `dvc repro`"
        )
    try:
        raw = payload["arch"]
        arch = Arch(
            image_size=int(raw["image_size"]),
            hidden=tuple(int(h) for h in raw["hidden"]),
            n_classes=int(raw["n_classes"]),
            dropout=float(raw["dropout"]),
            normalize_images=bool(raw["normalize_images"]),
            kind=str(raw.get("kind", "mlp")),
            channels=tuple(int(c) for c in raw.get("channels", ())),
        )
        if arch.kind not in KINDS or (arch.kind == "cnn") != bool(arch.channels):
            raise ValueError(f"network kind {arch.kind!r} with channels {list(arch.channels)}")
        members = []
        for state in payload["members"]:
            member = Network(arch, state["mean"], state["std"])
            member.load_state_dict(state)
            members.append(member)
        model = Classifier(arch, [int(c) for c in payload["classes"]], members, _familiarity(payload, arch, members))
        if not members or len(model.classes) != arch.n_classes:
            raise ValueError(f"{len(members)} networks and {len(model.classes)} classes for {arch.n_classes} outputs")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise PipelineError(f"{path}: damaged model file ({type(e).__name__}: {e})") from None
    expected = {"image_size": image_size, "n_classes": n_classes, "hidden": hidden, "kind": kind}
    for name, value in expected.items():
        if value is not None and getattr(arch, name) != value:
            raise PipelineError(
                f"{path}: model has {name} {getattr(arch, name)}, expected {value} "
                f"(it is {describe(arch)}); retrain it with `dvc repro`"
            )
    return model.to(device).eval()


def _familiarity(payload: dict, arch: Arch, members: list[Network]) -> ModelCheck | None:
    if "familiarity" not in payload:
        return None
    check = ModelCheck.from_payload(payload["familiarity"], arch.n_classes, sum(m.feature_width for m in members))
    if check.pixels.mean.shape != (arch.input_size,):
        raise ValueError(f"familiarity check for {check.pixels.mean.shape[0]} pixels, network for {arch.input_size}")
    return check
