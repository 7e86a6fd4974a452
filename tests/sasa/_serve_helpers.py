"""What tests/sasa/serve/test_serve.py and benchmarks/bench_serve.py share: model directories with
hand-built probes, a server process that stops by itself, and a small HTTP client (urllib only).

Everything listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]


# --- models and probes ---------------------------------------------------------------------------


def save_probe(model: Any, processor: Any, directory: Path, bias: float, *, safety_layer: int, fused_layer: int) -> Path:
    """A hand-built probe for ``model`` that reads nothing (zero weights): ``bias`` alone decides.
    A large positive bias flags every prompt, a large negative one passes every prompt."""
    from sasa import SASAConfig, SASAProbe, model_fingerprint
    from sasa.data.prompt_format import PromptFormat

    config = SASAConfig(safety_layer=safety_layer, fused_layer=fused_layer, feature="logits")
    features = model.get_output_embeddings().weight.shape[0]  # logits: one feature per vocabulary entry
    probe = SASAProbe(
        weight=torch.zeros(1, features), bias=torch.tensor([float(bias)]), threshold=torch.tensor([0.5]),
        categories=["any"], feature="logits", config=config, fingerprint=model_fingerprint(model),
        prompt_format=PromptFormat.of(processor),
    )
    return probe.save(directory)


def save_text_model(directory: Path, *, hidden: int = 64, layers: int = 6, seed: int = 0) -> tuple[Any, Any]:
    """A seeded random Llama with sasa's stand-in word-level tokenizer (it has a chat template),
    saved with ``save_pretrained``; returns ``(model, tokenizer)``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sasa.demo.stand_in import build_default

    _, tokenizer = build_default(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(4, hidden // 64), num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


# --- a server process ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started as ``argv`` + ``--host 127.0.0.1 --port P``, in its own process group so
    that stopping it stops its model's process too."""

    def __init__(self, argv: list[str], log: Path, env: Optional[dict[str, str]] = None):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        self._log_file = open(log, "wb")
        self.process = subprocess.Popen(
            [*argv, "--host", HOST, "--port", str(self.port)], stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})}, cwd=REPO,
        )

    def wait_ready(self, timeout: float) -> None:
        """Until ``/health`` answers; raises (with the log's tail) if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server did not answer /health within {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self._log_file.flush()
        return self.log.read_bytes()[-chars:].decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        self._log_file.close()


def sasa_serve_argv(model: Path, probe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sasa.cli", "serve", "--model", str(model), "--probe", str(probe), "--quiet", *extra]


def plain_serve_argv(model: Path) -> list[str]:
    """transformers serve itself, unguarded (the baseline)."""
    code = ("import sys; from transformers.cli.serve import Serve; a = sys.argv[1:]; "
            "Serve(force_model=a[0], host=a[2], port=int(a[4]), device='cpu', log_level='warning', model_timeout=-1)")
    return [sys.executable, "-c", code, str(model)]


@contextmanager
def running(argv: list[str], log: Path, timeout: float = 120.0, env: Optional[dict[str, str]] = None) -> Iterator[ServerProcess]:
    server = ServerProcess(argv, log, env)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


# --- a client ------------------------------------------------------------------------------------


def post(url: str, body: dict, timeout: float = 60.0) -> tuple[int, Any]:
    """``(status, JSON)`` of a POST (an error status too: its body)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, text


def stream(url: str, body: dict, timeout: float = 60.0) -> tuple[int, list[Any], list[float]]:
    """POST with ``stream: true``: ``(status, events, arrival times)``, each event a parsed SSE
    ``data:`` payload (``"[DONE]"`` kept as a string), each time in ``time.perf_counter()`` seconds."""
    request = urllib.request.Request(url, json.dumps({**body, "stream": True}).encode(),
                                     {"Content-Type": "application/json"})
    events: list[Any] = []
    times: list[float] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:"):].strip()
                times.append(time.perf_counter())
                events.append(payload if payload == "[DONE]" else json.loads(payload))
            return response.status, events, times
    except urllib.error.HTTPError as err:
        return err.code, [err.read().decode(errors="replace")], []


def chat_text(events: list[Any]) -> tuple[str, Optional[str]]:
    """The streamed answer of chat completion chunks, and the finish reason."""
    text, reason = [], None
    for event in events:
        if not isinstance(event, dict):
            continue
        if "error" in event:
            raise AssertionError(f"the stream failed: {event['error']}")
        for choice in event.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
            reason = choice.get("finish_reason") or reason
    return "".join(text), reason


def image_message(prompt: str, image: Optional[Path] = None) -> list[dict]:
    """One user message, OpenAI style, with the image (if any) as a data URL."""
    import base64

    if image is None:
        return [{"role": "user", "content": prompt}]
    data = base64.b64encode(Path(image).read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                                         {"type": "text", "text": prompt}]}]
