"""Inputs that would otherwise fail far from their cause, or be scored wrong: refused, named."""

from __future__ import annotations

import pytest
import torch

from sasa import SASAConfig, apply_sasa
from sasa.data.manifest import ManifestError, read_manifest
from tests.sasa import _tiny


def test_out_of_vocabulary_ids_are_refused_before_any_compute():
    t = _tiny.llama()
    with apply_sasa(t.model, SASAConfig(1, 2)) as guard:
        ids = t.left["input_ids"].clone()
        ids[0, -1] = _tiny.VOCAB + 5
        with pytest.raises(ValueError, match=rf"input_ids: token id {_tiny.VOCAB + 5} is outside the model's vocabulary"):
            guard.features(input_ids=ids, attention_mask=t.left["attention_mask"])
        ids[0, -1] = -1
        with pytest.raises(ValueError, match="token id -1 is outside"):
            guard.features(input_ids=ids, attention_mask=t.left["attention_mask"])


def test_inputs_embeds_of_another_dtype_are_refused():
    t = _tiny.llama()
    embeds = t.model.get_input_embeddings()(t.left["input_ids"]).detach()
    with apply_sasa(t.model, SASAConfig(1, 2, scope="all")) as guard:
        with pytest.raises(TypeError, match=r"inputs_embeds: expected dtype torch.float32 .* got torch.float64"):
            guard.features(inputs_embeds=embeds.double(), attention_mask=t.left["attention_mask"])
        want = guard.features(**t.left)
        got = guard.features(inputs_embeds=embeds, attention_mask=t.left["attention_mask"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_lone_surrogate_in_a_manifest_names_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"prompt": "fine", "label": 0}\n{"prompt": "bad \\ud800 text", "label": 1}\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: 'prompt' contains a lone surrogate"):
        read_manifest(path)


def test_invalid_utf8_in_a_manifest_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "ok", "label": 0}\n{"prompt": "caf\u00e9", "label": 0}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1.jsonl:2: not valid UTF-8"):
        read_manifest(path)


def test_sasa_without_transformers_names_the_extra(tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "transformers.py").write_text("raise ModuleNotFoundError('blocked', name='transformers')\n")
    import os

    env = dict(os.environ, PYTHONPATH=f"{blocker}:{os.environ.get('PYTHONPATH', '')}")
    result = subprocess.run([sys.executable, "-m", "sasa.cli", "demo"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2 and "pip install 'sasa-kernels[hf]'" in result.stderr
    assert "Traceback" not in result.stderr
    api = subprocess.run([sys.executable, "-c", "import sasa; sasa.apply_sasa"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert api.returncode != 0 and "pip install 'sasa-kernels[hf]'" in api.stderr


def test_a_manifest_line_nested_too_deep_names_the_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"prompt": "bake bread", "label": 0}\n' + "[" * 200_000 + "\n")
    with pytest.raises(ManifestError, match=r"deep.jsonl:2: not valid JSON \(nested too deep\)"):
        read_manifest(path)
