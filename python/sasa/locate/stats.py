"""The per-layer measures and the grid fits of ``sasa locate`` (docs/method.md section 6), on collected states.

- :func:`cross_validated_auroc`: k-fold (stratified, seeded) AUROC of a linear probe, each fold's
  probe fitted by :meth:`sasa.SASAProbe.fit` exactly as ``calibrate`` fits one (which itself keeps
  ``holdout`` of the fold's training rows for its threshold; the threshold plays no part here);
- :func:`cosine_gap`: mean cosine(benign, benign) over distinct pairs minus mean
  cosine(benign, harmful) (the "safety layers" measure of Li et al. 2024);
- :func:`fusion_similarity`: mean cosine between an image request's state and its text twin's;
- :func:`refusal_rate`: logit lens (final norm, output head) top-k hit rate of refusal tokens;
- :func:`fit_pair`: the held-out AUROC of a SASA probe on one pair's features, fitted as
  ``calibrate`` fits it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from sasa.metrics import auroc
from sasa.probe.sasa_probe import SASAProbe

_SMALL_FIT = 1 << 20  # feature-matrix elements below which one thread fits faster


@contextlib.contextmanager
def _threads_for(x: Tensor) -> Iterator[None]:
    """One intra-op thread for a small fit (LBFGS on a small matrix is dominated by per-op overhead,
    which extra threads multiply on a busy machine: ~15x slower measured on 2 shared cores); the
    setting is restored afterwards."""
    previous = torch.get_num_threads()
    if x.numel() < _SMALL_FIT and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stratified_folds(labels: Tensor, k: int, seed: int) -> list[Tensor]:
    """``k`` disjoint test-index sets covering every row, each class dealt round-robin after a seeded
    shuffle (so every fold holds ``floor`` or ``ceil`` of ``n_class / k`` rows of each class)."""
    g = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for cls in (0, 1):
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        for j, i in enumerate(idx.tolist()):
            folds[(j + offset) % k].append(i)
        offset += idx.numel()  # start the next class where this one stopped: fold sizes stay even
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def cross_validated_auroc(x: Tensor, y: Tensor, folds: Sequence[Tensor], *, seed: int, holdout: float,
                          l2: float = 1e-2) -> float:
    """Mean over folds of the AUROC on the fold's rows of a probe fitted on the other rows."""
    scores = []
    everything = torch.arange(x.shape[0])
    for test in folds:
        train = everything[~torch.isin(everything, test)]
        with warnings.catch_warnings(), _threads_for(x):
            warnings.simplefilter("ignore")  # threshold warnings: the thresholds are not used here
            probe = SASAProbe.fit(x[train], y[train], holdout=holdout, seed=seed, l2=l2, feature="hidden")
        p = probe.predict_proba(x[test])[:, 0]
        scores.append(auroc(p.double(), y[test]))
    return float(sum(scores) / len(scores))


def _unit(x: Tensor) -> Tensor:
    x = x.double()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def cosine_gap(x: Tensor, y: Tensor) -> float:
    """Mean cosine over distinct benign pairs minus mean cosine over benign-harmful pairs."""
    benign, harmful = _unit(x[y == 0]), _unit(x[y == 1])
    nb = benign.shape[0]
    bb = benign @ benign.T
    same = (bb.sum() - bb.diagonal().sum()) / (nb * (nb - 1))
    cross = (benign @ harmful.T).mean()
    return float(same - cross)


def fusion_similarity(image_states: Tensor, text_states: Tensor) -> list[float]:
    """Per layer, the mean cosine between rows of ``[P, L, d]`` image-request and text-twin states."""
    return (_unit(image_states) * _unit(text_states)).sum(-1).mean(0).tolist()


def refusal_rate(states: Tensor, norm: nn.Module, head: nn.Module, softcap: Optional[float],
                 token_ids: Sequence[int], top_k: int, *, device: torch.device, dtype: torch.dtype,
                 chunk: int = 64) -> list[float]:
    """Per layer, the share of rows (``[R, L, d]`` states) whose logit-lens top-k holds a refusal token."""
    ids = torch.tensor(list(token_ids), dtype=torch.long, device=device)
    rows, layers = states.shape[0], states.shape[1]
    hits = torch.zeros(layers, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, rows, chunk):
            h = states[start:start + chunk].to(device=device, dtype=dtype)  # [r, L, d]
            logits = head(norm(h)).float()
            if softcap is not None:  # monotone: the ranking is unchanged, applied for the record
                logits = torch.tanh(logits / softcap) * softcap
            top = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices  # [r, L, k]
            hit = torch.isin(top, ids).any(-1)  # [r, L]
            hits += hit.double().sum(0).cpu()
    return (hits / rows).tolist()


def fit_pair(features: Tensor, y: Tensor, *, target_fpr: float, holdout: float, seed: int,
             feature: str) -> tuple[float, float]:
    """``(held-out AUROC, held-out mean score gap harmful - benign)`` of the ``any`` probe."""
    with warnings.catch_warnings(), _threads_for(features):
        warnings.simplefilter("ignore")  # a saturated threshold does not change the AUROC
        probe = SASAProbe.fit(features, y, target_fpr=target_fpr, holdout=holdout, seed=seed, feature=feature)
    held = probe.holdout_rows
    p = probe.predict_proba(features[held])[:, 0].double()
    yh = y[held]
    gap = float(p[yh == 1].mean() - p[yh == 0].mean())
    return float(probe.metrics[probe.categories[0]].auroc), gap


def pair_features(z: Tensor, feature: str, norm_free_head: Callable[[Tensor], Tensor], chunk: int = 256) -> Tensor:
    """The probe's features from final-normed states ``z`` ``[N, d]``: ``z`` or the head's logits."""
    if feature == "hidden":
        return z.float()
    with torch.no_grad():
        return torch.cat([norm_free_head(z[i:i + chunk]).float().cpu() for i in range(0, z.shape[0], chunk)])
