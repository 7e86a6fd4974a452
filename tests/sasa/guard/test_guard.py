"""apply_sasa / SASAGuard: bad input (raised before any compute), fail-closed scoring, padding,
several probes, refusal tokens, instance isolation."""

from __future__ import annotations

import copy
import functools
import logging

import pytest
import torch
import transformers as T
from torch import nn

from sasa import SUPPORTED_MODEL_TYPES, SASAConfig, apply_sasa
from tests.sasa import _tiny


@functools.lru_cache(maxsize=None)
def llama() -> _tiny.Tiny:
    return _tiny.llama()


@pytest.fixture
def t():
    return llama()


class _Calls:
    """Counts forward calls of a model, to prove an error came before any compute."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *args):
        self.n += 1

    def close(self):
        self.handle.remove()


@pytest.fixture
def calls(t):
    c = _Calls(t.model)
    yield c
    c.close()


def _apply(t, **kw):
    probe = kw.pop("probe", (torch.randn(_tiny.VOCAB), torch.tensor(0.0)))
    return apply_sasa(t.model, SASAConfig(1, 2, **kw), probe=probe)


# ---------------------------------------------------------------- errors at apply time


def test_layer_out_of_range(t):
    with pytest.raises(ValueError, match=r"fused_layer: 4 is out of range .* 4 decoder blocks"):
        apply_sasa(t.model, SASAConfig(1, 4))


def test_probe_width_must_match_the_feature_size(t):
    with pytest.raises(ValueError, match=r"width 32 does not match the feature size 128"):
        apply_sasa(t.model, SASAConfig(1, 2), probe=(torch.zeros(32), torch.zeros(1)))
    with pytest.raises(ValueError, match=r"width 128 does not match the feature size 32"):
        apply_sasa(t.model, SASAConfig(1, 2, feature="hidden"), probe=(torch.zeros(2, 128), torch.zeros(2)))
    with pytest.raises(ValueError, match=r"probe bias"):
        apply_sasa(t.model, SASAConfig(1, 2), probe=(torch.zeros(2, 128), torch.zeros(3)))
    with pytest.raises(TypeError, match=r"probe"):
        apply_sasa(t.model, SASAConfig(1, 2), probe=42)
    with pytest.raises(FileNotFoundError, match=r"probe: .*probe.safetensors not found"):
        apply_sasa(t.model, SASAConfig(1, 2), probe="no/such/probe_dir")  # a str is a probe directory


def test_unsupported_model_lists_supported_types():
    torch.manual_seed(0)
    gpt2 = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    with pytest.raises(ValueError, match="supported model_types: llama, mistral") as err:
        apply_sasa(gpt2, SASAConfig(0, 1))
    assert "'gpt2'" in str(err.value) and all(name in str(err.value) for name in SUPPORTED_MODEL_TYPES)


def test_model_without_decoder_blocks(t):
    empty = copy.deepcopy(t.model)
    empty.model.layers = nn.ModuleList()
    with pytest.raises(ValueError, match="no decoder blocks"):
        apply_sasa(empty, SASAConfig(0, 1))


def test_patching_twice_raises_until_removed(t):
    guard = _apply(t)
    try:
        with pytest.raises(RuntimeError, match="already has an active SASA guard"):
            _apply(t)
    finally:
        guard.remove()
    _apply(t).remove()
    with pytest.raises(RuntimeError, match="removed"):
        guard.score(**t.left)


def test_other_instances_are_unaffected(t):
    other = copy.deepcopy(t.model)
    guard = _apply(t)
    try:
        assert "_sasa_guard" in t.model.__dict__ and "_sasa_guard" not in other.__dict__
        assert type(t.model) is type(other) and type(other).forward is T.LlamaForCausalLM.forward
        guard2 = apply_sasa(other, SASAConfig(1, 2))  # the other instance can have its own guard
        guard2.remove()
    finally:
        guard.remove()


def test_score_needs_a_probe(t):
    guard = apply_sasa(t.model, SASAConfig(1, 2))
    try:
        with pytest.raises(ValueError, match="no probe"):
            guard.score(**t.left)
    finally:
        guard.remove()


# ---------------------------------------------------------------- errors at call time, before compute


@pytest.mark.parametrize("method", ["features", "score", "generate"])
def test_bad_inputs_raise_before_any_compute(t, calls, method):
    guard = _apply(t)
    ids, mask = t.left["input_ids"], t.left["attention_mask"]
    cases = [
        (dict(input_ids=ids[:0], attention_mask=mask[:0]), "empty batch"),
        (dict(input_ids=ids[:, :0], attention_mask=mask[:, :0]), "empty prompt"),
        (dict(input_ids=ids), "attention_mask: input_ids contain padding"),
        (dict(input_ids=ids, attention_mask=mask[:, 1:]), "attention_mask: expected shape"),
        (dict(input_ids=ids, attention_mask=torch.zeros_like(mask)), r"row\(s\) \[0, 1, 2\] have no tokens"),
        (dict(input_ids=ids.to("meta"), attention_mask=mask), "input_ids: is on device meta"),
        (dict(input_ids=ids, attention_mask=mask.to("meta")), "attention_mask: is on device meta"),
        (dict(attention_mask=mask), "expected input_ids"),
        (dict(input_ids=ids.float(), attention_mask=mask), "input_ids: expected an integer tensor"),
    ]
    try:
        for inputs, words in cases:
            with pytest.raises((ValueError, TypeError), match=words):
                getattr(guard, method)(**inputs)
        assert calls.n == 0
    finally:
        guard.remove()


def test_generate_rejects_beams_and_caches(t, calls):
    guard = _apply(t, scope="last")
    try:
        with pytest.raises(ValueError, match="num_beams"):
            guard.generate(**t.left, num_beams=2)
        with pytest.raises(ValueError, match="num_return_sequences"):
            guard.generate(**t.left, num_return_sequences=2, do_sample=True)
        with pytest.raises(ValueError, match="use_cache"):
            guard.generate(**t.left, use_cache=False)
        assert calls.n == 0
    finally:
        guard.remove()


# ---------------------------------------------------------------- scoring behaviour


@pytest.mark.parametrize("scope", ["all", "last"])
def test_padded_batch_scores_equal_unpadded_rows(t, scope):
    guard = _apply(t, scope=scope, probe=(torch.randn(3, _tiny.VOCAB) * 0.2, torch.zeros(3)))
    try:
        left, right = guard.score(**t.left), guard.score(**t.right)
        alone = []
        for row in range(3):
            keep = t.right["attention_mask"][row].bool()
            ids = t.right["input_ids"][row][keep][None]
            alone.append(guard.score(input_ids=ids, attention_mask=torch.ones_like(ids))[0])
        alone = torch.stack(alone)
    finally:
        guard.remove()
    assert left.shape == (3, 3)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[1])  # rows really differ


def _nan_model(t):
    """A copy of the model whose final norm makes every augmented state NaN (a finite probe then
    scores NaN: validation refuses a NaN probe itself)."""
    model = copy.deepcopy(t.model)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    return _tiny.Tiny(t.family, model, t.left, t.right)


def test_nan_score_fails_closed(t, caplog):
    probe = (torch.zeros(_tiny.VOCAB), torch.tensor(0.0))
    t = _nan_model(t)
    guard = _apply(t, probe=probe)
    try:
        assert torch.isnan(guard.score(**t.left)).all()
        with caplog.at_level(logging.WARNING, logger="sasa"):
            out = guard.generate(**t.left, max_new_tokens=3)
        assert out.flagged.all() and "flagged (fail_closed=True)" in caplog.text
    finally:
        guard.remove()
    guard = _apply(t, probe=probe, fail_closed=False)
    try:
        with caplog.at_level(logging.WARNING, logger="sasa"):
            out = guard.generate(**t.left, max_new_tokens=3)
        assert not out.flagged.any() and "passed (fail_closed=False)" in caplog.text
    finally:
        guard.remove()


def test_failed_score_flags_every_row(t, caplog):
    guard = _apply(t, probe=(torch.zeros(_tiny.VOCAB), torch.tensor(-100.0)))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    guard._readout.scores = broken  # the last step of scoring, whichever way the augmented pass ran
    try:
        with caplog.at_level(logging.ERROR, logger="sasa"):
            out = guard.generate(**t.left, max_new_tokens=3)
    finally:
        guard.remove()
    assert out.flagged.all() and torch.isnan(out.scores).all()
    assert "scoring the prefill failed" in caplog.text


def test_probe_object_with_thresholds_and_categories(t):
    class Probe:
        weight = torch.zeros(2, _tiny.VOCAB)
        bias = torch.tensor([0.0, 0.0])  # p = 0.5 for both
        threshold = torch.tensor([0.6, 0.4])
        categories = ["weapons", "any"]

    guard = apply_sasa(t.model, SASAConfig(1, 2, threshold=0.99), probe=Probe())
    try:
        out = guard.generate(**t.left, max_new_tokens=2)
    finally:
        guard.remove()
    assert out.scores.shape == (3, 2)
    assert out.flagged.all()  # 0.5 >= 0.4 for the second probe; the config threshold is overridden


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<s>", "I'm", "sorry,", "but", "I", "can't", "help", "with", "that."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>")


def test_flagged_rows_get_the_tokenized_refusal(t):
    tok = _word_tokenizer()
    guard = apply_sasa(t.model, SASAConfig(1, 2), probe=(torch.zeros(_tiny.VOCAB), torch.tensor(100.0)), tokenizer=tok)
    try:
        out = guard.generate(**t.left, max_new_tokens=16)
    finally:
        guard.remove()
    assert out.flagged.all()
    width = t.left["input_ids"].shape[1]
    for row in out.sequences:
        text = tok.decode(row[width:], skip_special_tokens=True)
        assert text == "I'm sorry, but I can't help with that."
    assert out.refusal_text == "I'm sorry, but I can't help with that."


def test_features_shapes(t):
    for feature, width in (("logits", _tiny.VOCAB), ("hidden", 32)):
        guard = apply_sasa(t.model, SASAConfig(1, 2, feature=feature))
        try:
            feats = guard.features(**t.left)
        finally:
            guard.remove()
        assert feats.shape == (3, width) and feats.dtype == torch.float32
        assert guard.feature_size == width and guard.num_layers == 4


@pytest.mark.parametrize("scope", ["all", "last"])
def test_right_padded_generate_matches_model_generate(t, scope):
    # transformers warns that decoder-only models want left padding; whatever it generates, the
    # guard must not change it, and the scores must come from each row's real last token.
    probe = (torch.zeros(_tiny.VOCAB), torch.tensor(-60.0))
    with torch.no_grad():
        want = t.model.generate(**t.right, max_new_tokens=4, do_sample=False)
    guard = _apply(t, scope=scope, probe=probe)
    try:
        got = guard.generate(**t.right, max_new_tokens=4, do_sample=False)
    finally:
        guard.remove()
    assert torch.equal(got.sequences, want) and not got.flagged.any()
