"""``sasa serve``: transformers serve's OpenAI-compatible server, with every answer guarded.

What runs is transformers' own server (``transformers serve``: its FastAPI app, handlers and
model process); sasa changes three things, all in :func:`serve`'s process:

1. the model loader (:class:`~sasa.serve.engine.SASAModelLoader`): the model's process guards the
   model it loads, so every ``generate`` there is guarded;
2. every request's ``generate`` arguments get a key (:data:`~sasa.serve.decisions.REQUEST_KEY`)
   that the guarded process needs and an unguarded one refuses: no path answers unguarded;
3. the finish reason: a request the guard refused ends with ``finish_reason: "content_filter"``
   (:data:`REFUSED_FINISH_REASON`) instead of ``"stop"``/``"length"`` (/v1/chat/completions,
   /v1/completions), or ``status: "incomplete"`` with ``incomplete_details.reason:
   "content_filter"`` (/v1/responses), as OpenAI marks a filtered answer.

Endpoints that run the model without ``generate`` (``/v1/systemone``, ``/v1/audio/transcriptions``)
answer 400.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Optional

from sasa.hf import compat
from sasa.serve.decisions import PROMPT_KEY, REQUEST_KEY, DecisionBoard, prompt_key

#: The finish reason of an answer the guard refused (OpenAI's name for a filtered answer).
REFUSED_FINISH_REASON = "content_filter"
#: How long the API server waits for a request's decision once its answer has ended.
DECISION_TIMEOUT_S = 30.0

_Serve = compat.serving_api()["Serve"]


class SASAServe(_Serve):  # type: ignore[misc,valid-type]
    """transformers' ``Serve`` with the guard (see the module's docstring). Constructing it runs the
    server until it stops, as ``Serve`` does. ``probe``: a saved probe directory; the other
    keyword arguments are ``Serve``'s (``force_model``, ``host``, ``port``, ...)."""

    def __init__(self, *, probe: str, decision_timeout: float = DECISION_TIMEOUT_S, **serve_kwargs: Any):
        if serve_kwargs.get("api_server_count", 1) != 1:
            raise ValueError("api_server_count: sasa serve runs one API server")
        if not serve_kwargs.get("force_model"):
            raise ValueError("force_model: sasa serve serves the one model its probe belongs to")
        self.sasa_probe = str(probe)
        self.sasa_decision_timeout = decision_timeout
        self.sasa_continuous_batching = bool(serve_kwargs.get("continuous_batching", False))
        super().__init__(**serve_kwargs)

    def run(self, socket: Any = None, engine_connection: Optional[tuple] = None) -> None:
        if engine_connection is not None:
            raise RuntimeError("sasa serve runs one API server, which starts the model's process itself")
        from sasa.serve.engine import SASAModelLoader

        # The model's process is spawned: the queue goes to it inside the pickled loader.
        board = DecisionBoard(multiprocessing.get_context("spawn").Queue())
        self.loader = SASAModelLoader.from_loader(self.loader, self.sasa_probe, board.queue,
                                                  self.sasa_continuous_batching)
        install_hooks(board, self.sasa_decision_timeout)
        try:
            super().run(socket=socket, engine_connection=engine_connection)
        finally:
            board.close()


def install_hooks(board: DecisionBoard, timeout: float) -> None:
    """Give every request a key, name a refused answer's finish reason, close the other endpoints."""

    def build_kwargs(handler: Any, generation_kwargs: dict) -> dict:
        # The model's process reports its model guarded once it has loaded (before the server starts
        # listening, normally); until it has, nothing is generated.
        if not board.wait_ready(timeout):
            raise RuntimeError("sasa: the model's process has not reported a guarded model; request refused")
        generation_kwargs[REQUEST_KEY] = board.new_key()
        return generation_kwargs

    def before_generate(engine: Any, inputs: dict, generation_kwargs: dict) -> None:
        if REQUEST_KEY not in generation_kwargs:
            raise RuntimeError("sasa: a request reached the model without a guard key")
        if engine.use_cb:  # batched requests are known to the model's process by their prompt alone
            generation_kwargs[PROMPT_KEY] = prompt_key(inputs["input_ids"])

    def refused(generation_kwargs: dict) -> bool:
        key = generation_kwargs.get(PROMPT_KEY) or generation_kwargs.get(REQUEST_KEY)
        if key is None:
            raise RuntimeError("sasa: a request without a guard key reached the end of an answer")
        return board.refused(key, timeout)

    def finish_reason(generation_kwargs: dict, reason: str) -> str:
        return REFUSED_FINISH_REASON if refused(generation_kwargs) else reason

    def closed_endpoint(path: str) -> None:
        raise ValueError(f"{path}: sasa serve does not guard this endpoint (it runs the model without generate)")

    compat.install_serving_hooks(build_kwargs, finish_reason, closed_endpoint, before_generate, refused)
