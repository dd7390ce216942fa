"""The workspace as DVC sees it: what .dvcignore leaves out, a stage's deps in dvc.yaml, and their fingerprint.

- `DvcIgnore(folder)`: the .dvcignore rules that apply to a folder, matched as DVC matches them (pathspec,
  gitignore syntax). prepare reads the photos DVC hashes, no more and no fewer: the one list of what is
  not data is .dvcignore, so a `.DS_Store` that DVC ignores is skipped by prepare, and a file DVC hashes is read.
- `fingerprint(paths)`: the sha256 of every file DVC would hash under those paths. A stage takes it of
  params.yaml and its deps at its start and compares it before writing (core.cli): what dvc.lock records
  after the stage is then what the stage used.

Imports no numpy: a stage takes the fingerprint before it pins the CPU kernels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from signdigits.core import paths

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


def stage_inputs(name: str) -> list[Path]:
    """params.yaml and the deps dvc.yaml lists for the stage: what DVC hashes into its lock entry."""
    stage = stage_entry(name) or {}
    deps = [dep for dep in stage.get("deps", ()) if isinstance(dep, str)]
    return [paths.PARAMS, *map(Path, deps)]


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


def changed_since(before: dict[str, str], inputs: Iterable[Path]) -> list[str]:
    """The files added, removed or changed since `before` was taken of the same inputs."""
    now = fingerprint(inputs)
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
