"""The ``sasa serve`` subcommand (standard-library imports only at module level).

    sasa serve --model DIR --probe PROBE_DIR [--host 127.0.0.1] [--port 8000] [--continuous-batching]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from sasa.cli.errors import CLIError
from sasa.cli.loading import check_device, check_model_dir

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise CLIError(f"--port: expected 1..65535, got {port}")
    return port


def cmd_serve(args: argparse.Namespace) -> int:

    model_dir = check_model_dir(args.model)
    probe = Path(args.probe)
    if not (probe / "sasa_config.json").is_file():
        raise CLIError(f"--probe: {probe} is not a saved probe directory (no sasa_config.json)")
    check_port(args.port)
    if args.decision_timeout <= 0:
        raise CLIError(f"--decision-timeout: expected > 0 seconds, got {args.decision_timeout}")
    try:
        from sasa.serve.server import SASAServe
    except ImportError as err:
        raise CLIError(f"{err}") from None
    except RuntimeError as err:  # this transformers serves another way (sasa.hf.compat.serving_api)
        raise CLIError(str(err)) from None
    if args.continuous_batching:
        from sasa.serve.engine import guard_covers_continuous_batching

        # Checked again in the model's process, on the loaded model; this one answers in a second.
        if not guard_covers_continuous_batching():
            raise CLIError("--continuous-batching: this sasa's guard does not cover model.init_continuous_batching, "
                           "so batched requests would not be guarded; serve without it")
    try:
        SASAServe(
            probe=str(probe.resolve()),
            decision_timeout=args.decision_timeout,
            force_model=str(model_dir.resolve()),
            continuous_batching=args.continuous_batching,
            device=check_device(args.device),
            dtype=args.dtype,
            host=args.host,
            port=args.port,
            max_model_len=args.max_model_len,
            log_level="warning" if args.quiet else "info",
            model_timeout=-1,
        )
    except RuntimeError as err:
        # The model's process failed to load or guard the model (it says why): nothing was served.
        if args.debug:
            raise
        raise CLIError(f"the server did not start: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return 0


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    p = subparsers.add_parser(
        "serve", help="an OpenAI-compatible HTTP server (transformers serve) with every answer guarded",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs transformers serve's server on one model with the probe's guard in its model process. "
                    "A refused request answers the probe's refusal text with finish_reason \"content_filter\".",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="a save_pretrained directory (model and processor)")
    p.add_argument("--probe", required=True, metavar="DIR", help="the model's probe directory ('sasa calibrate')")
    add_common_flags(p, model=False, batching=False, raw_prompt=False)
    # The dtype the model loads in: transformers serve's "auto" (the checkpoint's) by default.
    p.set_defaults(dtype="auto")
    for action in p._actions:
        if action.dest == "dtype":
            action.choices = DTYPE_CHOICES
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--continuous-batching", action="store_true",
                   help="transformers' continuous batching (refused unless the guard covers it)")
    p.add_argument("--max-model-len", type=int, default=None, metavar="TOKENS",
                   help="longest prompt plus answer a request may have (default: the model's context)")
    p.add_argument("--decision-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long the API server waits for a request's guard decision once its answer ended")
    p.set_defaults(func=cmd_serve)
