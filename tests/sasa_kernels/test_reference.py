"""The reference itself: hand-computed values, the modes, and Hugging Face RMSNorm numerics."""

from __future__ import annotations

import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import reference


def test_projection_by_hand():
    hs = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    hf = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    out = reference.project(hs, hf, eps=1e-12)
    # Row 0: alpha = <[1,2],[2,0]> / 4 = 0.5 -> P = [1, 0]. Row 1: hf = 0 -> alpha = 0.
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize(
    "mode,coef,expected",
    [("replace", 5.0, (0.0, 1.0)), ("residual", 0.25, (1.0, 0.25)), ("interpolate", 0.25, (0.75, 0.25))],
)
def test_mode_coefficients(mode, coef, expected):
    assert reference.mode_coefficients(mode, coef) == expected
    hs, hf = torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    p = reference.project(hs, hf, mode="replace", eps=1e-6)
    a, b = expected
    torch.testing.assert_close(reference.project(hs, hf, mode=mode, coef=coef), a * hs + b * p)


def test_projection_residual_is_orthogonal_to_fused_state():
    hs, hf = torch.randn(8, 64, dtype=torch.float64), torch.randn(8, 64, dtype=torch.float64)
    p = reference.project(hs, hf, eps=1e-30)
    torch.testing.assert_close(((hs - p) * hf).sum(-1), torch.zeros(8, dtype=torch.float64), atol=1e-10, rtol=0)


def test_low_precision_accumulates_in_float32():
    hs = torch.full((1, 4096), 0.01, dtype=torch.bfloat16)
    out = reference.project(hs, hs)  # alpha = 1 exactly in exact arithmetic
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, hs)


def test_float64_stays_float64():
    hs = torch.randn(2, 5, dtype=torch.float64)
    assert reference.project(hs, hs).dtype == torch.float64
    assert reference.probe(hs, torch.randn(3, 5, dtype=torch.float64)).dtype == torch.float64
    assert reference.probe(hs.float(), torch.randn(3, 5)).dtype == torch.float32


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16), ids=str)
def test_rmsnorm_matches_hugging_face_llama_bit_for_bit(dtype):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    module = llama.LlamaRMSNorm(96, eps=1e-5).to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.randn(96))
    x = torch.randn(3, 7, 96).to(dtype)
    with torch.no_grad():
        expected = module(x)
    assert torch.equal(reference.rmsnorm(x, module.weight.detach(), eps=1e-5), expected)


def test_rmsnorm_weight_offset_matches_gemma_in_float32():
    gemma = pytest.importorskip("transformers.models.gemma.modeling_gemma")
    module = gemma.GemmaRMSNorm(64, eps=1e-6)
    with torch.no_grad():
        module.weight.copy_(torch.randn(64))
    x = torch.randn(5, 64)
    with torch.no_grad():
        expected = module(x)
    actual = reference.rmsnorm(x, module.weight.detach(), eps=1e-6, weight_offset=1.0)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_probe_gathers_last_prompt_token_of_padded_rows():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = reference.probe(hidden, weight, positions=torch.tensor([2, 0]), activation="none")
    torch.testing.assert_close(scores, torch.tensor([[4.0, 5.0], [6.0, 7.0]]))
    probs = sk.probe(hidden, weight, torch.tensor([0.0, -1.0]), positions=torch.tensor([2, 0]))
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[4.0, 4.0], [6.0, 6.0]])))
