"""The dataset formats sasa reads, and the command-line flags that choose them (standard library
only, so commands can add them without importing torch)."""

from __future__ import annotations

import argparse

#: ``sasa.read_dataset`` formats: ours, and the public benchmarks' published layouts.
FORMATS: tuple[str, ...] = ("jsonl", "mm-safetybench", "figstep", "vlguard")
#: The image kinds of an MM-SafetyBench copy.
MMSB_IMAGE_KINDS: tuple[str, ...] = ("SD", "TYPO", "SD_TYPO")


def add_dataset_flags(p: argparse.ArgumentParser, *, data_help: str, out_help: str) -> None:
    """``--data`` (repeatable), ``--format``, ``--image-kind`` and ``--out``."""
    p.add_argument("--data", required=True, action="append", help=data_help)
    p.add_argument("--format", action="append", choices=FORMATS,
                   help="layout of --data (default jsonl); once for all, or once per --data")
    p.add_argument("--image-kind", choices=MMSB_IMAGE_KINDS, help="mm-safetybench images (default SD_TYPO)")
    p.add_argument("--out", required=True, help=out_help)
