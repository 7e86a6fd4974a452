"""pytest-benchmark: the guard's overhead end to end, on a small random Llama.

    pytest --benchmark-only                                   # from the repository root: this folder
    pytest benchmarks/test_bench_guard.py --benchmark-only --benchmark-group-by=group

Groups: time to first token (``generate`` of one token) and a short generation of 8 tokens, each
for ``unguarded`` (``model.generate``, no guard applied), ``sasa-all`` and ``sasa-last``
(``guard.generate``, the guard applied for the test and removed after it, with a probe that never
fires so every row generates every token). Nothing is asserted about speed; for interleaved
ratios and the mid-size models use ``bench_ttft.py``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark")
transformers = pytest.importorskip("transformers")

from sasa import SASAConfig, apply_sasa  # noqa: E402
from sasa.bench import passing_probe  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH, PROMPT = 1, 128
SAFETY, FUSED = 3, 5


@pytest.fixture(scope="module")
def model():
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                                      num_attention_heads=8, num_key_value_heads=8, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(config).to(DEVICE).eval()
    m.generation_config.pad_token_id = 0
    return m


@pytest.fixture(scope="module")
def inputs(model):
    ids = torch.randint(3, 32000, (BATCH, PROMPT), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("tokens", [1, 8], ids=["ttft", "generate-8"])
@pytest.mark.parametrize("series", ["unguarded", "sasa-all", "sasa-last"])
def test_guard_overhead(benchmark, model, inputs, series, tokens):
    gen = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    guard = None
    if series == "unguarded":
        generate = model.generate
    else:
        config = SASAConfig(SAFETY, FUSED, scope=series.split("-")[1])
        guard = apply_sasa(model, config, probe=passing_probe(model, config))
        generate = guard.generate

    def call():
        out = generate(**inputs, **gen)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"guard {'TTFT' if tokens == 1 else '8 tokens'} B={BATCH} T={PROMPT}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), safety_layer=SAFETY, fused_layer=FUSED)
    try:
        call()
        out = benchmark.pedantic(call, rounds=5, warmup_rounds=1)
        if guard is not None:
            assert not bool(out.flagged.any()), "a timed row was flagged: it would stop early"
    finally:
        if guard is not None:
            guard.remove()
