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


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(eps=1e-300), r"eps: expected a finite value >= 1.1754944e-38"),  # zero in float32
        (dict(eps=1e39), "eps: expected a finite value >="),
        (dict(coef=1e300), "coef: expected a finite value within float32's range"),
    ],
)
def test_values_that_vanish_or_overflow_in_float32_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SASAConfig(0, 1, **kwargs)


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    import numpy as np

    cfg = SASAConfig(np.int64(1), np.int32(3), coef=np.float32(0.5), eps=np.float64(1e-6), threshold=np.float32(0.25))
    assert cfg == SASAConfig(1, 3, coef=0.5, eps=1e-6, threshold=0.25)
    assert type(cfg.coef) is float and type(cfg.safety_layer) is int
    assert SASAConfig.from_json(cfg.to_json()) == cfg
