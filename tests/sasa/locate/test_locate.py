"""``sasa locate`` / ``sasa.locate.locate`` on tiny models: per-layer values against direct
computations from ``output_hidden_states``, the grid against ``calibrate``, the CLI and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sasa.data.manifest import Example, batches, encode_batch, read_manifest
from sasa.demo.stand_in import build_default, save_default
from sasa.locate import locate
from sasa.locate import stats as S
from sasa.refusal import refusal_token_ids
from tests.sasa._locate_eval_data import one_error_line, planted_rows, run_main, write_jsonl
from tests.sasa.cli.test_cli_vlm import llava_workspace  # noqa: F401  (a fixture: tiny LLaVA + processor + images)

BATCH = 8


@pytest.fixture(scope="module")
def text_model():
    model, tokenizer = build_default()
    return model, tokenizer


def direct_states(model, processor, examples, decoder, as_text=False):
    """``[N, L, d]`` last-token states in locate's row order, from ``output_hidden_states``.

    ``hidden_states[i + 1]`` is ``H`` after block ``i`` for ``i < L - 1``; the last entry is already
    final-normed, so the last block's own output is read at the final norm's input instead.
    """
    rows = []
    seen = {}
    handle = decoder.norm.register_forward_pre_hook(lambda module, args: seen.__setitem__("h", args[0]))
    try:
        with torch.no_grad():
            for batch in batches(examples, BATCH):
                if as_text:
                    batch = [Example(e.text_only, e.label) for e in batch]
                inputs = encode_batch(processor, batch)
                hidden = model(**inputs, output_hidden_states=True).hidden_states
                # encode_batch pads on the left: every row's last prompt token is the last position.
                layers = [hidden[i + 1][:, -1] for i in range(len(decoder.layers) - 1)] + [seen["h"][:, -1]]
                rows.append(torch.stack(layers, dim=1).float())
    finally:
        handle.remove()
    return torch.cat(rows)


def cosine_gap_numpy(x, y):
    x = x.numpy().astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    b, h = x[y == 0], x[y == 1]
    bb = b @ b.T
    same = bb[~np.eye(len(b), dtype=bool)].mean()
    return same - (b @ h.T).mean()


def test_per_layer_values_match_output_hidden_states(text_model, tmp_path):
    model, tokenizer = text_model
    examples = read_manifest(write_jsonl(tmp_path / "m.jsonl", planted_rows(48, seed=3, trigger_rate=0.7)))
    result = locate(model, tokenizer, examples, safety_range=(1, 2), fused_range=(3, 4), batch_size=BATCH,
                    progress=False)
    decoder = model.model
    states = direct_states(model, tokenizer, examples, decoder)
    ordered = [e for b in batches(examples, BATCH) for e in b]
    y = torch.tensor([e.label for e in ordered])
    ids = torch.tensor(refusal_token_ids(tokenizer))
    assert len(ids) > 0  # the stand-in vocabulary has "sorry" and "illegal"
    folds = S.stratified_folds(y, 5, 0)
    assert [layer.layer for layer in result.layers] == list(range(6))
    for i, layer in enumerate(result.layers):
        x = states[:, i]
        assert layer.cosine_gap == pytest.approx(cosine_gap_numpy(x, y.numpy()), abs=1e-5)
        assert layer.probe_auroc == pytest.approx(S.cross_validated_auroc(x, y, folds, seed=0, holdout=0.2), abs=1e-6)
        with torch.no_grad():
            logits = model.lm_head(decoder.norm(x[y == 1]))
        expected = torch.isin(logits.topk(10, dim=-1).indices, ids).any(-1).double().mean().item()
        assert layer.refusal_rate == pytest.approx(expected, abs=1e-9)
        assert layer.fusion_similarity is None
    # Block L-1's logit lens is the model's own next-token distribution: check against real logits.
    with torch.no_grad():
        real = torch.cat([model(**encode_batch(tokenizer, b)).logits[:, -1] for b in batches(examples, BATCH)])
    expected_last = torch.isin(real[y == 1].topk(10, dim=-1).indices, ids).any(-1).double().mean().item()
    assert result.layers[-1].refusal_rate == pytest.approx(expected_last)
    assert any("fusion_similarity is null" in note for note in result.notes)


def test_cross_validation_folds_and_auroc_on_known_data():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 23 + [1] * 17)
    folds = S.stratified_folds(y, 5, seed=1)
    flat = torch.cat(folds)
    assert sorted(flat.tolist()) == list(range(40))  # disjoint and covering
    for fold in folds:
        assert 4 <= int((y[fold] == 0).sum()) <= 5 and 3 <= int((y[fold] == 1).sum()) <= 4
    separable = torch.randn(40, 6, generator=g) + 4.0 * y[:, None].float()
    assert S.cross_validated_auroc(separable, y, folds, seed=0, holdout=0.2) > 0.99
    noise = torch.randn(40, 6, generator=g)
    assert 0.2 < S.cross_validated_auroc(noise, y, folds, seed=0, holdout=0.2) < 0.8


def test_grid_auroc_matches_calibrate_for_the_same_pair(text_model, tmp_path):
    from sasa import SASAConfig, calibrate

    model, tokenizer = text_model
    # A weak signal (a fifth of the harmful rows carry no trigger word), so the AUROC is not pinned at 1.
    examples = read_manifest(write_jsonl(tmp_path / "m.jsonl", planted_rows(80, seed=5, trigger_rate=0.8,
                                                                            triggers=1)))
    result = locate(model, tokenizer, examples, safety_range=(1, 1), fused_range=(3, 3), batch_size=BATCH,
                    folds=2, progress=False)
    (cell,) = result.grid
    probe, report = calibrate(model, tokenizer, examples, SASAConfig(safety_layer=1, fused_layer=3, scope="last"),
                              batch_size=BATCH, progress=False)
    assert 0.6 < report.metrics["any"].auroc < 0.99, report.metrics["any"]
    assert abs(cell.auroc - report.metrics["any"].auroc) <= 0.05, (cell, report.metrics["any"])
    assert result.recommended == (1, 3)
    assert result.cost["augmented_passes"] == result.cost["normal_passes"] == 10  # 80 rows / batch 8, one pair


def test_llava_fusion_similarity_and_image_states(llava_workspace, tmp_path):  # noqa: F811
    from sasa.cli.loading import load_model

    root, model_dir, _ = llava_workspace
    model, processor = load_model(str(model_dir), "cpu", "float32")
    rows = []
    for i, row in enumerate(planted_rows(20, seed=7)):
        twin = row["prompt"] + (" bomb" if row["label"] else " tea")
        rows.append({**row, "image": f"images/{i}.png", "text_only": twin})
    rows += planted_rows(12, seed=8)  # text-only rows as well: two kinds of batches
    examples = read_manifest(write_jsonl(root / "fusion.jsonl", rows))
    result = locate(model, processor, examples, batch_size=BATCH, progress=False, out_dir=tmp_path / "out")
    decoder = model.model.language_model
    ordered = [e for b in batches(examples, BATCH) for e in b]
    states = direct_states(model, processor, ordered, decoder)
    paired = [e for e in ordered if e.text_only is not None]
    twins = direct_states(model, processor, paired, decoder, as_text=True)
    image_states = states[[ordered.index(e) for e in paired]]
    cos = torch.nn.functional.cosine_similarity(image_states.double(), twins.double(), dim=-1).mean(0)
    for layer, expected in zip(result.layers, cos.tolist()):
        assert layer.fusion_similarity == pytest.approx(expected, abs=1e-5)
    y = torch.tensor([e.label for e in ordered])
    assert result.layers[2].cosine_gap == pytest.approx(cosine_gap_numpy(states[:, 2], y.numpy()), abs=1e-5)
    assert result.counts["twin_pairs"] == 20 and result.counts["image_rows"] == 20
    assert result.grid and result.recommended in {(c.safety_layer, c.fused_layer) for c in result.grid}
    # Cost: 2 text batches + 3 image batches + 3 twin batches; 6 pairs (blocks 1..4) x 5 batches.
    assert result.cost["normal_passes"] == 8 and result.cost["augmented_passes"] == 30
    saved = json.loads((tmp_path / "out" / "locate.json").read_text())
    assert all(entry["fusion_similarity"] is not None for entry in saved["layers"])


@pytest.fixture(scope="module")
def saved_text_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("locate_cli")
    return root, save_default(root / "model")


def test_cli_writes_the_report_and_the_calibrate_command(saved_text_model, capsys):
    root, model_dir = saved_text_model
    data = write_jsonl(root / "planted.jsonl", planted_rows(48, seed=11))
    out = root / "out"
    code, stdout, _ = run_main(["locate", "--model", str(model_dir), "--data", str(data), "--out", str(out),
                                "--quiet", "--batch-size", "16"], capsys)
    assert code == 0
    report = json.loads((out / "locate.json").read_text())
    assert [set(e) for e in report["layers"]] == [{"layer", "probe_auroc", "cosine_gap", "fusion_similarity",
                                                   "refusal_rate"}] * 6
    assert {"safety_layer", "fused_layer", "auroc"} <= set(report["grid"][0])
    # Default grid: the middle half of 6 blocks (1..4), every pair s < f.
    assert sorted((c["safety_layer"], c["fused_layer"]) for c in report["grid"]) == [
        (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    best = max(report["grid"], key=lambda c: c["auroc"])
    s, f = report["recommended"]["safety_layer"], report["recommended"]["fused_layer"]
    assert next(c for c in report["grid"] if (c["safety_layer"], c["fused_layer"]) == (s, f))["auroc"] == best["auroc"]
    assert report["model_fingerprint"]["model_type"] == "llama"
    assert f"--safety-layer {s} --fused-layer {f} --scope last" in stdout and "next: sasa calibrate" in stdout
    assert "recommended:" in stdout and "cost:" in stdout
    assert (out / "layers.png").stat().st_size > 0 and (out / "grid.png").stat().st_size > 0


@pytest.mark.parametrize(
    "rows,extra,needle",
    [
        ([{"prompt": "bake bread", "label": 1}] * 12, [], "every row is harmful"),
        (planted_rows(12, seed=1) + [{"prompt": "bake bread", "label": 0, "text_only": "bread"}], [],
         "has 'text_only' but no 'image'"),
        (planted_rows(12, seed=1), ["--safety-range", "0:9"], "--safety-range: 0:9 is outside"),
        (planted_rows(12, seed=1), ["--fused-range", "4:2"], "--fused-range: 4:2 is empty"),
        (planted_rows(6, seed=1), [], "needs at least 5 rows of each class"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(saved_text_model, tmp_path, capsys, rows, extra, needle):
    _, model_dir = saved_text_model
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    code, _, err = run_main(["locate", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                             "--quiet", *extra], capsys)
    assert code == 2
    one_error_line(err, needle)


def test_grid_pairs_default_to_the_middle_half():
    from sasa.locate.run import grid_pairs, middle_half

    assert middle_half(32) == (8, 23) and middle_half(6) == (1, 4) and middle_half(4) == (1, 2)
    pairs = grid_pairs(32, None, None)
    assert len(pairs) == 16 * 15 // 2 and (13, 15) in pairs and all(8 <= s < f <= 23 for s, f in pairs)
    assert grid_pairs(6, (0, 1), (1, 5)) == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 2), (1, 3), (1, 4), (1, 5)]
    with pytest.raises(ValueError, match="fused_range: 2:6 is outside this model's decoder blocks"):
        grid_pairs(6, None, (2, 6))
    with pytest.raises(ValueError, match="give no pair with safety_layer < fused_layer"):
        grid_pairs(6, (3, 4), (1, 3))


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_saving_keeps_the_previous_report_whole(saved_text_model, tmp_path, monkeypatch, capsys):
    import sasa.locate.plots

    root, model_dir = saved_text_model
    data = write_jsonl(tmp_path / "planted.jsonl", planted_rows(24, seed=12))
    out = tmp_path / "out"
    argv = ["locate", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--quiet",
            "--safety-range", "1:1", "--fused-range", "2:2", "--folds", "2"]
    assert run_main(argv, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["grid.png", "layers.png", "locate.json"]
    monkeypatch.setattr(sasa.locate.plots, "plot_grid", _interrupt)  # after layers.png, before locate.json
    write_jsonl(data, planted_rows(24, seed=13))
    code, _, err = run_main(argv, capsys)
    assert code == 130
    assert "Traceback" not in err and err.strip() == "sasa locate: interrupted (Ctrl-C); the run did not finish"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new layers.png beside the old locate.json


def test_locate_refuses_pairs_the_model_changes_the_states_after():
    """Qwen3-VL adds DeepStack visual features to image positions after its text blocks 0 and 1:
    on prompts ending in an image token, locate's grid pairs (scope="last") with a safety block
    before 2 would re-run without them, so its passes refuse them (as the guard does); pairs from 2
    on run, and prompts ending in text run every pair."""
    from sasa.hf.families import family_of
    from sasa.locate.passes import Passes
    from tests.sasa import _tiny

    t = _tiny.BUILDERS["qwen3_vl"]()
    family = family_of("qwen3_vl")
    ends_in_image = _tiny.image_last_batch(t, "right")
    early = Passes(t.model, family, [(1, 3)], mode="replace", coef=1.0, eps=1e-6)
    with pytest.raises(RuntimeError, match="start the safety range at 2"):
        early._normal(ends_in_image, grid=True)
    assert early._normal(t.right, grid=True)[2].unchained is None  # ends in text: untouched there
    last_pos, states, normal = Passes(t.model, family, [(2, 3)], mode="replace", coef=1.0, eps=1e-6)._normal(
        ends_in_image, grid=True)
    assert normal.unchained == 2 and states.shape[1] == 5  # the last change: after block 1, before 2


def test_locate_runs_on_mllama_whose_image_enters_at_its_cross_attention_block():
    """A tiny Mllama with its own processor: locate runs (its text-only twins skip the
    cross-attention block 3, recorded as skipped, the state after it the previous block's), and the
    image reaches the last token's state only from block 3 on (docs/method.md section 4)."""
    import random

    import transformers as T
    from PIL import Image

    from sasa.data.manifest import Example, encode_batch
    from sasa.demo.stand_in import build_tokenizer

    template = ("{% for message in messages %}USER: {% for part in message['content'] %}"
                "{% if part['type'] == 'image' %}<|image|> {% else %}{{ part['text'] }}{% endif %}{% endfor %} "
                "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    words = ["what", "should", "i", "do", "with", "this", "tell", "me", "how", "to", "make", "a", "cake"]
    tok = build_tokenizer(words + ["USER:", "ASSISTANT:"], extra_special_tokens=["<|image|>", "<|python_tag|>"])
    processor = T.MllamaProcessor(image_processor=T.MllamaImageProcessor(size={"height": 16, "width": 16},
                                                                          max_image_tiles=1),
                                  tokenizer=tok, chat_template=template)
    torch.manual_seed(0)
    vision = T.MllamaVisionConfig(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                                  intermediate_size=64, vision_output_dim=64, image_size=16, patch_size=8,
                                  max_num_tiles=1, intermediate_layers_indices=[0], supported_aspect_ratios=[[1, 1]])
    text = T.MllamaTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[3],
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = T.MllamaForConditionalGeneration(T.MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))).eval()
    block = model.model.language_model.layers[3]
    with torch.no_grad():
        block.cross_attn_attn_gate.fill_(1.0)
        block.cross_attn_mlp_gate.fill_(1.0)
    rng, pr = np.random.default_rng(0), random.Random(0)
    examples = []
    for i in range(8):
        arr = (rng.random((16, 16, 3)) * 255).astype("uint8")
        prompt = " ".join(pr.choice(words) for _ in range(5))
        examples.append(Example(prompt, i % 2, Image.fromarray(arr), text_only=prompt))
    result = locate(model, processor, examples, safety_range=(1, 2), fused_range=(3, 4), feature="hidden", folds=2,
                    batch_size=8, progress=False)
    assert len(result.layers) == 6 and all(layer.fusion_similarity is not None for layer in result.layers)
    a = encode_batch(processor, examples[:1])
    b = dict(a, pixel_values=a["pixel_values"] + 1.0)
    with torch.no_grad():
        ha = model(**a, output_hidden_states=True).hidden_states
        hb = model(**b, output_hidden_states=True).hidden_states
    diff = [float((x[0, -1] - y[0, -1]).abs().max()) for x, y in zip(ha[1:], hb[1:])]
    assert diff[:3] == [0.0, 0.0, 0.0] and min(diff[3:]) > 1e-4, diff
