"""The flags the commands share, and their choice lists (standard library only: ``sasa --help``
stays fast)."""

from __future__ import annotations

import argparse

from sasa.data.formats import FORMATS, MMSB_IMAGE_KINDS

DTYPES = ("float32", "bfloat16", "float16")
# Kept in step with sasa.config (which imports torch, too slow for --help): checked by a test.
SCOPES = ("last", "all")
MODES = ("replace", "residual", "interpolate")
FEATURES = ("logits", "hidden")


def add_common_flags(
    p: argparse.ArgumentParser, *, model: bool = True, batching: bool = True, raw_prompt: bool = True
) -> None:
    """The flags every subcommand shares (``--model`` unless ``model=False``; ``--batch-size`` and
    ``--raw-prompt`` unless turned off)."""
    if model:
        p.add_argument("--model", required=True, metavar="DIR", help="a save_pretrained directory (model and tokenizer/processor)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype the model is loaded in")
    if model:  # placement (sasa.distributed; its names are kept in step with it here, for a fast --help)
        p.add_argument("--tp", action="store_true",
                       help="tensor parallel over the torchrun processes (tp_plan='auto'; on by itself under "
                            "torchrun with several processes): torchrun --nproc-per-node N -m sasa.cli COMMAND ...")
        p.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                       help="under torchrun: how long a rank waits for the others before the run fails")
        p.add_argument("--device-map", choices=("auto", "balanced", "balanced_low_0", "sequential"),
                       help="spread the decoder blocks over the GPUs, the CPU and disk (accelerate); replaces --device")
        p.add_argument("--max-memory", metavar="DEV=SIZE,...", help="with --device-map: limits, e.g. 0=20GiB,cpu=64GiB")
        p.add_argument("--offload-folder", metavar="DIR", help="with --device-map: where offloaded weights are written")
    if batching:
        p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    if raw_prompt:
        p.add_argument("--raw-prompt", action="store_true", help="skip the chat template (the probe records the choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def add_dataset_flags(p: argparse.ArgumentParser, *, data_help: str, out_help: str) -> None:
    """``--data`` (repeatable), ``--format``, ``--image-kind`` and ``--out``."""
    p.add_argument("--data", required=True, action="append", help=data_help)
    p.add_argument("--format", action="append", choices=FORMATS,
                   help="layout of --data (default jsonl); once for all, or once per --data")
    p.add_argument("--image-kind", choices=MMSB_IMAGE_KINDS, help="mm-safetybench images (default SD_TYPO)")
    p.add_argument("--out", required=True, help=out_help)
