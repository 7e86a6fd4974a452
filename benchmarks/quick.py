#!/usr/bin/env python
"""Quick benchmark of the sasa_kernels ops (1-2 minutes on 2 CPU cores, most of it compiling).

    python benchmarks/quick.py                  # CPU, or the GPU when there is one
    python benchmarks/quick.py --device cpu --out benchmarks/results/my-run   # also save CSV + PNGs

``bench_ops.py``'s ``smoke`` grid: ``project``, ``project_rmsnorm`` and ``probe_norm`` at rows 1,
512 and 4096 x d=4096 (probe: 1 and 64 sequences, 8 probes), fp32 and bf16, every backend of
``sk.backends(device)`` against eager, ``torch.compile`` and the copy floor, interleaved, plus
the host-overhead rows. One line per shape: times and each backend's ratios to torch.compile
and to the floor (above 1 = slower; ``!`` marks a kernel slower than torch.compile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", default=None, help="also write ops.csv, the tables and PNGs to this folder")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline (saves ~20 s)")
    ap.add_argument("--threads", default=None, help="CPU thread count(s), e.g. 1 or 1,2 (default: torch's)")
    args = ap.parse_args(argv)
    forward = ["--smoke", "--ops", "project,project_rmsnorm,probe_norm", "--print", "summary"]
    forward += ["--device", args.device] if args.device else []
    forward += ["--out", args.out] if args.out else ["--no-save"]
    forward += ["--no-compile"] if args.no_compile else []
    forward += ["--threads", args.threads] if args.threads else []
    return bench_ops.main(forward)


if __name__ == "__main__":
    sys.exit(main())
