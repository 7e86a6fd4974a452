"""SASAConfig: validation and JSON round trip."""

import pytest

from sasa import SASAConfig


def test_defaults_and_round_trip():
    cfg = SASAConfig(13, 15)
    assert (cfg.mode, cfg.scope, cfg.feature, cfg.threshold, cfg.fail_closed) == ("replace", "last", "logits", 0.5, True)
    other = SASAConfig(1, 3, mode="interpolate", coef=0.25, eps=1e-5, scope="last", feature="hidden",
                       threshold=0.7, refusal_text="No.", fail_closed=False)
    for c in (cfg, other):
        assert SASAConfig.from_json(c.to_json()) == c
    assert other.replace(threshold=0.1).threshold == 0.1


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(safety_layer=3, fused_layer=3), ValueError, "smaller than fused_layer"),
        (dict(safety_layer=4, fused_layer=2), ValueError, "smaller than fused_layer"),
        (dict(safety_layer=-1, fused_layer=2), ValueError, "safety_layer"),
        (dict(safety_layer=0, fused_layer=-2), ValueError, "fused_layer"),
        (dict(safety_layer=1.0, fused_layer=2), TypeError, "safety_layer"),
        (dict(safety_layer=True, fused_layer=2), TypeError, "safety_layer"),
        (dict(safety_layer=0, fused_layer=1, mode="add"), ValueError, "mode"),
        (dict(safety_layer=0, fused_layer=1, scope="first"), ValueError, "scope"),
        (dict(safety_layer=0, fused_layer=1, feature="probs"), ValueError, "feature"),
        (dict(safety_layer=0, fused_layer=1, eps=0.0), ValueError, "eps"),
        (dict(safety_layer=0, fused_layer=1, coef=float("nan")), TypeError, "coef"),
        (dict(safety_layer=0, fused_layer=1, threshold=1.5), ValueError, "threshold"),
        (dict(safety_layer=0, fused_layer=1, refusal_text=3), TypeError, "refusal_text"),
        (dict(safety_layer=0, fused_layer=1, fail_closed=1), TypeError, "fail_closed"),
    ],
)
def test_bad_values_raise_naming_the_field(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        SASAConfig(**kwargs)


def test_from_json_rejects_unknown_fields_and_bad_json():
    with pytest.raises(ValueError, match="unknown field"):
        SASAConfig.from_json('{"safety_layer": 1, "fused_layer": 2, "layer": 3}')
    with pytest.raises(ValueError, match="not valid JSON"):
        SASAConfig.from_json("{")
    with pytest.raises(ValueError, match="smaller than"):
        SASAConfig.from_json('{"safety_layer": 2, "fused_layer": 1}')
