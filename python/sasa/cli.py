"""The ``sasa`` command line: ``calibrate``, ``score``, ``generate``, ``demo`` and the commands of
:data:`COMMAND_MODULES`.

Errors a user can fix (a missing file, a bad manifest line, an unknown model type, bad flags) print
one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

# CLIError lives in its own module: under `python -m sasa.cli` this file runs as __main__ while the
# command modules import sasa.cli, and one class must be what they raise and what main() catches.
from ._cli_error import CLIError
from ._cli_paths import check_output_paths

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
#: Modules that add a subcommand: each has ``register_command(subparsers, add_common_flags)``, which
#: adds its parser with ``set_defaults(func=...)``; the function raises :class:`CLIError` (or
#: ``ValueError``/``TypeError``/``OSError``) for a problem the user can fix. They must import only
#: the standard library at module level, so that ``sasa --help`` stays fast.
COMMAND_MODULES: tuple[str, ...] = ("sasa.bench", "sasa.locate", "sasa.evaluate", "sasa.organism.cli", "sasa.serve.cli")
DTYPES = ("float32", "bfloat16", "float16")
# Kept in step with sasa.config (which imports torch, too slow for --help): checked by a test.
SCOPES = ("last", "all")
MODES = ("replace", "residual", "interpolate")
FEATURES = ("logits", "hidden")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_MODULES = ("transformers", "safetensors", "tqdm", "PIL", "tokenizers")


# --- loading ------------------------------------------------------------------------------------


def check_model_dir(directory: str) -> Path:
    """Cheap checks of ``--model`` (before any file is read or weight loaded): a directory with a
    ``config.json`` of a supported ``model_type``."""
    from .families import SUPPORTED_MODEL_TYPES

    path = Path(directory)
    if not (path / "config.json").is_file():
        if not path.exists() and _HUB_ID.match(str(directory)):
            raise CLIError(
                f"--model: {directory!r} looks like a Hugging Face Hub id; sasa loads local directories only "
                f"(nothing is downloaded): download it first (e.g. `hf download {directory} --local-dir DIR`) and "
                "pass the directory"
            )
        raise CLIError(f"--model: {path} has no config.json (expected a save_pretrained directory)")
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise CLIError(f"--model: {path / 'config.json'} is not a valid config ({err})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CLIError(f"--model: model_type {model_type!r} is not supported; supported: {sorted(SUPPORTED_MODEL_TYPES)}")
    return path


def load_model(directory: str, device: str, dtype: str) -> tuple[Any, Any]:
    """``(model, processor)`` from a ``save_pretrained`` directory, by its config's architecture.

    Placed as the command's flags say (:func:`sasa.distributed.current_placement`): on ``device``;
    tensor parallel over the torchrun processes (``--tp``, or torchrun with several processes); or
    with ``--device-map``."""
    import torch
    import transformers as tf

    from .auto import is_vision_language, load_processor
    from .distributed import load_pretrained

    path = check_model_dir(directory)
    device = check_device(device)
    vision = is_vision_language(path)
    auto = tf.AutoModelForImageTextToText if vision else tf.AutoModelForCausalLM
    model = load_pretrained(path, auto, dtype=getattr(torch, dtype), device=device)
    return model, load_processor(path, vision)


def check_device(name: str) -> str:
    """``--device`` as given, if it names a usable cpu or cuda device; else :class:`CLIError`."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise CLIError(f"--device: {name!r} is not a device (expected cpu, cuda, cuda:1, ...)") from None
    if device.type == "meta":
        raise CLIError("--device: meta holds no weights; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device: {name} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device: {name!r}: sasa runs on cpu and cuda")
    from .distributed import current_placement

    if current_placement().tensor_parallel:
        # transformers puts each rank's shard on that rank's accelerator (cuda:LOCAL_RANK) when
        # there is one, else on the CPU: the flag can only agree with that.
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        if device.index is not None or device.type != expected:
            raise CLIError(f"--device: {name!r} with tensor parallelism: each rank uses its own "
                           f"{'cuda:LOCAL_RANK' if expected == 'cuda' else 'CPU'}; pass --device {expected}")
    return name


# --- commands (calibrate, score and generate: sasa._cli_commands) ------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if args.stand_in:
        from .demo import run_demo
    else:
        from .organism.demo import run_demo
    run_demo(out, progress=not args.quiet)
    return 0


# --- parser -------------------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from . import _cli_commands as commands

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="sasa", description="Self-Aware Safety Augmentation for Hugging Face models",
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"sasa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("calibrate", help="fit a probe on a labelled JSONL manifest", formatter_class=fmt)
    add_common_flags(p)
    p.add_argument("--data", required=True, metavar="FILE", help="JSONL manifest: prompt, label, [image], [category]")
    p.add_argument("--safety-layer", type=int, required=True, help="0-based decoder-block index s")
    p.add_argument("--fused-layer", type=int, required=True, help="0-based decoder-block index f > s")
    p.add_argument("--scope", default=SCOPES[0], choices=SCOPES,
                   help="last: project the last prompt token (fast); all: every token (paper-faithful)")
    p.add_argument("--mode", default=MODES[0], choices=MODES, help="how H_s and its projection combine")
    p.add_argument("--coef", type=float, default=1.0, help="lambda for --mode residual/interpolate")
    p.add_argument("--feature", default=FEATURES[0], choices=FEATURES, help="what the probe reads")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate the thresholds are set for")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the probe and its plots")
    p.set_defaults(func=commands.cmd_calibrate)

    p = sub.add_parser("score", help="score every row of a manifest with a saved probe", formatter_class=fmt)
    add_common_flags(p, raw_prompt=False)
    p.add_argument("--probe", required=True, metavar="DIR", help="directory written by 'sasa calibrate'")
    p.add_argument("--data", required=True, metavar="FILE", help="JSONL manifest (labels optional)")
    p.add_argument("--out", metavar="FILE", help="write one JSON row per input here (default: stdout)")
    p.set_defaults(func=commands.cmd_score)

    p = sub.add_parser("generate", help="guarded generation for one prompt", formatter_class=fmt)
    add_common_flags(p, batching=False, raw_prompt=False)
    p.add_argument("--probe", required=True, metavar="DIR", help="directory written by 'sasa calibrate'")
    p.add_argument("--prompt", required=True, help="the user's request")
    p.add_argument("--image", metavar="FILE", help="an image for a vision-language model")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit")
    p.set_defaults(func=commands.cmd_generate)

    p = sub.add_parser("demo", help="the shipped model organism, unguarded and guarded; timed (no downloads)",
                       formatter_class=fmt)
    add_common_flags(p, model=False, batching=False, raw_prompt=False)
    p.add_argument("--out", metavar="DIR", help="also save the demo's files here (eval tables and plots; "
                   "with --stand-in: its probe and plots)")
    p.add_argument("--stand-in", action="store_true",
                   help="the seeded random text-only stand-in instead (calibrated on the bundled prompts; shows "
                        "the plumbing, not the method)")
    from .organism import shipped_inputs  # standard library only

    p.set_defaults(func=cmd_demo, implicit_inputs=shipped_inputs())  # sasa._cli_paths: --out may not be in them
    for module_name in COMMAND_MODULES:
        try:  # TODO(lead): plain import once every module exists
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue
            raise
        module.register_command(sub, add_common_flags)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size: expected >= 1")
    if getattr(args, "quiet", False):
        # --quiet covers transformers' own bars too ("Loading weights", "Writing model shards").
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass  # reported as a missing extra when the command needs transformers
    from .distributed._session import CommandSession

    # Under torchrun: the process group, rank-0-only output, and one message for a failure on any
    # rank (sasa.distributed._session). Otherwise it changes nothing.
    session = CommandSession(args)
    try:
        with session:
            check_output_paths(args)  # every command: no output may overwrite an input (sasa._cli_paths)
            return args.func(args)
    except ModuleNotFoundError as err:
        top = err.name.split(".")[0] if err.name else None
        if args.debug or top not in _HF_MODULES + ("accelerate",):
            raise
        extra = "dist" if top == "accelerate" else "hf"
        needs = "--device-map needs" if extra == "dist" else "the sasa command line needs"
        session.report(f"sasa {args.command}: error: {err.name} is not installed; {needs} the '{extra}' extra: "
                       f"pip install 'sasa-kernels[{extra}]'")
        return EXIT_USAGE
    except (CLIError, FileNotFoundError, ValueError, TypeError, OSError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        session.report(f"sasa {args.command}: error{session.rank_suffix()}: {message}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a bug: one line, the shell's status for SIGINT. Reports
        # (eval, locate) are published whole or not at all (sasa._reporting.publish_report).
        if args.debug:
            raise
        session.report(f"sasa {args.command}: interrupted (Ctrl-C); the run did not finish")
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - under torchrun: one line for all ranks, not a traceback each
        if args.debug or not session.distributed:
            raise
        session.report(session.describe_failure(err))
        return 1
    finally:
        session.finish()


if __name__ == "__main__":
    sys.exit(main())
