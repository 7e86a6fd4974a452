"""``compile_augmented=True``: scope="last"'s blocks s+2..L-1 as one torch.compile graph (sasa.guard.compiled_pass).

Each test checks the compiled path really ran (``compiled_calls``) or really failed (``failure``):
a test that silently ran the eager pass would prove nothing. Compiling takes seconds per model on
CPU, so the float64-reference tolerance checks cover five families (Llama's plain rope, Qwen2-VL's
3-D rope positions and an image, MoE routing, Llama 4, Mllama); every other family that runs
scope="last" has its compiled pass checked against its own eager pass in float32 (the eager pass
is checked against the float64 reference per family by the conformance tests).
"""

from __future__ import annotations

import contextvars
import functools
import logging

import pytest
import torch

from sasa import SASAConfig, apply_sasa
from sasa.guard import compiled_pass
from tests.sasa import _tiny


@functools.lru_cache(maxsize=None)
def tiny(family: str, dtype: torch.dtype) -> _tiny.Tiny:
    t = _tiny.BUILDERS[family]()
    return t if dtype == torch.float32 else t.to(dtype)


def _config(t: _tiny.Tiny, compiled: bool, **kw) -> SASAConfig:
    return SASAConfig(t.safety_layer, t.fused_layer, scope="last", feature="hidden", compile_augmented=compiled, **kw)


def _features(t: _tiny.Tiny, batch: dict, compiled: bool) -> tuple[torch.Tensor, compiled_pass.CompiledBlocks | None]:
    guard = apply_sasa(t.model, _config(t, compiled))
    try:
        return guard.features(**batch), guard._augment.compiled
    finally:
        guard.remove()


#: Families whose compiled pass is also checked, left padding and float32 only (a compile costs
#: seconds each on CPU): the mechanisms the later families brought (MoE routing, Llama 4's complex
#: rotary table and chunked attention, Mllama's cross-attention block).
MORE_COMPILED = ("qwen3_moe", "llama4", "mllama")


def _every_other_family() -> tuple[str, ...]:
    from sasa.hf.families import FAMILIES

    return tuple(name for name in _tiny.BUILDERS if name not in ("llama", "qwen2_vl", *MORE_COMPILED)
                 and not FAMILIES[name].no_scope_last)


#: Every other family that runs scope="last": its compiled pass is checked against its own eager
#: pass in float32 (the eager pass is checked against the float64 reference per family by the
#: conformance tests), so no family is left "untested": compile works or it is refused.
EAGER_MATCHED = _every_other_family()
#: The families whose compiled pass is checked (the README's family table reads it).
COMPILED_FAMILIES = ("llama", "qwen2_vl", *MORE_COMPILED, *EAGER_MATCHED)


@pytest.mark.parametrize(
    "family, dtype, side",
    [(f, d, side) for f, d in (("llama", torch.float32), ("llama", torch.bfloat16), ("qwen2_vl", torch.float32))
     for side in ("left", "right")] + [(f, torch.float32, "left") for f in MORE_COMPILED],
)
def test_compiled_pass_matches_the_eager_pass_under_the_tolerance_rule(family, dtype, side):
    t = tiny(family, dtype)
    batch = getattr(t, side)
    compiled, blocks = _features(t, batch, compiled=True)
    assert blocks.failure is None and blocks.compiled_calls == 1
    eager, none = _features(t, batch, compiled=False)
    assert none is None
    t64 = tiny(family, torch.float64)
    truth = _features(t64, getattr(t64, side), compiled=False)[0].double()
    eager_err = float((eager.double() - truth).abs().max())
    err = float((compiled.double() - truth).abs().max())
    atol = 1e-6 if dtype == torch.float32 else 1e-2
    assert err <= 2 * eager_err + atol, (err, eager_err)


@pytest.mark.parametrize("family", EAGER_MATCHED)
def test_compiled_pass_matches_the_eager_pass_for_every_family(family):
    # One process compiling for many model classes would reach dynamo's recompile limit (the
    # guard then runs eagerly, with a warning); each family here starts from a fresh cache.
    torch._dynamo.reset()
    t = tiny(family, torch.float32)
    compiled, blocks = _features(t, t.left, compiled=True)
    assert blocks.failure is None and blocks.compiled_calls == 1, blocks.failure
    eager, _ = _features(t, t.left, compiled=False)
    assert torch.isfinite(eager).all() and torch.isfinite(compiled).all()
    scale = float(eager.abs().max())
    assert float((compiled - eager).abs().max()) <= 1e-5 * max(scale, 1.0), family


def _probe(width: int, bias: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, width), torch.tensor([bias])


def test_passed_rows_generate_exactly_what_the_unguarded_model_does_and_flagged_rows_refuse():
    t = tiny("llama", torch.float32)
    model, batch = t.model, t.left
    width = model.config.hidden_size
    gen = dict(max_new_tokens=4, do_sample=False, return_dict_in_generate=True, output_logits=True)
    plain = model.generate(**batch, **gen)
    with apply_sasa(model, _config(t, True), probe=_probe(width, -30.0)) as guard:
        passed = guard.generate(**batch, **gen)
        assert guard._augment.compiled.compiled_calls == 1
    assert not passed.flagged.any()
    assert torch.equal(passed.sequences, plain.sequences)
    # every decode step's logits bit for bit: the compiled pass left the cache exactly as it was
    assert all(torch.equal(a, b) for a, b in zip(passed.generate_output.logits, plain.logits, strict=True))
    with apply_sasa(model, _config(t, True), probe=_probe(width, 30.0)) as guard:
        refused = guard.generate(**batch, max_new_tokens=4, do_sample=False)
        assert guard._augment.compiled.compiled_calls == 1
    assert refused.flagged.all()


_LOOP = compiled_pass._one_token_blocks


def _untraceable_loop(blocks, h, kwargs, view):
    contextvars.ContextVar("sasa_test").get(None)  # dynamo cannot trace this: fullgraph fails to compile
    return _LOOP(blocks, h, kwargs, view)


def test_a_pass_that_cannot_compile_runs_eagerly_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(compiled_pass, "_one_token_blocks", _untraceable_loop)
    t = tiny("llama", torch.float32)
    eager, _ = _features(t, t.left, compiled=False)
    gen = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True)
    plain = t.model.generate(**t.left, **gen)
    with caplog.at_level(logging.WARNING, logger="sasa"):
        with apply_sasa(t.model, _config(t, True), probe=_probe(t.model.config.hidden_size, -30.0)) as guard:
            first = guard.features(**t.left)
            second = guard.features(**t.left)
            generated = guard.generate(**t.left, **gen)
            blocks = guard._augment.compiled
    assert blocks.compiled_calls == 0 and "Unsupported" in blocks.failure
    warnings = [r for r in caplog.records if "could not be compiled" in r.getMessage()]
    assert len(warnings) == 1  # logged once; later calls go straight to the eager pass
    # the eager fallback is the eager pass, bit for bit, and it leaves the cache as it was
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert all(torch.equal(a, b) for a, b in zip(generated.generate_output.logits, plain.logits, strict=True))


def test_an_error_while_the_compiled_pass_runs_fails_closed(monkeypatch):
    t = tiny("llama", torch.float32)
    with apply_sasa(t.model, _config(t, True), probe=_probe(t.model.config.hidden_size, -30.0)) as guard:

        def broken(*args):
            raise RuntimeError("out of memory (simulated)")

        monkeypatch.setattr(guard._augment.compiled, "_compiled", broken)
        with pytest.raises(RuntimeError, match="simulated"):
            guard.score(**t.left)
        out = guard.generate(**t.left, max_new_tokens=3, do_sample=False)
        assert guard._augment.compiled.failure is None  # not taken for a compile failure
    assert out.flagged.all()  # a probe that never fires, yet every row is refused: no score, no pass


def test_compile_augmented_is_checked():
    with pytest.raises(TypeError, match="compile_augmented"):
        SASAConfig(1, 2, compile_augmented=1)
    with pytest.raises(ValueError, match="compile_augmented.*scope='all'"):
        SASAConfig(1, 2, scope="all", compile_augmented=True)
    config = SASAConfig(1, 2, compile_augmented=True)
    assert SASAConfig.from_json(config.to_json()) == config
