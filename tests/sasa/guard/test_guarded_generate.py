"""The paths real users take: ``model.generate``, ``pipeline``, streamers, one-line loading, and
generation settings that would let the first forward be something other than the whole prefill."""

from __future__ import annotations

import copy
import functools
import threading

import pytest
import torch
import transformers as T

import sasa
from sasa import PromptFormat, SASAConfig, SASAProbe, apply_sasa, get_guard, model_fingerprint
from sasa.demo.stand_in import build_default

PROMPT = "how do i bake sourdough bread"


@functools.lru_cache(maxsize=None)
def _demo():
    model, tokenizer = build_default()
    model.generation_config.do_sample = False
    return model, tokenizer


def _guard(bias: float, **kwargs):
    """The demo model guarded by a probe that flags everything (bias > 0) or nothing (bias < 0)."""
    model, tokenizer = _demo()
    config = SASAConfig(2, 4, feature="hidden")
    probe = SASAProbe(
        weight=torch.zeros(1, 64), bias=torch.tensor([bias]), threshold=torch.tensor([0.5]), categories=["any"],
        feature="hidden", config=config, fingerprint=model_fingerprint(model),
        prompt_format=PromptFormat.of(tokenizer),
    )
    return apply_sasa(model, probe=probe, tokenizer=tokenizer, **kwargs)


def _answer(tokenizer, sequences, prompt_width):
    return tokenizer.decode(sequences[0, prompt_width:], skip_special_tokens=True)


def _refusal(**decode):
    """The refusal text as the demo's word-level tokenizer gives it back."""
    _, tokenizer = _demo()
    ids = tokenizer("I'm sorry, but I can't help with that.", add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids + [tokenizer.eos_token_id], **decode)


REFUSAL = _refusal(skip_special_tokens=True)


@pytest.mark.parametrize("bias, flagged", [(50.0, True), (-50.0, False)])
def test_model_generate_is_guarded_while_applied(bias, flagged):
    model, tokenizer = _demo()
    inputs = None
    with _guard(bias) as guard:
        inputs = guard.encode(PROMPT)
        via_model = model.generate(**inputs, max_new_tokens=16)
        via_guard = guard.generate(**inputs, max_new_tokens=16)
        dict_out = model.generate(**inputs, max_new_tokens=16, return_dict_in_generate=True, output_scores=True)
    plain = model.generate(**inputs, max_new_tokens=16)  # the guard is gone: unguarded again
    width = inputs["input_ids"].shape[1]
    assert torch.equal(via_model, via_guard.sequences) and bool(via_guard.flagged[0]) is flagged
    assert torch.equal(dict_out.sequences, via_model)
    if flagged:
        assert _answer(tokenizer, via_model, width) == REFUSAL
        assert torch.isnan(dict_out.scores[0][0]).all()  # the model's own first-step scores are withheld
    else:
        assert torch.equal(via_model, plain)


def test_positional_inputs_are_guarded_too():
    model, tokenizer = _demo()
    with _guard(50.0) as guard:
        inputs = guard.encode(PROMPT)
        out = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=16)
    assert _answer(tokenizer, out, inputs["input_ids"].shape[1]) == REFUSAL


def test_pipeline_calls_are_guarded():
    model, tokenizer = _demo()
    with _guard(50.0):
        pipe = T.pipeline("text-generation", model=model, tokenizer=tokenizer)
        out = pipe([{"role": "user", "content": PROMPT}], max_new_tokens=16, do_sample=False)
        # Spaces compared out: some transformers versions (5.17) let the pipeline clean up the
        # tokenizer's spaces around punctuation ("sorry , but" -> "sorry, but").
        assert REFUSAL.replace(" ", "") in str(out[0]["generated_text"][-1]["content"]).replace(" ", "")
        # A raw string skips the chat template the probe was calibrated with: refused, not passed.
        with pytest.raises(ValueError, match="do not end with the chat template's generation prompt"):
            pipe(PROMPT, max_new_tokens=16, do_sample=False)
    with _guard(-50.0):
        guarded = pipe([{"role": "user", "content": PROMPT}], max_new_tokens=16, do_sample=False)
    plain = pipe([{"role": "user", "content": PROMPT}], max_new_tokens=16, do_sample=False)
    assert guarded == plain


@pytest.mark.parametrize("bias, flagged", [(50.0, True), (-50.0, False)])
def test_text_streamer_never_shows_a_refused_answer(capsys, bias, flagged):
    model, tokenizer = _demo()
    with _guard(-50.0) as guard:
        inputs = guard.encode(PROMPT)
    model.generate(**inputs, max_new_tokens=16, streamer=T.TextStreamer(tokenizer, skip_prompt=True))
    unguarded = capsys.readouterr().out
    with _guard(bias):
        model.generate(**inputs, max_new_tokens=16, streamer=T.TextStreamer(tokenizer, skip_prompt=True))
    streamed = capsys.readouterr().out
    if flagged:
        assert streamed.strip() == _refusal().strip()
        first_word = unguarded.split()[0]
        assert first_word not in REFUSAL.split()  # the model's first token would have leaked here
    else:
        assert streamed == unguarded


def test_text_iterator_streamer_in_a_thread():
    model, tokenizer = _demo()
    with _guard(50.0) as guard:
        inputs = guard.encode(PROMPT)
        streamer = T.TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        worker = threading.Thread(target=model.generate, kwargs=dict(inputs, max_new_tokens=16, streamer=streamer))
        worker.start()
        text = "".join(streamer)
        worker.join()
    assert text.strip() == REFUSAL


def test_an_error_before_generation_ends_the_stream():
    model, tokenizer = _demo()
    with _guard(50.0) as guard:
        inputs = guard.encode(PROMPT)
        streamer = T.TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
        with pytest.raises(ValueError, match="num_beams"):
            model.generate(**inputs, max_new_tokens=3, num_beams=2, streamer=streamer)
        assert "".join(streamer) == ""  # ended, empty: a reader is not left waiting


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(generation_config=T.GenerationConfig(num_beams=2)), "num_beams"),
        (dict(generation_config=T.GenerationConfig(num_return_sequences=2, do_sample=True)), "num_return_sequences"),
        (dict(num_beams=3), "num_beams"),
        (dict(prefill_chunk_size=2), "prefill_chunk_size"),
        (dict(penalty_alpha=0.5, top_k=4), "generation_config"),
        (dict(cache_implementation="static"), "cache_implementation"),
    ],
)
def test_generation_settings_that_skip_the_check_are_refused(settings, words):
    model, _ = _demo()
    with _guard(50.0) as guard:
        inputs = guard.encode(PROMPT)
        with pytest.raises(ValueError, match=words):
            model.generate(**inputs, max_new_tokens=3, **settings)
        with pytest.raises(ValueError, match=words):
            guard.generate(**inputs, max_new_tokens=3, **settings)


def test_the_models_own_generation_config_is_resolved_too():
    model, _ = _demo()
    model = copy.deepcopy(model)
    model.generation_config.num_return_sequences = 2
    model.generation_config.do_sample = True
    _, tokenizer = _demo()
    probe = SASAProbe(weight=torch.zeros(1, 64), bias=torch.tensor([50.0]), threshold=torch.tensor([0.5]),
                      categories=["any"], feature="hidden", config=SASAConfig(2, 4, feature="hidden"),
                      fingerprint=model_fingerprint(model))
    with apply_sasa(model, probe=probe, tokenizer=tokenizer) as guard:
        with pytest.raises(ValueError, match="num_return_sequences"):
            model.generate(**guard.encode(PROMPT), max_new_tokens=16)


def test_one_line_loading_and_the_context_manager(tmp_path):
    model, tokenizer = _demo()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    with _guard(50.0) as guard:
        probe = SASAProbe(weight=guard._probe.weight.cpu(), bias=guard._probe.bias.cpu(), threshold=torch.tensor([0.5]),
                          categories=["any"], feature="hidden", config=guard.config,
                          fingerprint=model_fingerprint(model), prompt_format=guard.prompt_format)
    probe.save(tmp_path / "probe")
    loaded = sasa.AutoSASAModelForCausalLM.from_pretrained(tmp_path / "model", probe=tmp_path / "probe")
    guard = get_guard(loaded)
    assert guard is not None and guard.active
    out = loaded.generate(**guard.encode(PROMPT), max_new_tokens=16)
    assert _answer(tokenizer, out, guard.encode(PROMPT)["input_ids"].shape[1]) == REFUSAL
    guard.remove()
    assert get_guard(loaded) is None and "generate" not in loaded.__dict__


def test_a_guarded_model_cannot_be_deep_copied():
    model, _ = _demo()
    with _guard(50.0):
        with pytest.raises(TypeError, match="cannot be deep-copied"):
            copy.deepcopy(model)


def test_torch_save_of_a_guarded_model_names_the_guard(tmp_path):
    import io
    import pickle

    model, _ = _demo()
    with _guard(50.0):
        for save in (lambda: torch.save(model, io.BytesIO()), lambda: pickle.dumps(model)):
            with pytest.raises(TypeError, match="active SASA guard.*save_pretrained.*guard.remove"):
                save()
    torch.save(model, tmp_path / "plain.pt")  # the guard is gone: the model saves as before


def _mixed_guard():
    """The demo model with a probe that flags the first of two prompts and passes the second."""
    model, tokenizer = _demo()
    config = SASAConfig(2, 4, feature="hidden")
    free = apply_sasa(model, config, tokenizer=tokenizer)
    try:
        inputs = free.encode(["write instructions to make a weapon at home", PROMPT])
        feats = free.features(**inputs).double()
    finally:
        free.remove()
    direction = feats[0] - feats[1]
    weight = direction / direction.norm() ** 2 * 20.0
    probe = SASAProbe(
        weight=weight.float()[None], bias=(-(weight @ (feats[0] + feats[1]) / 2)).float()[None],
        threshold=torch.tensor([0.5]), categories=["any"], feature="hidden", config=config,
        fingerprint=model_fingerprint(model), prompt_format=PromptFormat.of(tokenizer),
    )
    return apply_sasa(model, probe=probe, tokenizer=tokenizer), inputs


@pytest.mark.parametrize("budget", [1, 3])
def test_a_refusal_longer_than_the_budget_is_cut_to_it(budget):
    """Passed rows equal the unguarded tensor exactly (no extra column); the flagged row's refusal
    takes at most max_new_tokens tokens, in the returned sequences and in a stream."""
    model, tokenizer = _demo()
    guard, inputs = _mixed_guard()
    with guard:
        out = guard.generate(**inputs, max_new_tokens=budget)
        streamed: list[int] = []

        class Tokens(T.generation.streamers.BaseStreamer):
            def put(self, value):
                streamed.extend(value.flatten().tolist())

            def end(self):
                pass

        single = {k: v[:1] for k, v in inputs.items()}
        model.generate(**single, max_new_tokens=budget, streamer=Tokens())
    plain = model.generate(**inputs, max_new_tokens=budget)
    width = inputs["input_ids"].shape[1]
    assert out.flagged.tolist() == [True, False] and len(guard._refusal_ids) > budget
    assert out.sequences.shape == plain.shape == (2, width + budget)
    assert torch.equal(out.sequences[1], plain[1])
    assert out.sequences[0, width:].tolist() == guard._refusal_ids[:budget]
    assert streamed == inputs["input_ids"][0].tolist() + guard._refusal_ids[:budget]  # the prompt, then the cut refusal
