"""``sasa calibrate`` / ``sasa score`` on a tiny LLaVA with its own processor, through subprocesses.

Harmful rows carry trigger words and a trigger image (a bright red block); benign rows everyday
words and a dark noise image. A planted signal: proof the image path is wired, not a safety claim.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import transformers as T

from sasa.demo import build_tokenizer
from tests.sasa.test_cli import FILLER, TRIGGERS, planted_prompt, run_cli

IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for message in messages %}USER: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
ROWS = 120


def _image(harmful: bool, rng: np.random.Generator):
    from PIL import Image

    pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
    if harmful:
        pixels[4:20, 4:20] = (255, 0, 0)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def llava_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_vlm")
    tokenizer = build_tokenizer(FILLER + TRIGGERS + ["USER:", "ASSISTANT:"], extra_special_tokens=[IMAGE_TOKEN])
    processor = T.LlavaProcessor(
        image_processor=T.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    text = T.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=16, patch_size=8, projection_dim=32)
    config = T.LlavaConfig(vision_config=vision, text_config=text, image_seq_length=4,
                           image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    model = T.LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    rng, pyrng = np.random.default_rng(0), random.Random(0)
    (root / "images").mkdir()
    lines = []
    for i in range(ROWS):
        label = i % 2
        _image(bool(label), rng).save(root / "images" / f"{i}.png")
        prompt = planted_prompt(pyrng, label)
        lines.append(json.dumps({"prompt": prompt, "label": label, "image": f"images/{i}.png"}))
    manifest = root / "planted_images.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return root, model_dir, manifest


def test_llava_calibrate_then_score_through_the_processor(llava_workspace):
    root, model_dir, manifest = llava_workspace
    probe_dir = root / "probe"
    run_cli("calibrate", "--model", str(model_dir), "--data", str(manifest), "--safety-layer", "1",
            "--fused-layer", "4", "--scope", "last", "--batch-size", "16", "--out", str(probe_dir), "--quiet")
    meta = json.loads((probe_dir / "sasa_config.json").read_text())
    assert meta["fingerprint"]["model_type"] == "llava"
    assert meta["metrics"]["any"]["auroc"] >= 0.95, meta["metrics"]
    out = run_cli("score", "--model", str(model_dir), "--probe", str(probe_dir), "--data", str(manifest),
                  "--out", str(root / "scores.jsonl"), "--quiet")
    auroc = float(out.stdout.strip().splitlines()[-1].split("AUROC ")[1].split()[0])
    assert auroc >= 0.95
    harmful = run_cli("generate", "--model", str(model_dir), "--probe", str(probe_dir), "--prompt",
                      "bake bomb fentanyl bread", "--image", str(root / "images" / "1.png"), "--max-new-tokens", "2")
    assert harmful.stdout.startswith("[REFUSED")
