"""Every difference between ``transformers`` versions (5.17 .. newest 5.x) that ``sasa`` meets.

Nothing outside this module imports from ``transformers`` internals or branches on its version.
What differs, and how it is handled here:

- The cache argument of decoder blocks is ``past_key_values`` in 5.17 and ``cache`` in later
  releases (with ``past_key_values`` deprecated). We never name it: :func:`is_cache` recognises
  the cache object wherever it sits in a block's keyword arguments, and the cache's ``update``
  method (same signature in all 5.x) is what the attention modules call.
- Decoder blocks return a tensor in 5.x; some older code paths returned a tuple. :func:`block_output`
  accepts both.
- Where the decoder lives: ``get_decoder()`` on text models; vision-language models expose the
  language model as ``model.model.language_model`` (and ``get_decoder()`` returns it in most
  releases), Llama 4 as ``model.language_model.model``. :func:`find_decoder` tries those in order.
- The cache argument of the *top-level* forward and its output field: ``past_key_values`` in 5.17,
  ``cache`` later (:func:`cache_argument`, :func:`output_cache`; used by the benchmarks).
- ``logits_to_keep`` on the top-level forward (lets the normal pass skip the vocabulary matmul for
  every prompt position but the last); checked by signature.
- How ``generate`` resolves its settings (``generation_config=`` merged with the model's own and the
  keyword arguments): :func:`effective_generation_config` re-does it with public
  ``GenerationConfig`` methods only (``update`` grew ``defaults_only`` after 5.17).
- Continuous batching: a ``ContinuousBatchingManager`` names requests ``req_N`` from a counter under
  ``_request_lock`` and routes finished ``GenerationOutput``s through ``output_router.deliver`` in
  5.17 and 5.25 alike (:func:`next_batching_request_id`, :func:`deliver_finished_output`).
- Loading with the model's tensor-parallel plan: ``distributed_config=DistributedConfig(tp_plan="auto")``
  (5.17 and later; the bare ``tp_plan="auto"`` argument is deprecated there), else ``tp_plan="auto"``
  (:func:`tensor_parallel_kwargs`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any, Optional

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache
from transformers.generation.configuration_utils import GenerationConfig
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

__all__ = [
    "BaseStreamer",
    "Cache",
    "GenerationConfig",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "attn_implementation",
    "batching_return_sequences",
    "deliver_finished_output",
    "next_batching_request_id",
    "block_output",
    "effective_generation_config",
    "generation_mode",
    "cache_argument",
    "find_decoder",
    "final_logit_scale",
    "final_logit_softcap",
    "final_logits",
    "find_output_head",
    "forward_accepts",
    "generation_eos_id",
    "generation_pad_id",
    "is_cache",
    "output_cache",
    "rmsnorm_eps",
    "tensor_parallel_kwargs",
    "text_config",
]

def text_config(model: nn.Module) -> Any:
    """The config of the language part (the whole config for text-only models)."""
    config = model.config
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def find_decoder(model: nn.Module) -> Optional[nn.Module]:
    """The module that owns the decoder blocks (``.layers``) and the final norm (``.norm``)."""
    candidates: list[Any] = []
    getter = getattr(model, "get_decoder", None)
    if callable(getter):
        try:
            candidates.append(getter())
        except (AttributeError, NotImplementedError):
            pass
    inner = getattr(model, "model", None)
    if inner is not None:
        candidates.append(getattr(inner, "language_model", None))
        candidates.append(inner)
    language_model = getattr(model, "language_model", None)
    candidates.append(language_model)
    # Llama 4 keeps a whole causal LM as ``language_model`` (its decoder is that model's ``.model``).
    candidates.append(getattr(language_model, "model", None))
    for candidate in candidates:
        if isinstance(candidate, nn.Module) and isinstance(getattr(candidate, "layers", None), nn.ModuleList):
            return candidate
    return None


def find_output_head(model: nn.Module) -> Optional[nn.Module]:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if head is not None else getattr(model, "lm_head", None)


def is_cache(value: Any) -> bool:
    return isinstance(value, Cache)


def block_output(output: Any) -> Tensor:
    """The hidden-state output of a decoder-block call: a tensor, or the first item of a tuple."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def forward_accepts(module: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def cache_argument(model: nn.Module) -> str:
    """The name under which ``model.forward`` (or a decoder block's) takes a cache: ``cache``
    (newer) or ``past_key_values``."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def output_cache(output: Any) -> Any:
    """The cache a forward returned (``output.cache`` in newer releases, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def attn_implementation(model: nn.Module) -> str:
    config = text_config(model)
    impl = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    return str(impl or "eager")


def rmsnorm_eps(norm: nn.Module) -> Optional[float]:
    """The epsilon of an RMSNorm module (``variance_epsilon`` in Llama-style, ``eps`` in Gemma-style)."""
    for name in ("variance_epsilon", "eps"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def final_logit_softcap(model: nn.Module) -> Optional[float]:
    """The soft-capping of the output logits (Gemma 2), or ``None``."""
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    return float(cap) if cap is not None else None


def final_logit_scale(model: nn.Module) -> Optional[float]:
    """The factor the model's forward multiplies the output head's logits by, or ``None``:
    Granite divides them by ``config.logits_scaling``, Cohere multiplies them by
    ``config.logit_scale`` (before any soft-capping).

    A config value counts only where the model class's own ``forward`` applies it: the same
    config can come with or without it across transformers versions (Aya Vision's forward
    multiplies by ``text_config.logit_scale`` in 5.25, not in 5.17).
    """
    config = text_config(model)
    scale = 1.0
    divisor = getattr(config, "logits_scaling", None)
    if _is_number(divisor) and _forward_reads(type(model), "logits_scaling"):
        scale /= float(divisor)
    factor = getattr(config, "logit_scale", None)
    if _is_number(factor) and _forward_reads(type(model), "logit_scale"):
        scale *= float(factor)
    return None if scale == 1.0 else scale


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@functools.lru_cache(maxsize=None)
def _forward_reads(cls: type, name: str) -> bool:
    """Whether ``cls.forward``'s source mentions ``name`` (a config scale it applies to its logits).
    Without the source there is no telling, and a wrong guess would read different logits than the
    model's: refused (the guard cannot be applied) rather than guessed."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError) as err:
        raise ValueError(f"model: {cls.__name__}'s config has {name!r}, and without the source of its forward "
                         f"sasa cannot tell whether its logits are scaled by it ({err})") from None
    return re.search(rf"\b{re.escape(name)}\b", source) is not None


def final_logits(model: nn.Module, logits: Tensor) -> Tensor:
    """The model's own output logits from its output head's: scaled (:func:`final_logit_scale`),
    then soft-capped (:func:`final_logit_softcap`), as its forward does."""
    scale = final_logit_scale(model)
    if scale is not None:
        logits = logits * scale
    cap = final_logit_softcap(model)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def generation_pad_id(model: nn.Module) -> Optional[int]:
    gen = getattr(model, "generation_config", None)
    for source in (gen, text_config(model), model.config):
        value = getattr(source, "pad_token_id", None) if source is not None else None
        if isinstance(value, int):
            return value
    return None


def generation_eos_id(model: nn.Module) -> Optional[int]:
    gen = getattr(model, "generation_config", None)
    for source in (gen, text_config(model), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, int):
            return value
    return None


def effective_generation_config(model: nn.Module, kwargs: dict[str, Any]) -> GenerationConfig:
    """The settings ``model.generate(**kwargs)`` will run with, resolved the way ``generate`` does.

    Priority: keyword arguments, then ``generation_config=`` (if given), then
    ``model.generation_config``, then the library defaults. ``kwargs`` is not modified.
    """
    given = kwargs.get("generation_config")
    own = getattr(model, "generation_config", None)
    if given is not None and not isinstance(given, GenerationConfig):
        raise TypeError(f"generation_config: expected a transformers GenerationConfig, got {type(given).__name__}")
    config = copy.deepcopy(given if given is not None else (own if own is not None else GenerationConfig()))
    if given is not None and own is not None:
        # Fields the given config leaves unset (None) fall back to the model's own.
        for name, value in own.to_dict().items():
            if getattr(config, name, None) is None and value is not None and hasattr(config, name):
                setattr(config, name, copy.deepcopy(value))
    for name, value in kwargs.items():
        if name != "generation_config" and hasattr(config, name):
            setattr(config, name, value)
    return config


def generation_mode(config: GenerationConfig, assistant_model: Any = None) -> str:
    """The decoding strategy name ``generate`` picks: ``"greedy_search"``, ``"sample"``, ``"beam_search"``..."""
    return str(getattr(config.get_generation_mode(assistant_model), "value", config.get_generation_mode(assistant_model)))


# --- continuous batching (``ContinuousBatchingManager``: the same internals in 5.17 and 5.25) ---------


def next_batching_request_id(manager: Any) -> str:
    """The id ``manager.add_request`` would give a request without one (``req_N``, counted under its lock)."""
    with manager._request_lock:
        request_id = f"req_{manager._request_counter}"
        manager._request_counter += 1
    return request_id


def deliver_finished_output(manager: Any, request_id: str, prompt_ids: list[int], tokens: list[int]) -> None:
    """Hand ``manager``'s readers (``get_result``, ``request_id_iter``, result handlers) a finished output
    for ``request_id`` whose generated tokens are ``tokens``, without running the model."""
    from transformers.generation.continuous_batching.requests import GenerationOutput, RequestStatus

    output = GenerationOutput(
        request_id=request_id, prompt_ids=list(prompt_ids), generated_tokens=list(tokens), status=RequestStatus.FINISHED
    )
    manager.output_router.deliver(output)


def batching_switched_attention(model: nn.Module, before: str) -> bool:
    """Whether creating a continuous-batching manager switched ``model`` to paged attention (5.17's
    manager does, at construction; 5.25's leaves the model's attention implementation as it is)."""
    now = attn_implementation(model)
    return now != before and "paged" in now


def restore_attention(model: nn.Module, implementation: str) -> None:
    """Put ``model``'s attention implementation back to ``implementation``."""
    model.set_attn_implementation(implementation)


def transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def batching_return_sequences(manager: Any) -> int:
    """How many sequences ``manager`` makes per request (``num_return_sequences``; children are forked)."""
    return int(getattr(manager, "num_return_sequences", 1) or 1)


def tensor_parallel_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that shard the model with its own plan over the torchrun processes."""
    try:
        from transformers.distributed import DistributedConfig
    except ImportError:
        return {"tp_plan": "auto"}
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


# --- serving (`sasa serve`, sasa.serve): transformers serve's server ------------------------------
#
# `sasa serve` runs transformers' own `transformers serve` app (FastAPI + uvicorn). What it relies
# on, checked by `serving_api()` before anything starts (transformers 5.25 has it all; 5.17 has
# none of it and is refused by name):
#
# - `transformers.cli.serve.Serve(force_model=..., ...)` builds its `ModelLoader` and then `run()`s;
#   `run()` reads `self.loader`, so a subclass can swap the loader in before the server starts.
# - `cli.serving.model_manager.EngineClient.run_engine`: each model runs in a spawned process that
#   loads it with a pickled copy of the server's loader (`ModelLoader.load_model_and_processor`).
# - `cli.serving.utils.BaseHandler`: `_build_generation_kwargs(body, generation_config)` makes every
#   request's `generate` keyword arguments (they reach `model.generate` in the model's process as
#   they are), and `_get_finish_reason(generation_kwargs, completion_tokens, ...)` names the finish
#   reason of /v1/chat/completions and /v1/completions, streaming or not.
# 5.17's server instead loads models in the API server's own process (`ModelManager.
# load_model_and_processor`, a `GenerateManager` thread): a different design that sasa does not hook.

_SERVING_NEEDS = (
    ("transformers.cli.serve", "Serve"),
    ("transformers.cli.serving.model_manager", "ModelLoader"),
    ("transformers.cli.serving.model_manager", "EngineClient"),
    ("transformers.cli.serving.utils", "BaseHandler"),
)


def serving_api() -> dict[str, Any]:
    """transformers' serving classes by name (``Serve``, ``ModelLoader``, ``EngineClient``,
    ``BaseHandler``, ``SystemOneHandler``, ``TranscriptionHandler``), after checking this release
    serves the way ``sasa serve`` hooks (see above); ``RuntimeError`` naming the version if not,
    ``ImportError`` naming the missing packages if the serving dependencies are absent."""
    import importlib

    import transformers
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        raise ImportError(
            "sasa serve needs transformers' serving dependencies (fastapi, uvicorn, openai, pydantic): "
            "pip install 'sasa-kernels[serve]'"
        )
    found: dict[str, Any] = {}
    for module_name, name in _SERVING_NEEDS:
        try:
            found[name] = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            found[name] = None
    engine = found["EngineClient"]
    handler = found["BaseHandler"]
    if (
        None in found.values()
        or not callable(getattr(engine, "run_engine", None))
        or not callable(getattr(found["ModelLoader"], "load_model_and_processor", None))
        or not callable(getattr(handler, "_build_generation_kwargs", None))
        or not callable(getattr(handler, "_get_finish_reason", None))
    ):
        raise RuntimeError(
            f"sasa serve: transformers {transformers.__version__} serves models another way than the one sasa "
            "guards (a process per model loaded by a ModelLoader, as in 5.25); transformers 5.17's server loads "
            "models in its own process and is not supported. Install transformers>=5.25 to serve, or guard the "
            "model in your own server with sasa.apply_sasa"
        )
    for module_name, name in (("transformers.cli.serving.systemone", "SystemOneHandler"),
                              ("transformers.cli.serving.transcription", "TranscriptionHandler"),
                              ("transformers.cli.serving.response", "ResponseHandler")):
        try:
            found[name] = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            found[name] = None  # this release has no such endpoint: nothing to close
    return found


def install_serving_hooks(build_kwargs: Any, finish_reason: Any, closed_endpoint: Any, before_generate: Any,
                          refused: Any) -> None:
    """Route transformers serve's handlers through sasa (in this process, for the server's life):

    - ``build_kwargs(handler, generation_kwargs) -> generation_kwargs`` after every request's own
      ``_build_generation_kwargs`` (every generating endpoint calls the base class's);
    - ``finish_reason(generation_kwargs, reason) -> reason`` after ``_get_finish_reason``;
    - ``closed_endpoint(name)`` (raises) instead of the endpoints that run the model without
      ``generate`` (/v1/systemone, /v1/audio/transcriptions);
    - ``before_generate(engine, inputs, generation_kwargs)`` as a handler hands a request to the
      model's process (``EngineClient.generate_streaming`` / ``generate_non_streaming``); ``engine.use_cb``
      says whether it generates with continuous batching there;
    - ``refused(generation_kwargs) -> bool`` once a /v1/responses answer has ended (that endpoint has
      no finish reason): a refused one is marked as OpenAI marks a filtered response,
      ``status: "incomplete"``, ``incomplete_details: {"reason": "content_filter"}`` (streaming: its
      last event is ``response.incomplete`` instead of ``response.completed``).
    Idempotent: a second call replaces the first's hooks."""
    api = serving_api()
    base = api["BaseHandler"]
    original_build = getattr(base, "_sasa_original_build", base._build_generation_kwargs)
    original_finish = getattr(base, "_sasa_original_finish", base._get_finish_reason)

    def _build_generation_kwargs(self: Any, body: dict, model_generation_config: Any) -> dict:
        return build_kwargs(self, original_build(self, body, model_generation_config))

    def _get_finish_reason(generation_kwargs: dict, completion_tokens: int, tool_calls: bool = False) -> str:
        return finish_reason(generation_kwargs, original_finish(generation_kwargs, completion_tokens, tool_calls))

    base._sasa_original_build = original_build
    base._sasa_original_finish = original_finish
    base._build_generation_kwargs = _build_generation_kwargs
    base._get_finish_reason = staticmethod(_get_finish_reason)
    client = api["EngineClient"]
    original_stream = getattr(client, "_sasa_original_stream", client.generate_streaming)
    original_whole = getattr(client, "_sasa_original_whole", client.generate_non_streaming)

    def generate_streaming(self: Any, inputs: dict, generation_kwargs: dict, *args: Any, **kwargs: Any) -> Any:
        before_generate(self, inputs, generation_kwargs)
        return original_stream(self, inputs, generation_kwargs, *args, **kwargs)

    async def generate_non_streaming(self: Any, inputs: dict, generation_kwargs: dict) -> Any:
        before_generate(self, inputs, generation_kwargs)
        return await original_whole(self, inputs, generation_kwargs)

    client._sasa_original_stream, client._sasa_original_whole = original_stream, original_whole
    client.generate_streaming, client.generate_non_streaming = generate_streaming, generate_non_streaming
    if api["ResponseHandler"] is not None:
        _hook_responses(api["ResponseHandler"], refused)
    for name, path in (("SystemOneHandler", "/v1/systemone"), ("TranscriptionHandler", "/v1/audio/transcriptions")):
        handler = api[name]
        if handler is None:
            continue

        async def handle_request(self: Any, *args: Any, _path: str = path, **kwargs: Any) -> Any:
            closed_endpoint(_path)

        handler.handle_request = handle_request


def _mark_incomplete(response: dict) -> dict:
    return {**response, "status": "incomplete", "incomplete_details": {"reason": "content_filter"}}


def _hook_responses(handler: Any, refused: Any) -> None:
    """/v1/responses: ``_non_streaming(request_id, engine, body, inputs, generation_kwargs)`` returns a
    ``JSONResponse``; ``_streaming(...)`` a ``StreamingResponse`` whose last event is
    ``response.completed`` (one SSE ``data:`` line)."""
    import json

    from fastapi.responses import JSONResponse

    original_whole = getattr(handler, "_sasa_original_whole", handler._non_streaming)
    original_stream = getattr(handler, "_sasa_original_stream", handler._streaming)

    async def _non_streaming(self: Any, request_id: str, engine: Any, body: dict, inputs: dict,
                             generation_kwargs: dict) -> Any:
        response = await original_whole(self, request_id, engine, body, inputs, generation_kwargs)
        if not refused(generation_kwargs):
            return response
        return JSONResponse(_mark_incomplete(json.loads(response.body)), status_code=response.status_code)

    def _streaming(self: Any, request_id: str, engine: Any, body: dict, inputs: dict, generation_kwargs: dict) -> Any:
        response = original_stream(self, request_id, engine, body, inputs, generation_kwargs)
        events = response.body_iterator

        async def marked() -> Any:
            async for chunk in events:
                text = chunk if isinstance(chunk, str) else chunk.decode()
                if '"response.completed"' in text and text.startswith("data: ") and refused(generation_kwargs):
                    event = json.loads(text[len("data: "):])
                    event["type"] = "response.incomplete"
                    event["response"] = _mark_incomplete(event["response"])
                    text = f"data: {json.dumps(event)}\n\n"
                yield text

        response.body_iterator = marked()
        return response

    handler._sasa_original_whole, handler._sasa_original_stream = original_whole, original_stream
    handler._non_streaming, handler._streaming = _non_streaming, _streaming


def record_direct_deliveries(manager: Any) -> Any:
    """Make ``manager`` (a ``ContinuousBatchingManager``) note the request ids of the outputs it is
    handed *on the calling thread* while a ``with recorder(ids):`` block runs there (``ids`` a set).
    sasa's guarded ``add_request`` answers a refused request that way, inside the call
    (``deliver_finished_output``); the manager's own outputs come from its worker thread. Returns
    ``recorder``. In 5.17 and 5.25 alike the outputs go through ``manager.output_router.deliver``."""
    import contextlib
    import threading

    router = manager.output_router
    local = getattr(router, "_sasa_local", None)
    if local is None:
        local = threading.local()
        deliver = router.deliver

        def recording_deliver(output: Any) -> None:
            noted = getattr(local, "ids", None)
            if noted is not None:
                noted.add(str(output.request_id))
            deliver(output)

        router.deliver = recording_deliver
        router._sasa_local = local

    @contextlib.contextmanager
    def recorder(ids: set) -> Any:
        local.ids = ids
        try:
            yield ids
        finally:
            local.ids = None

    return recorder
