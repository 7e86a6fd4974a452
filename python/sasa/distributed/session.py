"""One ``sasa`` command under ``torchrun``: process group, rank-0 output, one failure message.

:class:`CommandSession` wraps a parsed command (``sasa.cli.main``). With several ``torchrun``
processes (or ``--tp``) it joins the process group with ``--dist-timeout`` on every collective and
has the model loaded tensor-parallel; the non-zero ranks are made silent: their stdout goes
nowhere, progress bars, warnings and log messages are off, and their ``--out`` points into a
private temporary directory removed at the end. So only rank 0 writes files and prints, while every
rank runs the whole command (tensor parallelism needs each one in every forward).

A failure is reported once for all ranks (:meth:`CommandSession.report`, first rank wins); the
others fail as their next collective finds a peer gone or times out, and exit non-zero quietly.
For a command without model flags (``sasa demo``) the session does nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

from sasa.distributed import env as _env
from sasa.distributed.load import Placement, parse_max_memory, using_placement
from sasa.distributed.tensor_parallel import reading_sharded_weights

_SESSIONS = itertools.count()  # every rank runs the same sessions in the same order


class CommandSession:
    """Context manager around ``args.func(args)``; see the module docstring."""

    def __init__(self, args: Any):
        self.args = args
        self.env = _env.torchrun_env()
        self.distributed = False
        self._owns_group = False
        self._key = f"sasa/failure/{next(_SESSIONS)}"
        self._stack = contextlib.ExitStack()

    @property
    def applies(self) -> bool:
        """Commands that load a model through the common flags (those have ``--tp``)."""
        return hasattr(self.args, "tp")

    def placement(self) -> Placement:
        """The :class:`Placement` the flags ask for; ``ValueError`` naming the flag if they conflict."""
        args = self.args
        several = self.env is not None and self.env.world_size > 1
        timeout = args.dist_timeout
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"--dist-timeout: expected a positive number of seconds, got {timeout!r}")
        if args.tp and self.env is None:
            raise ValueError(
                "--tp: tensor parallelism runs one process per device under torchrun, e.g. "
                f"`torchrun --nproc-per-node 2 -m sasa.cli {args.command} --tp ...`"
            )
        if several and args.device_map is not None:
            raise ValueError(
                f"--device-map: cannot be combined with tensor parallelism (torchrun started {self.env.world_size} "
                "processes); run one process with --device-map, or several with --tp"
            )
        if (args.max_memory or args.offload_folder) and args.device_map is None:
            raise ValueError("--max-memory/--offload-folder: only used with --device-map")
        max_memory = parse_max_memory(args.max_memory) if args.max_memory else None
        return Placement(tensor_parallel=bool(args.tp or several), device_map=args.device_map,
                         max_memory=max_memory, offload_folder=args.offload_folder)

    def __enter__(self) -> "CommandSession":
        if not self.applies:
            return self
        try:
            placement = self.placement()
            self._stack.enter_context(using_placement(placement))
            if placement.tensor_parallel and self.env is not None and self.env.world_size > 1:
                self._owns_group = not _env.is_initialized()
                _env.init_process_group(self.args.dist_timeout)
                self.distributed = True
                # The commands read sampled weights (the probe fingerprint) outside sasa.apply_sasa.
                self._stack.enter_context(reading_sharded_weights())
                if self.env.rank != 0:
                    self._silence()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self._stack.close()  # stdout and loggers are back before any error message is printed

    def rank_suffix(self) -> str:
        """`` (rank r of n)`` for a distributed command, else ``""``."""
        return _env.describe_rank() if self.distributed else ""

    def report(self, line: str) -> None:
        """Print ``line`` (an error) on stderr, once across the ranks: the first rank to fail says it."""
        if not self.distributed or _env.claim_report(self._key):
            _env.print_error(line)

    def describe_failure(self, err: BaseException) -> str:
        """One line for an unexpected error on this rank, or for a collective that lost its peers."""
        command = self.args.command
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if _env.is_peer_failure(err):
            return (f"sasa {command}: error{self.rank_suffix()}: lost the other ranks (one failed, exited, or did not "
                    f"answer within --dist-timeout {self.args.dist_timeout:g} s): {text}")
        return f"sasa {command}: error{self.rank_suffix()}: {type(err).__name__}: {text} (--debug shows the traceback)"

    def finish(self) -> None:
        """Leave the process group this session joined (after the command, successful or not)."""
        if self._owns_group:
            with contextlib.suppress(Exception):
                _env.destroy_process_group()
            self._owns_group = False

    def _silence(self) -> None:
        args = self.args
        if hasattr(args, "quiet"):
            args.quiet = True
        if getattr(args, "out", None):
            scratch = Path(tempfile.mkdtemp(prefix=f"sasa-rank{self.env.rank}-"))
            self._stack.callback(shutil.rmtree, scratch, True)
            args.out = str(scratch / Path(args.out).name)
        devnull = self._stack.enter_context(open(os.devnull, "w"))
        self._stack.enter_context(contextlib.redirect_stdout(devnull))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name in ("sasa", "transformers"):
            logger = logging.getLogger(name)
            self._stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
