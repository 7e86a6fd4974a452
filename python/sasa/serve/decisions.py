"""The guard's decisions, from the model's process to the API server (standard library only).

transformers serve sends a request's answer from the model's process to the API server as token
ids, nothing more. Whether the guard refused it travels beside them on a queue of its own: each
request carries a key (:data:`REQUEST_KEY`, one of its ``generate`` arguments), and the model's
process puts ``(key, refused)`` on the queue before ``generate`` returns, so before the answer's
end is sent. The API server reads the queue in a thread and looks each key up once the answer
has ended. A key whose decision never comes fails its request (:class:`MissingDecision`).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import OrderedDict
from typing import Any, Optional

#: The ``generate`` keyword argument that carries a request's key to the model's process. An
#: unguarded ``generate`` refuses it (an argument the model does not use), so a model's process
#: whose guard did not take effect fails every request instead of answering it.
REQUEST_KEY = "sasa_request"
#: With continuous batching the model's process sees only a request's prompt (its token ids, not its
#: ``generate`` arguments): its decision is keyed by :func:`prompt_key` instead, which the API
#: server puts in the request's arguments under this name (they stay in the API server). Requests
#: with the same prompt get the same decision (each prompt is scored alone), so any of their
#: decisions answers any of them.
PROMPT_KEY = "sasa_prompt"
#: The first message of a model's process once its model is guarded: ``(READY, description)``.
READY = "__sasa_ready__"
#: Decisions kept for keys nobody asked about yet (a client that left): the oldest go first.
MAX_PENDING = 4096


def prompt_key(input_ids: Any) -> str:
    """A continuous-batching request's key: its prompt's token ids (one row), hashed."""
    import hashlib
    import json

    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
    if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
        ids = list(ids[0])
    return "prompt-" + hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()


class MissingDecision(RuntimeError):
    """The model's process sent no guard decision for a request (so it may not have been guarded)."""


class DecisionBoard:
    """The API server's end: a thread reads ``(key, refused)`` from :attr:`queue` into a table.

    Args:
        channel: a ``multiprocessing`` queue (of the ``spawn`` context the model's process starts
            in); it travels to that process inside the pickled model loader.
    """

    def __init__(self, channel: Any):
        self.queue = channel
        self.guard_description: Optional[str] = None
        self._decisions: OrderedDict[str, list[bool]] = OrderedDict()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="sasa-decisions", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether a model's process reported its model guarded."""
        return self.guard_description is not None

    def wait_ready(self, timeout: float) -> bool:
        """:attr:`ready`, waiting up to ``timeout`` s for the model's process to report."""
        with self._changed:
            return self._changed.wait_for(lambda: self.guard_description is not None, timeout=timeout)

    def new_key(self) -> str:
        return uuid.uuid4().hex

    def refused(self, key: str, timeout: float = 30.0) -> bool:
        """Whether the guard refused the request ``key`` (waits for its decision up to ``timeout`` s;
        it is sent before the answer ends, so it is normally there already)."""
        with self._changed:
            if not self._changed.wait_for(lambda: key in self._decisions, timeout=timeout):
                raise MissingDecision(
                    f"sasa: the model's process sent no guard decision for this request within {timeout:g} s; "
                    "the answer is withheld"
                )
            pending = self._decisions[key]
            refused = pending.pop(0)
            if not pending:
                del self._decisions[key]
            return refused

    def close(self) -> None:
        self._stop.set()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                key, value = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # the queue was closed with the server
                return
            with self._changed:
                if key == READY:
                    self.guard_description = str(value)
                else:
                    self._decisions.setdefault(key, []).append(bool(value))
                    while len(self._decisions) > MAX_PENDING:
                        self._decisions.popitem(last=False)
                self._changed.notify_all()
