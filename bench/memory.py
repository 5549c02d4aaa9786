"""Peak memory of one LSTM training step (forward + backward with all weight gradients) and of one
inference forward: rnnfast vs torch, each in a fresh subprocess, measured as the growth of the
process's peak resident set (VmHWM) over its baseline after imports and input creation.

    python bench/memory.py [--shape B,T,H] [--cell lstm|gru]

Prints one CSV row per library and mode: library,mode,cell,B,T,H,peak_mb
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, numpy as np
lib, mode, cell, B, T, H = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
G = {"lstm": 4, "gru": 3}[cell]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, H)).astype(np.float32)
if lib == "torch":
    import torch
    mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H)
    xt = torch.from_numpy(x)
    if mode == "train":
        xt.requires_grad_(True)
    base = hwm()
    if mode == "train":
        y, _ = mod(xt)
        y.backward(torch.ones_like(y))
    else:
        with torch.no_grad():
            mod(xt)
else:
    import rnnfast
    layer = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(H, H, seed=0)
    layer.train(mode == "train")
    base = hwm()
    y, _ = layer(x)
    if mode == "train":
        layer.backward(np.ones_like(y))
print(f"{hwm() - base:.1f}")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="64,50,512", help="B,T,H (I = H)")
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    args = p.parse_args()
    B, T, H = (int(v) for v in args.shape.split(","))
    print("library,mode,cell,B,T,H,peak_mb")
    for mode in ("infer", "train"):
        for lib in ("rnnfast", "torch"):
            out = subprocess.run([sys.executable, "-c", CHILD, lib, mode, args.cell, str(B), str(T), str(H)],
                                 capture_output=True, text=True, check=True).stdout.strip()
            print(f"{lib},{mode},{args.cell},{B},{T},{H},{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
