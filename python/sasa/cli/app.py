"""The ``sasa`` command: the parser, built from :data:`COMMAND_MODULES`, and :func:`main`.

The one place that knows every command. Each command lives in its own module under
:mod:`sasa.cli.commands` and imports the shared pieces (:mod:`sasa.cli.errors`, :mod:`sasa.cli.flags`,
:mod:`sasa.cli.loading`, :mod:`sasa.cli.paths`), never this module.

Errors a user can fix (a missing file, a bad manifest line, an unknown model type, bad flags) print
one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence

from sasa._faces import HF_EXTRA
from sasa.cli.errors import CLIError
from sasa.cli.flags import add_common_flags
from sasa.cli.paths import check_output_paths

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
#: The modules that add a subcommand, in ``sasa --help`` order: each has
#: ``register_command(subparsers, add_common_flags)``, which adds its parser with
#: ``set_defaults(func=...)``; the function raises :class:`CLIError` (or ``ValueError``/``TypeError``/
#: ``OSError``) for a problem the user can fix. They must import only the standard library at module
#: level, so that ``sasa --help`` stays fast.
COMMAND_MODULES: tuple[str, ...] = tuple(
    f"sasa.cli.commands.{name}"
    for name in ("calibrate", "score", "generate", "demo", "bench", "locate", "eval", "organism", "serve")
)


def build_parser() -> argparse.ArgumentParser:
    from sasa import __version__

    parser = argparse.ArgumentParser(prog="sasa", description="Self-Aware Safety Augmentation for Hugging Face models",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sasa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_command(sub, add_common_flags)
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
    from sasa.distributed.session import CommandSession

    # Under torchrun: the process group, rank-0-only output, and one message for a failure on any
    # rank (sasa.distributed.session). Otherwise it changes nothing.
    session = CommandSession(args)
    try:
        with session:
            check_output_paths(args)  # every command: no output may overwrite an input (sasa.cli.paths)
            return args.func(args)
    except ModuleNotFoundError as err:
        top = err.name.split(".")[0] if err.name else None
        if args.debug or top not in HF_EXTRA + ("accelerate",):
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

