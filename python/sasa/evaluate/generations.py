"""The generations behind ``sasa eval``: the same batches, guarded and unguarded, one row per input.

Both runs use the same batches (:func:`sasa.data.batches`) and the same ``generate`` keyword
arguments, so a passed row's guarded tokens must equal its unguarded ones (docs/method.md section 5).
The guarded run comes first; the unguarded run happens after :meth:`SASAGuard.remove`, so it is
the plain model's ``generate``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from sasa.data.manifest import Example, batches, encode_batch
from sasa.guard.apply import apply_sasa
from sasa.hf import compat
from sasa.refusal import RefusalMatcher

Sourced = tuple[str, Example]  # (source path, row)


def eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """Every id that ends an answer: the generation config's (one or a list) and the tokenizer's."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def answer_tokens(new_tokens: Tensor, eos: set[int], pad: Optional[int]) -> list[int]:
    """The answer's ids: up to (not including) the first end-of-sequence id, trailing padding dropped."""
    ids = [int(t) for t in new_tokens.tolist()]
    for i, t in enumerate(ids):
        if t in eos:
            ids = ids[:i]
            break
    while ids and pad is not None and ids[-1] == pad:
        ids.pop()
    return ids


def _sequences(out: Any) -> Tensor:
    return out if isinstance(out, Tensor) else out.sequences


def run_generations(model: nn.Module, processor: Any, rows: Sequence[Sourced], probe: Any, *,
                    gen: dict[str, Any], batch_size: int, prompt_format: Any, refusal: RefusalMatcher,
                    probe_names: Sequence[str], progress: bool,
                    timings: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """One result dict per row (in the input order); see ``generations.jsonl`` in :mod:`sasa.evaluate`.

    Both runs see the very same encoded inputs (formatted with ``prompt_format``, the probe's).
    ``timings`` (if given) receives the seconds spent in the guarded and in the unguarded run.
    """
    import time

    from tqdm.auto import tqdm

    timings = {} if timings is None else timings

    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else compat.generation_pad_id(model)
    eos = eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    order = {id(e): i for i, (_, e) in enumerate(rows)}
    sources = {id(e): src for src, e in rows}
    examples = [e for _, e in rows]
    plan = list(batches(examples, batch_size))
    guarded: dict[int, tuple[bool, list[float], list[int], str]] = {}
    encoded = [encode_batch(processor, batch, prompt_format=prompt_format, device=device) for batch in plan]

    started = time.perf_counter()
    guard = apply_sasa(model, probe=probe, tokenizer=processor)
    try:
        with tqdm(total=len(examples), desc="guarded generate", unit="prompt", disable=not progress) as bar:
            for batch, inputs in zip(plan, encoded):
                out = guard.generate(**inputs, **gen)
                width = inputs["input_ids"].shape[1]
                scores = out.scores.reshape(len(batch), -1).float().cpu()
                for b, e in enumerate(batch):
                    tokens = answer_tokens(out.sequences[b, width:], eos, pad)
                    guarded[id(e)] = (bool(out.flagged[b]), scores[b].tolist(), tokens, out.refusal_text)
                bar.update(len(batch))
    finally:
        guard.remove()
    timings["guarded_s"] = time.perf_counter() - started

    started = time.perf_counter()
    results = []
    with torch.no_grad(), tqdm(total=len(examples), desc="unguarded generate", unit="prompt",
                               disable=not progress) as bar:
        for batch, inputs in zip(plan, encoded):
            sequences = _sequences(model.generate(**inputs, **gen))
            width = inputs["input_ids"].shape[1]
            for b, e in enumerate(batch):
                flagged, scores, g_tokens, refusal_text = guarded[id(e)]
                u_tokens = answer_tokens(sequences[b, width:], eos, pad)
                unguarded_answer = tokenizer.decode(u_tokens, skip_special_tokens=True)
                guarded_answer = refusal_text if flagged else tokenizer.decode(g_tokens, skip_special_tokens=True)
                results.append((order[id(e)], {
                    "source": sources[id(e)], "line": e.line, "prompt": e.prompt,
                    "image": None if e.image is None else str(e.image), "label": e.label,
                    "category": e.category, "carrier": e.carrier, "text_only": e.text_only,
                    "score": scores[0], "scores": dict(zip(probe_names, scores)) if len(scores) > 1 else None,
                    "flagged": flagged,
                    "unguarded_answer": unguarded_answer, "guarded_answer": guarded_answer,
                    # A flagged row answers the guard's refusal: a refusal whatever its wording.
                    "unguarded_refused": refusal(unguarded_answer),
                    "guarded_refused": True if flagged else refusal(guarded_answer),
                    "answers_identical": None if flagged else g_tokens == u_tokens,
                }))
            bar.update(len(batch))
    timings["unguarded_s"] = time.perf_counter() - started
    return [row for _, row in sorted(results, key=lambda item: item[0])]
