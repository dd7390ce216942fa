"""Every script of studies/ and benchmarks/ runs in CI in a smoke mode: the real code path, end to end, on a tiny
reproduced repository, so a script that no longer runs (issue 34: choose_familiarity's `ndarray.numpy`) fails here.

A new script must get an entry in SMOKE (its smoke arguments) or in ELSEWHERE (the test that runs it);
test_every_script_has_a_smoke_run fails until it does. Smoke runs write to temporary folders only, never
into the repository's studies/ or benchmarks/ files.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, copy_repository, digit_image

from signdigits.devtools import venv_env

# script -> its smoke arguments; {repo}: the tiny reproduced repository (also the cwd), {tmp}: a scratch
# folder, {foreign}: a tiny npz laid out like foreign_dev.npz
SMOKE = {
    "studies/choose_recipe.py": ["--smoke", "--out", "{tmp}/recipe.json"],
    "studies/choose_cnn.py": ["--smoke", "--out", "{tmp}/cnn.json"],
    "studies/choose_backgrounds.py": ["{foreign}", "--smoke", "--out", "{tmp}/backgrounds.json"],
    "studies/choose_familiarity.py": ["--out", "{tmp}/familiarity.json"],
    "studies/foreign.py": ["--smoke", "{tmp}/photos", "--out", "{tmp}/foreign"],
    "studies/foreign_photos.py": ["{foreign}", "--model", "models/train_cnn.pt"],
    "studies/seeds.py": ["--repo", "{repo}", "--seeds", "1"],  # 1, not the repo's seed: trains
    "studies/thread_bits.py": [],
    "benchmarks/predict_memory.py": ["--photos", "20", "--model", "models/train_best.pt", "--raw", "data/raw"],
    "benchmarks/prepare_photos.py": ["--photos", "2", "--rounds", "1", "--raw", "data/raw"],
    "benchmarks/scale.py": ["--repo", "{repo}", "--factor", "2", "--stages", "prepare,split,train_base"],
}
ELSEWHERE = {"benchmarks/bench.py": ("tests/test_bench.py", "--quick")}  # script -> (test file, its smoke flag)
SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix() for folder in ("studies", "benchmarks") for p in (ROOT / folder).glob("*.py")
)


def test_every_script_has_a_smoke_run():
    missing = [s for s in SCRIPTS if s not in SMOKE and s not in ELSEWHERE]
    assert not missing, f"give these a smoke mode and an entry in SMOKE: {', '.join(missing)}"
    assert set(SMOKE) | set(ELSEWHERE) <= set(SCRIPTS), "SMOKE or ELSEWHERE names a script that is gone"
    for script, (test, flag) in ELSEWHERE.items():
        text = (ROOT / test).read_text()
        assert script in text and flag in text, f"{test} does not run {script} {flag}"


def studies_and_benchmarks() -> dict[str, str]:
    return {
        p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("studies", "benchmarks")
        for p in sorted((ROOT / folder).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def tiny_reproduced(tiny_pipeline, tmp_path_factory) -> dict[str, Path]:
    """A copy of the session's tiny reproduced repository (every model trained), and a tiny npz of photos from
    "elsewhere" (two sources)."""
    repo = copy_repository(tiny_pipeline, tmp_path_factory.mktemp("scripts") / "repo")
    rng = np.random.default_rng(1)
    labels = np.arange(20) % 10
    foreign = repo.parent / "foreign.npz"
    np.savez(
        foreign,
        images=np.stack([digit_image(d, 24, rng) for d in labels]),
        labels=labels,
        source=np.array(["left", "right"] * 10),
    )
    return {"repo": repo, "foreign": foreign}


@pytest.mark.integration
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_script_runs_in_its_smoke_mode(script, tiny_reproduced, tmp_path):
    places = {"repo": tiny_reproduced["repo"], "foreign": tiny_reproduced["foreign"], "tmp": tmp_path}
    args = [arg.format(**places) for arg in SMOKE[script]]
    before = studies_and_benchmarks()
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=tiny_reproduced["repo"],
        env={**venv_env(), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script} printed nothing"
    assert studies_and_benchmarks() == before, f"{script} wrote into the repository's studies/ or benchmarks/"
    if "--out" in args:
        assert Path(args[args.index("--out") + 1]).exists(), f"{script} wrote nothing to its --out"
