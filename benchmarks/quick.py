#!/usr/bin/env python
"""Quick benchmark of the three sasa_kernels ops (under a minute on 2 CPU cores).

    python benchmarks/quick.py                  # CPU, or the GPU when there is one
    python benchmarks/quick.py --device cpu --out benchmarks/results/my-run   # also save CSV + PNGs

Times ``project`` (replace mode), ``project_rmsnorm`` and ``probe`` (with the final RMSNorm) on a
few realistic shapes (rows 1, 512, 4096 at d=4096; probe B=1 and 64 sequences, 8 probes), in fp32
and bf16, for every backend ``sk.backends(device)`` reports, against PyTorch eager (the
``sk.reference`` composite) and ``torch.compile`` of it, all measured in this run. It prints one
line per shape: the times, and each backend's speedup ``median(baseline) / median(backend)``
(> 1 = faster). Runs from a plain checkout or with only the package installed; the harness is
loaded from this file's folder. The full grid is ``benchmarks/bench_ops.py --full``.
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
    ap.add_argument("--out", default=None, help="also write ops.csv, table.txt and PNGs to this folder")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline (saves ~20 s)")
    ap.add_argument("--threads", default=None, help="CPU thread count(s), e.g. 1 or 1,2 (default: torch's)")
    args = ap.parse_args(argv)
    forward = ["--smoke", "--ops", "project,project_rmsnorm,probe_norm", "--print", "compact", "--no-floors"]
    if args.device:
        forward += ["--device", args.device]
    forward += ["--out", args.out] if args.out else ["--no-save"]
    if args.no_compile:
        forward.append("--no-compile")
    if args.threads:
        forward += ["--threads", args.threads]
    return bench_ops.main(forward)


if __name__ == "__main__":
    sys.exit(main())
