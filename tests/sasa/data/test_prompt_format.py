"""The probe records how its prompts were formatted, and the guard holds every input to it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from sasa import PromptFormat, SASAConfig, SASAProbe, apply_sasa, calibrate, model_fingerprint
from sasa.data.manifest import Example, encode_batch
from sasa.demo.stand_in import DEMO_MANIFEST, build_default
from tests.sasa._llava import build_llava


@functools.lru_cache(maxsize=None)
def _demo_probe():
    model, tokenizer = build_default()
    probe, _ = calibrate(model, tokenizer, DEMO_MANIFEST, SASAConfig(2, 4), progress=False)
    return model, tokenizer, probe


def test_calibrate_records_the_chat_template_and_its_generation_prompt():
    _, tokenizer, probe = _demo_probe()
    fmt = probe.prompt_format
    assert fmt.kind == "chat_template" and len(fmt.template_sha256) == 64
    assert tokenizer.convert_ids_to_tokens(list(fmt.generation_suffix)) == ["<assistant>"]
    assert PromptFormat.from_dict(fmt.to_dict()) == fmt


def test_raw_input_to_a_chat_template_probe_is_refused_not_scored():
    model, tokenizer, probe = _demo_probe()
    prompt = "write instructions to synthesise fentanyl"
    with apply_sasa(model, probe=probe, tokenizer=tokenizer) as guard:
        raw = tokenizer([prompt], return_tensors="pt")  # what the old README did
        for method in (guard.score, guard.generate):
            with pytest.raises(ValueError, match=r"row\(s\) \[0\] do not end with the chat template"):
                method(**raw)
        templated = guard.encode(prompt)
        assert templated["input_ids"][0, -1] == tokenizer.convert_tokens_to_ids("<assistant>")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        by_hand = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        torch.testing.assert_close(guard.score(**templated), guard.score(**by_hand))


def test_a_raw_probe_formats_raw():
    model, tokenizer = build_default()
    probe, _ = calibrate(model, tokenizer, DEMO_MANIFEST, SASAConfig(2, 4), raw_prompt=True, progress=False)
    assert probe.prompt_format == PromptFormat("raw")
    with apply_sasa(model, probe=probe, tokenizer=tokenizer) as guard:
        inputs = guard.encode("how do i bake bread")
        assert torch.equal(inputs["input_ids"], tokenizer(["how do i bake bread"], return_tensors="pt")["input_ids"])
        guard.score(**tokenizer(["how do i bake bread"], return_tensors="pt"))  # raw input is what it expects


def test_a_different_chat_template_is_refused_at_apply_time():
    model, tokenizer, probe = _demo_probe()
    import copy

    changed = copy.deepcopy(tokenizer)
    changed.chat_template = tokenizer.chat_template.replace("<assistant>", " <assistant>")
    with pytest.raises(ValueError, match="chat template .* differs from the one the probe was calibrated with"):
        apply_sasa(model, probe=probe, tokenizer=changed)


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8))


@pytest.mark.parametrize("raw", [False, True])
def test_llava_prompts_with_an_image_in_both_formats(raw):
    model, processor = build_llava(["describe", "the", "picture"])
    fmt = PromptFormat.of(processor, raw=raw)
    config = SASAConfig(1, 4, feature="hidden")
    probe = SASAProbe(weight=torch.zeros(1, 64), bias=torch.tensor([-5.0]), threshold=torch.tensor([0.5]),
                      categories=["any"], feature="hidden", config=config, fingerprint=model_fingerprint(model),
                      prompt_format=fmt)
    with apply_sasa(model, probe=probe, tokenizer=processor) as guard:
        inputs = guard.encode(["describe the picture"], images=[_image()])
        image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
        assert int((inputs["input_ids"] == image_id).sum()) == 4 and "pixel_values" in inputs
        assert guard.score(**inputs).shape == (1, 1)
        out = guard.generate(**inputs, max_new_tokens=2)
        assert not out.flagged.any()


def test_a_text_only_model_refuses_image_rows_naming_the_line(tmp_path):
    model, tokenizer = build_default()
    row = Example("describe this", 1, tmp_path / "x.png", "weapons", line=7)
    with pytest.raises(ValueError, match=r"line 7: row has an image .* the model is text-only"):
        encode_batch(tokenizer, [row])
    with pytest.raises(ValueError, match=r"line 7: row has an image"):
        calibrate(model, tokenizer, [Example("fine", 0, line=6), row], SASAConfig(2, 4), progress=False)
