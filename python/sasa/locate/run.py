"""``locate(model, processor, data, ...)``: the per-layer analysis, the grid, the recommendation."""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from sasa._types import PathLike
from sasa.config import FEATURES, MODES, SASAConfig
from sasa.data.manifest import Example
from sasa.data.readers import read_sources
from sasa.hf import compat
from sasa.hf.families import family_of
from sasa.locate import stats as S
from sasa.locate.passes import Pair, Passes
from sasa.locate.result import GridCell, LayerStats, LocateResult
from sasa.probe.fingerprint import model_fingerprint
from sasa.refusal import RefusalMatcher, as_matcher, refusal_token_ids

Range = tuple[int, int]


def middle_half(num_layers: int) -> Range:
    """The default grid range: blocks ``L//4 .. L-1-L//4`` (inclusive), the middle half of the stack."""
    return num_layers // 4, num_layers - 1 - num_layers // 4


def grid_pairs(num_layers: int, safety_range: Optional[Range], fused_range: Optional[Range]) -> list[Pair]:
    """Every ``(s, f)`` with ``s`` in ``safety_range``, ``f`` in ``fused_range`` (inclusive), ``s < f``."""
    ranges = {}
    for name, value in (("safety_range", safety_range), ("fused_range", fused_range)):
        lo, hi = middle_half(num_layers) if value is None else value
        if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
            raise ValueError(f"{name}: expected (first, last) block indices with first <= last, got {value!r}")
        if lo < 0 or hi > num_layers - 1:
            raise ValueError(f"{name}: {lo}:{hi} is outside this model's decoder blocks "
                             f"(0-based 0..{num_layers - 1})")
        ranges[name] = (lo, hi)
    (s_lo, s_hi), (f_lo, f_hi) = ranges["safety_range"], ranges["fused_range"]
    pairs = [(s, f) for s in range(s_lo, s_hi + 1) for f in range(f_lo, f_hi + 1) if s < f]
    if not pairs:
        raise ValueError(f"safety_range {s_lo}:{s_hi} and fused_range {f_lo}:{f_hi} give no pair with "
                         "safety_layer < fused_layer")
    return pairs


def check_examples(examples: Sequence[Example], processor: Any, folds: int) -> None:
    """The manifest problems ``locate`` refuses, each as one ``ValueError`` line."""
    harmful = sum(1 for e in examples if e.label == 1)
    benign = sum(1 for e in examples if e.label == 0)
    if harmful + benign != len(examples):
        raise ValueError("data: every row needs a label (0 benign, 1 harmful) for sasa locate")
    if harmful == 0 or benign == 0:
        only = "harmful (label 1)" if benign == 0 else "benign (label 0)"
        raise ValueError(f"data: every row is {only}; sasa locate compares harmful with benign rows")
    if min(harmful, benign) < max(folds, 2):
        raise ValueError(f"data: {folds}-fold cross-validation needs at least {max(folds, 2)} rows of each class; "
                         f"got {harmful} harmful and {benign} benign")
    for e in examples:
        if e.text_only is not None and e.image is None:
            raise ValueError(f"data: line {e.line} has 'text_only' but no 'image' (text_only is the text twin "
                             "of an image request)")
    with_image = next((e for e in examples if e.image is not None), None)
    if with_image is not None and not hasattr(processor, "image_processor"):
        raise ValueError(f"data: line {with_image.line} has an image, but the processor has no image processor "
                         "(a text-only model?)")


def locate(
    model: nn.Module,
    processor: Any,
    data: Union[PathLike, Sequence[Example], Sequence[tuple[PathLike, str]]],
    *,
    format: str = "jsonl",
    safety_range: Optional[Range] = None,
    fused_range: Optional[Range] = None,
    feature: str = "logits",
    mode: str = "replace",
    coef: float = 1.0,
    folds: int = 5,
    top_k: int = 10,
    refusal: Union[None, RefusalMatcher, Sequence[str]] = None,
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
    batch_size: int = 8,
    raw_prompt: bool = False,
    progress: bool = True,
    out_dir: Optional[PathLike] = None,
) -> LocateResult:
    """Measure every decoder block and a grid of SASA pairs on a labelled dataset; recommend a pair.

    Layer numbers are 0-based decoder-block indices (``H`` after block ``i``). Per block, at each
    row's last prompt token: ``probe_auroc`` (``folds``-fold stratified, seeded cross-validated
    AUROC of a linear probe), ``cosine_gap``, ``fusion_similarity`` (rows with ``image`` and
    ``text_only``; ``None`` without) and ``refusal_rate`` (harmful rows whose logit-lens top
    ``top_k`` holds a refusal token of ``refusal``'s phrases). Per grid pair: the held-out AUROC of
    a SASA probe with ``scope="last"`` and ``feature``, fitted as :func:`sasa.calibrate` fits it
    (``holdout``, ``seed``, ``target_fpr``; one ``any`` probe). The recommendation is the pair with
    the highest AUROC (ties: the wider held-out score gap, then the later safety block, which
    re-runs fewer blocks, then the earlier fused block).

    Args:
        model, processor: a supported Hugging Face model and its tokenizer or processor.
        data: a dataset path read with :func:`sasa.data.readers.read_dataset` in ``format``, a list of
            ``(path, format)`` pairs (concatenated), or :class:`sasa.data.Example` rows.
        safety_range, fused_range: inclusive ``(first, last)`` blocks of the grid (default: the
            middle half of the stack, :func:`middle_half`).
        feature, mode, coef: the SASA probe's features and projection (as in :class:`sasa.SASAConfig`).
        folds, top_k: cross-validation folds of ``probe_auroc``; logit-lens depth of ``refusal_rate``.
        refusal: a :class:`sasa.refusal.RefusalMatcher`, a list of phrases, or ``None`` (the default list).
        target_fpr, holdout, seed: the grid fits' :meth:`sasa.SASAProbe.fit` settings (seed also folds).
        batch_size, raw_prompt, progress: batching, skipping the chat template, tqdm bars.
        out_dir: if given, ``locate.json``, ``layers.png`` and ``grid.png`` are written there.

    Raises:
        ValueError: one-class data, too few rows for the folds, ``text_only`` without an image,
            images for a text-only processor, a range outside the model, bad settings.
    """
    started = time.perf_counter()
    examples = [e for _, e in read_sources(data, format)[0]]
    _check_settings(feature, mode, folds, top_k, holdout)
    check_examples(examples, processor, folds)
    family = family_of(getattr(model.config, "model_type", None))
    if compat.attn_implementation(model) not in ("eager", "sdpa"):
        raise ValueError(f"model: sasa locate runs scope='last', which supports the eager and sdpa attention "
                         f"implementations; this model uses {compat.attn_implementation(model)!r}")
    decoder = compat.find_decoder(model)
    if decoder is None or len(decoder.layers) < 2:
        raise ValueError("model: sasa locate needs a decoder with at least 2 blocks")
    num_layers = len(decoder.layers)
    pairs = grid_pairs(num_layers, safety_range, fused_range)
    # Validates mode, coef and feature as calibrate would; eps is SASAConfig's default.
    base = SASAConfig(safety_layer=pairs[0][0], fused_layer=pairs[0][1], mode=mode, coef=coef, scope="last",
                      feature=feature)
    head = compat.find_output_head(model)
    if head is None:
        raise ValueError("model: no output head (lm_head) found; the logit lens and feature='logits' need one")
    refusal = as_matcher(refusal)
    token_ids = refusal_token_ids(processor, refusal.phrases)

    passes = Passes(model, family, pairs, mode=base.mode, coef=base.coef, eps=base.eps)
    got = passes.run(processor, examples, batch_size=batch_size, raw_prompt=raw_prompt, progress=progress)
    y = torch.tensor([e.label for e in got.examples])
    bar = tqdm(total=num_layers + len(pairs), desc="sasa locate: probes", unit="layer/pair", disable=not progress)
    layers, fits = _layer_stats(got, y, passes, head, model, token_ids, folds, top_k, seed, holdout, bar)

    device, dtype = passes.device, passes.dtype

    def logits(z: torch.Tensor) -> torch.Tensor:
        return compat.final_logits(model, head(z.to(device)))

    grid = []
    for s, f in pairs:
        x = S.pair_features(got.grid_z[(s, f)], feature, logits)
        auroc, gap = S.fit_pair(x, y, target_fpr=target_fpr, holdout=holdout, seed=seed, feature=feature)
        grid.append(GridCell(s, f, auroc, gap))
        fits += 1
        bar.update(1)
    bar.close()
    finite = [c for c in grid if c.auroc == c.auroc]  # NaN != NaN
    if not finite:
        raise RuntimeError("sasa locate: no grid pair has a finite held-out AUROC")
    best = max(finite, key=lambda c: (round(c.auroc, 9), round(c.score_gap, 9), c.safety_layer, -c.fused_layer))
    notes = []
    if not token_ids:
        notes.append("no refusal token found in this vocabulary; refusal_rate is null")
    if got.twin_states is None:
        notes.append("no rows with both 'image' and 'text_only'; fusion_similarity is null")
    result = LocateResult(
        layers=layers, grid=grid, recommended=(best.safety_layer, best.fused_layer),
        model_fingerprint=model_fingerprint(model),
        counts={"rows": len(examples), "harmful": int(y.sum()), "benign": int((y == 0).sum()),
                "image_rows": sum(1 for e in examples if e.image is not None), "twin_pairs": len(got.twin_rows)},
        settings={"feature": feature, "mode": mode, "coef": coef, "scope": "last", "folds": folds, "top_k": top_k,
                  "holdout": holdout, "target_fpr": target_fpr, "seed": seed, "batch_size": batch_size,
                  "raw_prompt": raw_prompt, "prompt_format": "raw" if raw_prompt else "template",
                  "safety_range": [min(s for s, _ in pairs), max(s for s, _ in pairs)],
                  "fused_range": [min(f for _, f in pairs), max(f for _, f in pairs)],
                  "refusal_phrases": refusal.source, "refusal_tokens": len(token_ids), "dtype": str(dtype),
                  "device": str(device)},
        cost={"normal_passes": got.normal_passes, "augmented_passes": got.augmented_passes,
              "augmented_block_calls": got.augmented_block_calls, "probe_fits": fits,
              "wall_s": time.perf_counter() - started},
        notes=notes,
    )
    if out_dir is not None:
        result.save(out_dir)
    return result


def _layer_stats(got: Any, y: torch.Tensor, passes: Passes, head: nn.Module, model: nn.Module,
                 token_ids: list[int], folds: int, top_k: int, seed: int, holdout: float,
                 bar: Any) -> tuple[list[LayerStats], int]:
    num_layers = got.states.shape[1]
    fold_sets = S.stratified_folds(y, folds, seed)
    fusion: list[Optional[float]] = [None] * num_layers
    if got.twin_states is not None:
        fusion = S.fusion_similarity(got.states[got.twin_rows], got.twin_states)
    refusal: list[Optional[float]] = [None] * num_layers
    if token_ids:
        refusal = S.refusal_rate(got.states[y == 1], passes.norm, head, compat.final_logit_softcap(model), token_ids,
                                 top_k, device=passes.device, dtype=passes.dtype)
    layers = []
    for i in range(num_layers):
        x = got.states[:, i]
        if not torch.isfinite(x).all():
            raise ValueError(f"model: block {i} produced NaN or infinite states (try --dtype float32)")
        layers.append(LayerStats(i, S.cross_validated_auroc(x, y, fold_sets, seed=seed, holdout=holdout),
                                 S.cosine_gap(x, y), fusion[i], refusal[i]))
        bar.update(1)
    return layers, num_layers * folds


def _check_settings(feature: str, mode: str, folds: int, top_k: int, holdout: float) -> None:
    if feature not in FEATURES:
        raise ValueError(f"feature: expected one of {list(FEATURES)}, got {feature!r}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an int >= 2, got {folds!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout: expected a fraction in (0, 1), got {holdout!r}")
