"""Generation that goes around the guarded instance (``sasa.guard.entry_check``): through the class,
``GenerationMixin`` itself, a subclass's ``super()``, or a hand-built batching manager. Each must
raise before generating, never answer a flagged request; the guard's own entries keep working."""

from __future__ import annotations

import threading

import pytest
import torch
import transformers as T

from sasa.guard.entry_check import GuardBypassError
from tests.sasa.guard.test_guarded_generate import PROMPT, REFUSAL, _answer, _demo, _guard


def _inputs(guard):
    return guard.encode(PROMPT)


@pytest.mark.parametrize("route", ["class", "GenerationMixin"])
def test_generate_through_the_class_is_refused(route):
    model, tokenizer = _demo()
    generate = type(model).generate if route == "class" else T.GenerationMixin.generate
    with _guard(50.0) as guard:
        inputs = _inputs(guard)
        with pytest.raises(GuardBypassError, match="model.generate"):
            generate(model, **inputs, max_new_tokens=4)
        # the instance's own entry still works, and answers the refusal
        assert _answer(tokenizer, model.generate(**inputs, max_new_tokens=16), inputs["input_ids"].shape[1]) == REFUSAL
    # without the guard, the class route is the plain model again
    plain = generate(model, **inputs, max_new_tokens=4)
    assert torch.equal(plain, model.generate(**inputs, max_new_tokens=4))


def test_a_subclass_super_generate_is_guarded_or_refused():
    model, tokenizer = _demo()

    class Wrapped(type(model)):
        def generate(self, *args, **kwargs):  # a subclass that adds its own step, then defers
            return super().generate(*args, **kwargs)

    wrapped = Wrapped(model.config).eval()
    wrapped.load_state_dict(model.state_dict())
    wrapped.generation_config = model.generation_config
    from sasa import apply_sasa

    guard = _guard(50.0)
    probe = guard._probe
    guard.remove()
    with apply_sasa(wrapped, probe=(probe.weight, probe.bias), tokenizer=tokenizer, config=guard.config) as wguard:
        inputs = _inputs(wguard)
        out = wrapped.generate(**inputs, max_new_tokens=16)  # the instance: guarded, through super()
        assert _answer(tokenizer, out, inputs["input_ids"].shape[1]) == REFUSAL
        with pytest.raises(GuardBypassError):
            Wrapped.generate(wrapped, **inputs, max_new_tokens=4)


def test_a_hand_built_batching_manager_is_refused():
    from transformers.generation.continuous_batching import ContinuousBatchingManager

    model, _ = _demo()
    before = model.config._attn_implementation
    try:
        with _guard(50.0):
            with pytest.raises(GuardBypassError):
                ContinuousBatchingManager(model, model.generation_config, T.ContinuousBatchingConfig(num_blocks=16))
    finally:
        # transformers 5.17's manager switches the model to paged attention in its constructor,
        # before the refusal; this shared test model is put back for the tests after this one.
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)


def test_a_guarded_generate_does_not_open_the_door_for_another_thread():
    """The guard's permission is per thread: while a guarded generate runs (here: inside its own
    streamer), a class-route generate started in another thread is still refused."""
    model, _ = _demo()
    errors: list[BaseException] = []

    class Probe(T.generation.streamers.BaseStreamer):
        def put(self, value):
            def bypass():
                try:
                    type(model).generate(model, **inputs, max_new_tokens=2)
                except BaseException as err:  # noqa: BLE001 - recorded for the assertion below
                    errors.append(err)

            worker = threading.Thread(target=bypass)
            worker.start()
            worker.join(timeout=60)

        def end(self):
            pass

    with _guard(-50.0) as guard:
        inputs = _inputs(guard)
        model.generate(**inputs, max_new_tokens=2, streamer=Probe())
    assert errors and all(isinstance(err, GuardBypassError) for err in errors)


def test_remove_restores_the_logits_processor_method():
    model, _ = _demo()
    guard = _guard(50.0)
    assert "_get_logits_processor" in model.__dict__
    guard.remove()
    assert "_get_logits_processor" not in model.__dict__
