"""The workspace as DVC sees it: what .dvcignore leaves out, a stage's deps in dvc.yaml, and their fingerprint.

- `DvcIgnore(folder)`: the .dvcignore rules that apply to a folder, matched as DVC matches them (pathspec,
  gitignore syntax). prepare reads the photos DVC hashes, no more and no fewer: the one list of what is
  not data is .dvcignore, so a `.DS_Store` that DVC ignores is skipped by prepare, and a file DVC hashes is read.
- `StageInputs.read(stage)`: what dvc.lock records of a stage, taken at its start: the values of the
  params keys dvc.yaml lists for it, and the sha256 (`fingerprint`) of every file DVC would hash under its
  deps. The stage compares them before writing (`require_unchanged`): what dvc.lock records after the stage is then
  what the stage used. A comment in params.yaml, or another stage's key, is not in the stage's lock entry,
  so it is no change.

Imports no numpy: a stage takes the fingerprint before it pins the CPU kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from signdigits.core import paths
from signdigits.core.errors import PipelineError

DVCIGNORE = ".dvcignore"


class DvcIgnore:
    """The rules of every .dvcignore from a folder up to its repository's root (holding .dvc/, .git or dvc.yaml).

    .dvcignore files inside the folder are not read (DVC reads them): this project keeps its one at the root.
    """

    def __init__(self, folder: Path):
        import pathspec

        self.specs = []
        for parent in (folder := Path(os.path.abspath(folder)), *folder.parents):
            file = parent / DVCIGNORE
            if file.is_file():
                self.specs.append((parent, pathspec.GitIgnoreSpec.from_lines(file.read_text().splitlines())))
            if any((parent / name).exists() for name in (".dvc", ".git", paths.DVC_YAML.name)):
                break

    def ignores(self, path: Path, is_dir: bool | None = None) -> bool:
        """Whether DVC leaves this file or folder out (a folder's contents go with it)."""
        path = os.path.abspath(path)
        if is_dir is None:
            is_dir = os.path.isdir(path)
        suffix = "/" if is_dir else ""
        relative = (os.path.relpath(path, root).replace(os.sep, "/") + suffix for root, _ in self.specs)
        return any(spec.match_file(name) for (_, spec), name in zip(self.specs, relative, strict=True))


def stage_entry(name: str, dvc_yaml: str | Path = paths.DVC_YAML) -> dict | None:
    """The stage's mapping in dvc.yaml (cmd, deps, params, outs), or None where there is no such stage."""
    try:
        stage = yaml.safe_load(Path(dvc_yaml).read_text())["stages"].get(name)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    return stage if isinstance(stage, dict) else None


@dataclass
class StageInputs:
    """What DVC records of a stage in dvc.lock, as the stage found it at its start: params values and deps' hashes."""

    keys: tuple[str, ...] | None  # the params.yaml keys dvc.yaml lists for it; None: not in dvc.yaml, every key
    deps: tuple[Path, ...]
    params_bytes: bytes | None
    digests: dict[str, str]

    @classmethod
    def read(cls, name: str) -> StageInputs:
        stage = stage_entry(name)
        keys = None if stage is None else tuple(key for key in stage.get("params", ()) if isinstance(key, str))
        deps = tuple(Path(dep) for dep in (stage or {}).get("deps", ()) if isinstance(dep, str))
        return cls(keys, deps, _read_or_none(paths.PARAMS), fingerprint(deps))

    def changed(self) -> list[str]:
        """What changed since `read` that dvc.lock would record: `params.yaml:<key>` for a value, or a dep's file."""
        now = fingerprint(self.deps)
        files = sorted(name for name in self.digests.keys() | now.keys() if self.digests.get(name) != now.get(name))
        params_now = _read_or_none(paths.PARAMS)
        if params_now == self.params_bytes:  # the usual case: no YAML read at all
            return files
        return [*_changed_values(self.params_bytes, params_now, self.keys), *files]

    def changed_elsewhere(self) -> list[str] | None:
        """None if params.yaml holds the bytes `read` found; else the keys changed since, all of them (maybe none:
        comments or layout only). For a stage whose own keys are unchanged, keys that other stages read."""
        params_now = _read_or_none(paths.PARAMS)
        if params_now == self.params_bytes:
            return None
        return [
            name.removeprefix(f"{paths.PARAMS.as_posix()}:")
            for name in _changed_values(self.params_bytes, params_now, None)
        ]

    def require_unchanged(self, stage: str) -> None:
        """Refuse to write outputs made from params or deps that changed since `read` (files.outputs calls it
        before its renames).

        DVC hashes them again when it writes dvc.lock, after the stage: the lock would state inputs the
        outputs were not made from, and `dvc status` would call them up to date. Only what the lock records
        counts: a comment or another stage's key in params.yaml does not.
        """
        changed = self.changed()
        if changed:
            raise PipelineError(
                f"{_listed(changed)} changed while {stage} ran, so its outputs were not written: dvc.lock would "
                "record inputs they were not made from. Run it again (`dvc repro`) once nothing edits them"
            )
        elsewhere = self.changed_elsewhere()
        if elsewhere is not None:  # e.g. a `dvc exp run -S` refused meanwhile: DVC writes -S before it finds the lock
            logging.getLogger(__name__).warning(
                "warning: params.yaml changed while %s ran, in what it does not read (%s); its outputs are written. "
                "If a `dvc exp run -S` was refused meanwhile (Unable to acquire lock), DVC had written its values "
                "there first, and stages run next use them: `git diff params.yaml`",
                stage, _listed(elsewhere) or "comments or layout",
            )  # fmt: skip


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


_MISSING = "<missing>"


def _changed_values(before: bytes | None, now: bytes | None, keys: tuple[str, ...] | None) -> list[str]:
    """The params keys (down to the changed leaf) whose values differ, read as DVC reads them (ruamel.yaml, YAML 1.2).

    Where either version cannot be read so (not YAML, no file, no ruamel.yaml), params.yaml as a whole.
    """
    try:
        from ruamel.yaml import YAML  # DVC's own reader (a dependency of DVC): the values it writes to dvc.lock

        reader = YAML(typ="safe")
        old, new = (reader.load(text) if text is not None else None for text in (before, now))
    except Exception:  # ruamel's errors have no common base beyond Exception; ImportError without DVC
        return [paths.PARAMS.as_posix()]
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [paths.PARAMS.as_posix()]
    names = keys if keys is not None else sorted(old.keys() | new.keys(), key=str)
    changed = []
    for key in names:
        flat_old, flat_new = _flat(key, _lookup(old, key)), _flat(key, _lookup(new, key))
        changed += [
            f"{paths.PARAMS.as_posix()}:{leaf}"
            for leaf in sorted(flat_old.keys() | flat_new.keys())
            if flat_old.get(leaf, _MISSING) != flat_new.get(leaf, _MISSING)
        ]
    return changed


def _lookup(mapping: dict, key: str):
    """A key as DVC finds it: the top-level key, else a dotted path into sections (familiarity.components)."""
    if key in mapping:
        return mapping[key]
    node = mapping
    for part in str(key).split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _flat(key: str, value) -> dict[str, object]:
    """A section as its leaves (train_base.lr -> 0.01); a leaf as itself. Lists compare whole, as values."""
    if not isinstance(value, dict) or not value:
        return {str(key): value}
    return {leaf: v for name, item in value.items() for leaf, v in _flat(f"{key}.{name}", item).items()}


def fingerprint(inputs: Iterable[Path]) -> dict[str, str]:
    """Relative path -> sha256 of every file under `inputs` that .dvcignore does not leave out."""
    digests = {}
    for top in inputs:
        top = Path(top)
        if top.is_file():
            digests[top.as_posix()] = _sha256(top)
            continue
        if not top.is_dir():
            continue
        ignore = DvcIgnore(top)
        for folder, subfolders, files in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if not ignore.ignores(Path(folder, d), is_dir=True))
            for name in sorted(files):
                file = Path(folder, name)
                if not ignore.ignores(file, is_dir=False):
                    digests[file.as_posix()] = _sha256(file)
    return digests


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
