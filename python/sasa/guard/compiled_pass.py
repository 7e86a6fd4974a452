"""``scope="last"`` compiled: the one-token pass's blocks as one ``torch.compile`` graph (opt-in).

With :attr:`sasa.SASAConfig.compile_augmented`, blocks ``s+2..L-1`` run for the augmented token
as one compiled function instead of one eager block call at a time (docs/method.md section 4).
One token per row through 16+ blocks is launch- and interpreter-bound on a GPU; the compiled graph
removes the Python between kernels and fuses the small ones. It runs after the normal forward
(it does not ride along inside it, :mod:`sasa.guard.ride`): the blocks must be traced together.

The compiled function calls each block's ``forward``, not ``block(...)``: ``__call__`` would run
the blocks' forward hooks, and sasa's own recorder hooks (inert for this token: they only record
the normal pass) read a :class:`contextvars.ContextVar`, which dynamo cannot trace. Other forward
hooks a user put on the decoder blocks do not see the augmented token in this mode; hooks on the
blocks' submodules, and wrappers that replace ``forward`` (accelerate's), still run.

``fullgraph=True``: the function either compiles whole or raises before any of it runs, so a
failure to compile (a block dynamo cannot trace, no C++ compiler for inductor, too many
recompilations) leaves the keys and values untouched; the pass then runs eagerly, and the guard
logs one warning and stays eager from then on. An error while the compiled code runs is not a
compile failure: it propagates and the guard fails closed, as for the eager pass.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from sasa.guard.one_token import SwappedKV
from sasa.hf import compat

logger = logging.getLogger("sasa")

#: What dynamo and inductor raise when a function cannot be compiled (InductorError, a missing
#: C++ compiler, an untraceable call are all TorchDynamoException subclasses; the recompile limit
#: under fullgraph is not).
_COMPILE_FAILURES: tuple[type[BaseException], ...] = (
    torch._dynamo.exc.TorchDynamoException,
    torch._dynamo.exc.FailOnRecompileLimitHit,
)


def _one_token_blocks(blocks: Sequence[nn.Module], h: Tensor, kwargs: Sequence[dict[str, Any]], view: SwappedKV) -> Tensor:
    """The eager pass's loop (OneTokenPass.step), in one function for dynamo to trace."""
    for block, block_kwargs in zip(blocks, kwargs):
        h = compat.block_output(block.forward(h, **block_kwargs))
        view.restore()
    return h


class CompiledBlocks:
    """One guard's compiled block loop; :meth:`run` returns ``None`` once compiling has failed.

    ``dynamic=True``: prompt length and batch size are symbolic from the first compile, so one
    graph serves every prompt (dynamo still specializes size-1 dimensions: batch 1 gets its own
    graph, as does a batch without padding, whose mask is ``None``). Compiled code is cached per
    process, so a guard applied again to the same model does not compile again.
    """

    def __init__(self) -> None:
        self._compiled = torch.compile(_one_token_blocks, fullgraph=True, dynamic=True)
        #: Why compiling failed (then every later call runs eagerly); ``None`` while it works.
        self.failure: Optional[str] = None
        #: Calls that ran compiled (the tests check the compiled path really ran).
        self.compiled_calls = 0

    def run(self, blocks: Sequence[nn.Module], h: Tensor, kwargs: Sequence[dict[str, Any]], view: SwappedKV) -> Optional[Tensor]:
        """The state after the last of ``blocks``; ``None``: not compiled, run them eagerly."""
        if self.failure is not None:
            return None
        try:
            out = self._compiled(list(blocks), h, list(kwargs), view)
        except _COMPILE_FAILURES as err:
            # Nothing ran under fullgraph, so nothing was swapped (the caller restores the view anyway).
            self.failure = f"{type(err).__name__}: {_first_line(err)}"
            logger.warning(
                "sasa: compile_augmented: the augmented pass could not be compiled (%s); it runs eagerly "
                "from now on (same results, no speed-up)", self.failure,
            )
            return None
        self.compiled_calls += 1
        return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no message"
