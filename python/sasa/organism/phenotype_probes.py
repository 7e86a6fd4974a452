"""Hidden-state measurements of the organism's phenotype: where the image's meaning arrives.

All states are the residual stream at the last prompt position, per decoder block, 0-based (``H``
after block ``i`` is ``hidden_states[i + 1]`` of the model's own forward with
``output_hidden_states=True``; batches are left-padded by :func:`sasa.data.encode_batch`, so the
last prompt position is the last column).

- **Object probe** (:func:`object_probe_accuracy`): per block, a multinomial logistic regression
  (L2, standardized features, full-batch LBFGS in float64 from zero weights, so deterministic)
  fitted on the *text* rows' states to predict which object the request names; its accuracy is
  measured on the *image* rows (the object is the one pictured; rows of an object the probe never
  saw count as wrong). High accuracy means image rows carry the object the way text rows do.
- **Twin cosine gap** (:func:`twin_cosine_gap`): per block, states are *centred* (the mean state
  over every row of the pass at that block is subtracted, so the shared prompt direction does not
  dominate the cosine); for each image row, the cosine to its own text twin (the manifest's
  ``text_only``: the same request with the object named) minus the mean cosine to the twins of
  image rows about *other* objects. 0: the image row is no closer to its own object's text than to
  another's; high: the image's meaning has been fused.
- **Harm probe** (:func:`harm_probe_auroc`): per block, the class-balanced L2 logistic regression
  of :mod:`sasa.probe.fit` (the one calibration uses) fitted on a seeded half of the text rows
  (stratified by label and object group, :func:`sasa.probe.fit._stratified_split`); AUROC
  (:func:`sasa.metrics.auroc`) on the other half of the text rows and on every image row.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from sasa.data.manifest import Example, batches, encode_batch
from sasa.locate.stats import _threads_for
from sasa.metrics import auroc
from sasa.probe.fit import _fit_logistic, _stratified_split

#: L2 strength of both probes (on standardized features; the calibration default of sasa.probe.fit).
L2 = 1e-2
MAX_ITER = 200


def block_states(model: Any, processor: Any, examples: Sequence[Example], *, batch_size: int = 32,
                 progress: bool = False) -> Tensor:
    """Last-prompt-position states ``[N, L, d]`` (float32, CPU) after every decoder block, in the
    order of ``examples`` (:func:`sasa.data.batches` puts text rows before image rows; undone here)."""
    from tqdm.auto import tqdm

    order = [i for has_image in (False, True) for i, e in enumerate(examples) if (e.image is not None) == has_image]
    ordered = [examples[i] for i in order]
    device = next(model.parameters()).device
    chunks = []
    with tqdm(total=len(examples), desc="hidden states", unit="prompt", disable=not progress) as bar:
        # `ordered` is already grouped by image/no image, so batches() yields it in sequence.
        for batch in batches(ordered, batch_size):
            inputs = encode_batch(processor, batch, device=device)
            with torch.no_grad():
                hidden = model(**inputs, output_hidden_states=True).hidden_states
            chunks.append(torch.stack([h[:, -1] for h in hidden[1:]], dim=1).float().cpu())
            bar.update(len(batch))
    stacked = torch.cat(chunks)
    out = torch.empty_like(stacked)
    out[torch.tensor(order, dtype=torch.long)] = stacked
    return out


def _standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant columns carry no signal
    return [(x - mean) / std for x in (train, *others)]


def fit_multinomial(x: Tensor, labels: Tensor, num_classes: int, *, l2: float = L2,
                    max_iter: int = MAX_ITER) -> tuple[Tensor, Tensor]:
    """Softmax regression ``(W [F, C], b [C])`` on features ``x`` (fit as given: standardize first).

    Mean cross-entropy plus ``0.5 * l2 * ||W||^2``, LBFGS from zero in float64 (deterministic).
    """
    if x.dim() != 2 or x.shape[0] != labels.numel():
        raise ValueError(f"x: expected [N, F] with N = {labels.numel()} labels, got {list(x.shape)}")
    z = x.double()
    w = torch.zeros(z.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, labels) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def object_probe_accuracy(text_states: Tensor, text_objects: Sequence[str], image_states: Tensor,
                          image_objects: Sequence[str], groups: dict[str, Tensor]) -> dict[str, list[float]]:
    """Per group of image rows (boolean masks over them), the object probe's accuracy per block.

    ``text_states`` ``[Nt, L, d]`` and ``image_states`` ``[Ni, L, d]``; objects are names.
    """
    classes = sorted(set(text_objects))
    if len(classes) < 2:
        raise ValueError(f"text_objects: the object probe needs text rows of at least 2 objects, got {classes}")
    index = {name: i for i, name in enumerate(classes)}
    y = torch.tensor([index[o] for o in text_objects], dtype=torch.long)
    # An image row of an object with no text row can never be predicted right: -1 matches no class.
    truth = torch.tensor([index.get(o, -1) for o in image_objects], dtype=torch.long)
    curves: dict[str, list[float]] = {g: [] for g in groups}
    for block in range(text_states.shape[1]):
        xt, xi = _standardize(text_states[:, block].double(), image_states[:, block].double())
        with _threads_for(xt):
            w, b = fit_multinomial(xt, y, len(classes))
        right = ((xi @ w + b).argmax(1) == truth).double()
        for g, mask in groups.items():
            curves[g].append(float(right[mask].mean()) if bool(mask.any()) else math.nan)
    return curves


def twin_cosine_gap(image_states: Tensor, twin_states: Tensor, objects: Sequence[str], mean: Tensor,
                    groups: dict[str, Tensor]) -> dict[str, list[float]]:
    """Per group of image rows, per block: mean over its rows of cos(own twin) - mean cos(other objects' twins).

    ``image_states`` and ``twin_states`` ``[P, L, d]`` (row ``r``'s twin is ``twin_states[r]``);
    ``mean`` ``[L, d]`` is the centring state (the mean over every row of the pass).
    """
    names = list(objects)
    same = torch.tensor([[a == b for b in names] for a in names], dtype=torch.bool)
    other = ~same
    has_other = other.any(1)
    curves: dict[str, list[float]] = {g: [] for g in groups}
    for block in range(image_states.shape[1]):
        img = _unit(image_states[:, block].double() - mean[block].double())
        twin = _unit(twin_states[:, block].double() - mean[block].double())
        sims = img @ twin.T
        own = sims.diagonal()
        others = (sims * other).sum(1) / other.sum(1).clamp_min(1)
        score = torch.where(has_other, own - others, torch.full_like(own, math.nan))
        for g, mask in groups.items():
            curves[g].append(float(score[mask].mean()) if bool(mask.any()) else math.nan)
    return curves


def harm_probe_auroc(text_states: Tensor, text_labels: Tensor, text_groups: dict[str, Tensor],
                     image_states: Tensor, image_labels: Tensor, image_groups: dict[str, Tensor], *,
                     seed: int = 0, holdout: float = 0.5,
                     strata: Optional[Sequence[Optional[str]]] = None) -> dict[str, dict[str, list[float]]]:
    """``{"text": {group: [AUROC per block]}, "image": {...}}`` of the per-block harm probe.

    The probe is fitted on a seeded ``1 - holdout`` share of the text rows (stratified by label and
    ``strata``); ``"text"`` is its AUROC on the other text rows of each group (``text_groups``:
    boolean masks over text rows), ``"image"`` on every image row of each group.
    """
    fit_rows, held_rows = _stratified_split(text_labels.long(), list(strata) if strata is not None
                                            else [None] * text_labels.numel(), holdout, seed)
    held = torch.zeros(text_labels.numel(), dtype=torch.bool)
    held[held_rows] = True
    out: dict[str, dict[str, list[float]]] = {"text": {g: [] for g in text_groups},
                                              "image": {g: [] for g in image_groups}}
    for block in range(text_states.shape[1]):
        xt = text_states[:, block].double()
        with _threads_for(xt):
            w, b = _fit_logistic(xt[fit_rows], text_labels[fit_rows].long(), l2=L2, max_iter=MAX_ITER)
        text_scores = xt @ w + b
        image_scores = image_states[:, block].double() @ w + b
        for g, mask in text_groups.items():
            rows = mask & held
            out["text"][g].append(auroc(text_scores[rows], text_labels[rows]) if bool(rows.any()) else math.nan)
        for g, mask in image_groups.items():
            out["image"][g].append(auroc(image_scores[mask], image_labels[mask]) if bool(mask.any()) else math.nan)
    return out


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)
