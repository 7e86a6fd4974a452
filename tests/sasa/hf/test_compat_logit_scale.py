"""``compat.final_logit_scale``: a config scale counts only where the model's own forward applies
it (Aya Vision's forward multiplies by ``text_config.logit_scale`` in transformers 5.25, not in
5.17; the conformance tests check the read-out against the model's logits on the installed one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sasa.hf import compat


class _Config:
    def __init__(self, **values):
        self.__dict__.update(values)

    def get_text_config(self, decoder=True):
        return self


class _Scaled(nn.Module):
    def __init__(self, **values):
        super().__init__()
        self.config = _Config(**values)

    def forward(self, logits):
        return logits * self.config.logit_scale / self.config.logits_scaling


class _Unscaled(_Scaled):
    def forward(self, logits):  # the config has the scales; this forward ignores them
        return logits


def test_a_scale_counts_only_where_the_forward_applies_it():
    assert compat.final_logit_scale(_Scaled(logit_scale=0.5, logits_scaling=4.0)) == pytest.approx(0.125)
    assert compat.final_logit_scale(_Unscaled(logit_scale=0.5, logits_scaling=4.0)) is None
    assert compat.final_logit_scale(_Scaled()) is None  # nothing in the config: nothing to apply
    logits = torch.ones(2)
    assert torch.equal(compat.final_logits(_Unscaled(logit_scale=0.5), logits), logits)


def test_without_the_forward_source_a_configured_scale_is_refused():
    cls = type("Sourceless", (_Scaled,), {"forward": eval("lambda self, logits: logits")})
    with pytest.raises(ValueError, match="logit_scale"):
        compat.final_logit_scale(cls(logit_scale=0.5))
    assert compat.final_logit_scale(cls()) is None  # no scale in the config: no question to ask
