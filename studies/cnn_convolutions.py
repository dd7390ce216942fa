"""Do the CNN's bits depend on where its convolutions run? oneDNN (torch's default on x86) against ATen's
im2col + BLAS path (what `runtime.cpu_kernels: portable` uses), with time per epoch.

    PYTHONPATH=src python studies/cnn_convolutions.py [--epochs 3] [--out studies/cnn_convolutions.json]
    PYTHONPATH=src python studies/cnn_convolutions.py --smoke --out /tmp/x.json   # CI: 2 rows, 2 epochs

Each row trains train_cnn's network (params.yaml) for --epochs on the real train part in a fresh
process, with the portable pins of core/kernels.py except the ones the row changes: oneDNN on or off,
oneDNN's highest ISA (ONEDNN_MAX_CPU_ISA), and the thread count. It prints the sha256 of the model's
weights and the median seconds per epoch after the first. ONEDNN_VERBOSE=1 in a row's environment names the
oneDNN implementation each convolution ran (the `impl` rows below). Rows that must agree bit for bit
name the same digest; oneDNN under another ISA, or ATen against oneDNN, show whether the choice moves bits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROWS = [  # (name, oneDNN on, ONEDNN_MAX_CPU_ISA, threads)
    ("ATen, 2 threads", False, "AVX2", 2),
    ("ATen, 2 threads, again", False, "AVX2", 2),
    ("ATen, 1 thread", False, "AVX2", 1),
    ("ATen, 2 threads, oneDNN ISA AVX512_CORE (unused)", False, "AVX512_CORE", 2),
    ("oneDNN AVX2, 2 threads", True, "AVX2", 2),
    ("oneDNN AVX2, 2 threads, again", True, "AVX2", 2),
    ("oneDNN AVX2, 1 thread", True, "AVX2", 1),
    ("oneDNN AVX512_CORE, 2 threads", True, "AVX512_CORE", 2),
    ("oneDNN SSE41, 2 threads", True, "SSE41", 2),
]

CHILD = """
import hashlib, json, logging, statistics, sys, time, dataclasses
import numpy as np, torch
onednn, threads, epochs = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
from signdigits.core.params import Composite, load_params
from signdigits.training.engine import _use_deterministic_algorithms, train
from signdigits.training.stage import load_stage_data
torch.backends.mkldnn.enabled = onednn
_use_deterministic_algorithms()
torch.set_num_threads(threads)
cnn = load_params().train_cnn
data = load_stage_data(torch.device("cpu"))
stamps = []
handler = logging.Handler()
handler.emit = lambda record: " epoch " in record.getMessage() and stamps.append(time.perf_counter())
logging.getLogger("signdigits.training.engine").addHandler(handler)
logging.getLogger("signdigits.training.engine").setLevel(logging.INFO)
cfg = dataclasses.replace(cnn.model, epochs=epochs, composite=Composite())  # the plain photos, as the rows recorded
result = train(cfg, data.train, data.val, data.classes, "cnn")
digest = hashlib.sha256()
for key, value in result.model.state_dict().items():
    digest.update(key.encode()); digest.update(value.numpy().tobytes())
print(json.dumps({"sha256": digest.hexdigest()[:16], "s_per_epoch": statistics.median(np.diff(stamps)),
                  "val_accuracy": result.history[-1]["val_accuracy"]}))
"""


def run_row(onednn: bool, isa: str, threads: int, epochs: int) -> dict:
    from signdigits.core.kernels import PORTABLE_ENV

    env = {**os.environ, **PORTABLE_ENV, "ONEDNN_MAX_CPU_ISA": isa, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(int(onednn)), str(threads), str(epochs)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    impls = sorted(
        {m.group(1) for line in lines if (m := re.search(r"onednn_verbose.*?,exec,cpu,convolution,([^,]+),", line))}
    )
    return {**json.loads(lines[-1]), "onednn_convolutions": impls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("studies/cnn_convolutions.json"))
    parser.add_argument("--smoke", action="store_true", help="CI's smoke run: ATen and oneDNN on 1 thread, 2 epochs")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 2  # the first epoch is a warm-up: one gap to time
    rows = {}
    for name, onednn, isa, threads in [ROWS[2], ROWS[6]] if args.smoke else ROWS:
        rows[name] = run_row(onednn, isa, threads, args.epochs)
        r = rows[name]
        print(f"{name:<50} {r['sha256']}  {r['s_per_epoch']:.2f} s/epoch  val {r['val_accuracy']:.4f}  "
              f"{' '.join(r['onednn_convolutions']) or '-'}", flush=True)  # fmt: skip
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    args.out.write_text(json.dumps({"cpu": cpu, "epochs": args.epochs, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
