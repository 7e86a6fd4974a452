"""Block ``s+1``'s input norm, fused into the projection kernel, without touching the model's module tree.

``sasa_kernels.project_rmsnorm`` computes the projection and block ``s+1``'s input RMSNorm in one
pass; :class:`FusedNormSlot` lets the block read that result instead of recomputing the norm.
"""

from __future__ import annotations

import contextvars
import types
from typing import Any, Optional

import torch
from torch import Tensor, nn

from sasa.distributed.placement import real_device
from sasa.distributed.tensor_parallel import is_dtensor
from sasa.guard.capture import GuardPart
from sasa.hf import compat


class FusedNormSlot(GuardPart):
    """Lets the augmented pass hand block ``s+1`` the kernel's fused ``rmsnorm(h)``.

    Installed on block ``s+1``'s ``input_layernorm`` instance (its ``forward``, an instance
    attribute: no class and no module tree is changed, so ``state_dict`` is unaffected) for the
    guard's lifetime. When the augmented pass, in the current context only, has offered a
    precomputed result for the exact tensor the norm receives, that result is returned; any other
    call (the model's normal forward, another thread) runs the norm's own forward.
    """

    def __init__(self, norm: nn.Module):
        self.norm = norm
        self._offer: contextvars.ContextVar[Optional[tuple[Tensor, Tensor]]] = contextvars.ContextVar(
            "sasa_fused_norm", default=None
        )
        self._had_instance_forward = "forward" in norm.__dict__
        self._previous = norm.__dict__.get("forward")
        slot = self

        def forward(module: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            offer = slot._offer.get()
            if offer is not None and x is offer[0] and not args and not kwargs:
                return offer[1]
            if slot._previous is not None:
                return slot._previous(x, *args, **kwargs)
            return type(module).forward(module, x, *args, **kwargs)

        # A bound method (not a closure over ``norm``) so a copy of the module calls its own forward.
        norm.forward = types.MethodType(forward, norm)

    def offer(self, source: Tensor, normed: Tensor) -> contextvars.Token:
        return self._offer.set((source, normed))

    def withdraw(self, token: contextvars.Token) -> None:
        self._offer.reset(token)

    def remove(self) -> None:
        """Restore the norm's ``forward`` exactly as it was."""
        if self._had_instance_forward:
            self.norm.forward = self._previous
        else:
            self.norm.__dict__.pop("forward", None)


def can_fuse_rmsnorm(norm: Any, family_llama_numerics: bool, dtype: torch.dtype, hidden: int) -> bool:
    """Whether ``norm`` is an RMSNorm the ``sasa_kernels`` fused norm reproduces for this model."""
    weight = getattr(norm, "weight", None)
    if not isinstance(norm, nn.Module) or not isinstance(weight, Tensor) or weight.shape != (hidden,):
        return False
    # The kernels take plain tensors with values: not an offloaded (meta) or tensor-parallel weight.
    if real_device(weight) is None or is_dtensor(weight):
        return False
    if getattr(norm, "bias", None) is not None or compat.rmsnorm_eps(norm) is None:
        return False
    if "RMSNorm" not in type(norm).__name__:
        return False
    # Gemma-style norms multiply in float32 before casting back; identical only for float32.
    return family_llama_numerics or dtype == torch.float32
