"""The model's process of ``sasa serve``: transformers serve's model loader, guarding what it loads.

transformers serve runs each model in a spawned process that loads it with a pickled copy of the
server's ``ModelLoader``. :class:`SASAModelLoader` is that loader with a probe: in the model's
process it loads the model as transformers does, applies the guard to the instance, and replaces
the instance's ``generate`` by :class:`ServedGenerate`, which runs the guarded generation and
reports each request's decision to the API server (:mod:`sasa.serve.decisions`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from torch import Tensor

from sasa.hf import compat
from sasa.serve.decisions import READY, REQUEST_KEY, prompt_key

logger = logging.getLogger(__name__)


class ServedGenerate:
    """``model.generate`` of a served model: guarded, and each call's decision reported.

    A call must carry :data:`~sasa.serve.decisions.REQUEST_KEY` (the API server adds it to every
    request); one without it is refused, so nothing reaches the model by another route. Then
    ``guard.generate`` runs it (a streamer gets nothing of a refused answer), ``(key, refused)``
    goes to ``decisions`` and the guarded sequences are returned, as ``model.generate`` returns them.
    """

    def __init__(self, guard: Any, decisions: Any):
        self.guard = guard
        self.decisions = decisions

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = kwargs.pop(REQUEST_KEY, None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"{REQUEST_KEY}: sasa serve's model generates only for requests of its API server")
        if args:
            raise TypeError("generate: sasa serve passes keyword arguments only")
        result = self.guard.generate(**kwargs)
        self.decisions.put((key, bool(result.flagged.reshape(-1).any())))
        out = result.generate_output
        if isinstance(out, Tensor) or out is None:
            return result.sequences
        out.sequences = result.sequences
        return out


def guard_covers_continuous_batching() -> bool:
    """Whether this sasa's guard covers ``model.init_continuous_batching`` (it then patches the
    instance's method, as it patches ``generate``): tried on a throwaway two-block Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sasa.config import SASAConfig
    from sasa.guard.apply import apply_sasa

    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config).eval()
    probe = (torch.zeros(1, config.vocab_size), torch.zeros(1))
    with apply_sasa(model, SASAConfig(safety_layer=0, fused_layer=1), probe=probe):
        return "init_continuous_batching" in model.__dict__


def guard_loaded_model(model: Any, processor: Any, probe: str, decisions: Any, continuous_batching: bool) -> Any:
    """Apply the probe's guard to ``model``, check it took, and install :class:`ServedGenerate`.

    Raises (so the model's process fails to load and the server does not start) when the guard
    cannot be applied, or when continuous batching is asked of a guard that does not cover it."""
    from sasa.guard.apply import apply_sasa
    from sasa.guard.auto import get_guard

    guard = apply_sasa(model, probe=probe, tokenizer=processor)
    if get_guard(model) is not guard or not guard.active:
        raise RuntimeError("sasa serve: the guard did not attach to the loaded model")
    if continuous_batching and "init_continuous_batching" not in model.__dict__:
        raise RuntimeError(
            "sasa serve: --continuous-batching: this sasa does not guard model.init_continuous_batching; "
            "serve without it"
        )
    model.generate = ServedGenerate(guard, decisions)
    if "init_continuous_batching" in model.__dict__:
        model.init_continuous_batching = ServedBatching(model.init_continuous_batching, decisions)
    return guard


class ServedBatching:
    """``model.init_continuous_batching`` of a served model: the guarded one, whose managers also
    report each request's decision (keyed by :func:`~sasa.serve.decisions.prompt_key`).

    The guard's ``add_request`` (on the manager instance) scores the prompt and, when it refuses
    it, hands the manager's readers a finished output holding the refusal, inside the call; a
    passed request goes to the model. So a request whose output was delivered during its own
    ``add_request`` call was refused."""

    def __init__(self, guarded_init: Callable[..., Any], decisions: Any):
        self.guarded_init = guarded_init
        self.decisions = decisions

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        manager = self.guarded_init(*args, **kwargs)
        guarded_add = manager.__dict__.get("add_request")
        if guarded_add is None:  # fail closed: the guard did not take this manager
            raise RuntimeError("sasa serve: the continuous batching manager is not guarded")
        recorder = compat.record_direct_deliveries(manager)
        decisions = self.decisions

        def add_request(input_ids: Any, *rest: Any, **kwargs: Any) -> Any:
            with recorder(set()) as delivered:
                request_id = guarded_add(input_ids, *rest, **kwargs)
            decisions.put((prompt_key(input_ids), str(request_id) in delivered))
            return request_id

        manager.__dict__["add_request"] = add_request
        return manager


class SASAModelLoader(compat.serving_api()["ModelLoader"]):  # type: ignore[misc]
    """transformers serve's ``ModelLoader``, guarding each model it loads with ``probe``.

    Made from the server's own loader (:meth:`from_loader`, same settings); pickled into the
    model's process with the probe directory and the decisions queue.
    """

    probe: str
    decisions: Any
    continuous_batching: bool

    @classmethod
    def from_loader(cls, loader: Any, probe: str, decisions: Any, continuous_batching: bool) -> "SASAModelLoader":
        guarded = cls.__new__(cls)
        guarded.__dict__.update(vars(loader))  # the settings transformers resolved (device, dtype, ...)
        guarded.probe = probe
        guarded.decisions = decisions
        guarded.continuous_batching = continuous_batching
        return guarded

    def load_model_and_processor(self, model_id: str, on_progress: Optional[Callable] = None) -> tuple[Any, Any]:
        model, processor = super().load_model_and_processor(model_id, on_progress=on_progress)
        guard = guard_loaded_model(model, processor, self.probe, self.decisions, self.continuous_batching)
        self.decisions.put((READY, repr(guard)))
        logger.info("sasa serve: %s guarded by %s", model_id, guard)
        return model, processor
