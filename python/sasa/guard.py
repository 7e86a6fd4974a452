"""``apply_sasa`` and ``SASAGuard``: SASA inside a loaded Hugging Face model instance.

The guard never replaces a forward. It attaches itself to the instance (``model._sasa_guard``)
and, only for the duration of its own calls, hooks the decoder blocks to observe the model's own
normal pass (:mod:`sasa._capture`); the augmented pass then calls the same blocks again
(:mod:`sasa._augment`). Between calls the model is untouched, which is why :meth:`SASAGuard.remove`
restores it exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

import sasa_kernels as sk

from . import _compat as C
from ._augment import AugmentedPass, can_fuse_input_norm, gather_seq
from ._capture import Capture, NormalPass
from ._inputs import check_inputs, last_positions
from ._probe import ProbeTensors, fold_into_hidden, probe_tensors
from .config import SASAConfig
from .metrics import flag_rows
from .probe import SASAProbe
from .families import Family, family_of

logger = logging.getLogger("sasa")

_GUARD_ATTR = "_sasa_guard"


@dataclass
class SASAGenerateOutput:
    """What :meth:`SASAGuard.generate` returns.

    Attributes:
        sequences: ``[B, T + N]`` prompt and new tokens, like ``model.generate``. Flagged rows hold
            the tokenized refusal text after the prompt (padding when no tokenizer was given),
            then padding. If the refusal is longer than the generated part, every row is extended
            with padding; a passed row is otherwise exactly ``model.generate``'s row.
        flagged: bool ``[B]``.
        scores: ``[B]`` probabilities (``[B, C]`` for several probes); NaN where scoring failed.
        refusal_text: the text a flagged row answers.
        generate_output: what ``model.generate`` itself returned (for its extra fields).
    """

    sequences: Tensor
    flagged: Tensor
    scores: Tensor
    refusal_text: str
    generate_output: Any = None


class SASAGuard:
    """SASA on one model instance. Made by :func:`apply_sasa`; see its docstring."""

    def __init__(
        self,
        model: nn.Module,
        config: SASAConfig,
        family: Family,
        decoder: nn.Module,
        probe: Optional[ProbeTensors],
        tokenizer: Any,
    ):
        self.model = model
        self.config = config
        self.family = family
        self._decoder = decoder
        self._layers: nn.ModuleList = decoder.layers
        self._norm: nn.Module = decoder.norm
        self._head = C.find_output_head(model)
        self._softcap = C.final_logit_softcap(model)
        self._device = _model_device(model)
        self._dtype = _model_dtype(model)
        self._pad_id = C.generation_pad_id(model)
        self._augment = AugmentedPass(
            self._layers,
            config.safety_layer,
            config.fused_layer,
            config.mode,
            config.coef,
            config.eps,
            family.norm_offset,
            family.llama_norm_numerics,
        )
        self._explicit_probe = probe
        # Fold the logits probe into hidden space only when the head is a plain linear map.
        self.folded = (
            probe is not None
            and config.feature == "logits"
            and isinstance(self._head, nn.Linear)
            and self._softcap is None
        )
        self._probe = fold_into_hidden(probe, self._head) if self.folded else probe
        self._kernel_final_norm = can_fuse_input_norm(
            _NormHolder(self._norm), family.llama_norm_numerics, self._dtype, _hidden_size(decoder)
        )
        self._refusal_ids = _tokenize_refusal(tokenizer, config.refusal_text)
        self._eos_id = C.generation_eos_id(model)
        self._active = True
        self._logits_to_keep = C.forward_accepts(model, "logits_to_keep")

    # ------------------------------------------------------------------ public API

    def features(self, **inputs: Any) -> Tensor:
        """SASA features at each row's last prompt token: float32 ``[B, F]``.

        ``F`` is the output-head width for ``feature="logits"`` (explicit logits, soft-capped where
        the model soft-caps) and the hidden size for ``"hidden"`` (the final-normed state).
        ``inputs`` are what the model's forward takes (a tokenizer's or processor's output).
        """
        self._check_active()
        last_pos, normal = self._normal_pass(inputs)
        with torch.no_grad():
            h = self._augment.run(normal, self.config.scope, last_pos)
            return self._features_from(h, last_pos).float()

    def score(self, **inputs: Any) -> Tensor:
        """Probe probabilities: float32 ``[B]``, or ``[B, C]`` for a probe with ``C > 1`` rows."""
        self._check_active()
        probe = self._require_probe()
        last_pos, normal = self._normal_pass(inputs)
        with torch.no_grad():
            probs = self._score_from(normal, last_pos, probe)
        return probs[:, 0] if probe.single else probs

    def generate(self, **kwargs: Any) -> SASAGenerateOutput:
        """Guarded ``model.generate``: one normal prefill scores every row (hooks on that very
        prefill); flagged rows answer the refusal text and stop; the others continue exactly as
        ``model.generate`` would (same call, same batch), so their tokens are bit-identical.

        Takes the model inputs and the ``generate`` keyword arguments together. Beam search and
        ``num_return_sequences > 1`` are not supported. Flagged rows stop after the prefill's
        token; in a mixed batch they stay in the batch (as finished rows) while the others decode.
        """
        self._check_active()
        probe = self._require_probe()
        batch, length = check_inputs(_tensor_inputs(kwargs), self._device, self._pad_id)
        self._check_generate_kwargs(kwargs)
        last_pos = last_positions(kwargs, batch, length, self._device)
        state = _PrefillState(batch, len(probe.bias), self._device)
        capture = self._capture()

        def after_prefill(module: nn.Module, args: Any, output: Any) -> None:
            if state.done:
                return
            state.done = True
            try:
                normal = capture.result
                if self.config.safety_layer not in normal.hidden or self.config.fused_layer not in normal.hidden:
                    raise RuntimeError("the prefill did not run the decoder blocks")
                state.probs = self._score_from(normal, last_pos, probe)
            except Exception:  # noqa: BLE001 - a failed score must flag, never crash the batch
                logger.exception("sasa: scoring the prefill failed; treating the scores as NaN")
            finally:
                capture.disarm()
            state.flagged = self._decide(state.probs, probe)

        handle = self.model.register_forward_hook(after_prefill)
        criteria = C.StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
        criteria.append(_StopFlagged(state))
        try:
            capture.arm()
            with torch.no_grad():
                out = self.model.generate(**kwargs, stopping_criteria=criteria)
        finally:
            handle.remove()
            capture.disarm()
        if not state.done:
            # generate returned without a prefill: nothing was scored; fail closed.
            state.flagged = self._decide(state.probs, probe)
        sequences = out if isinstance(out, Tensor) else out.sequences
        prompt_width = length if "input_ids" in kwargs else 0
        sequences = self._write_refusals(sequences, state.flagged, prompt_width)
        scores = state.probs[:, 0] if probe.single else state.probs
        return SASAGenerateOutput(sequences, state.flagged, scores, self.config.refusal_text, out)

    def remove(self) -> None:
        """Detach the guard: the instance is as before :func:`apply_sasa` (idempotent)."""
        if self._active:
            self._active = False
            if self.model.__dict__.get(_GUARD_ATTR) is self:
                del self.model.__dict__[_GUARD_ATTR]

    @property
    def active(self) -> bool:
        """False once :meth:`remove` was called."""
        return self._active

    @property
    def num_layers(self) -> int:
        """The model's decoder-block count ``L`` (valid layer indices are ``0..L-1``)."""
        return len(self._layers)

    @property
    def feature_size(self) -> int:
        """``F``: the width of :meth:`features` (output-head width or hidden size)."""
        if self.config.feature == "logits":
            return int(self._head.weight.shape[0])
        return _hidden_size(self._decoder)

    # ------------------------------------------------------------------ internals

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("this SASAGuard was removed; call apply_sasa again")

    def _require_probe(self) -> ProbeTensors:
        if self._probe is None:
            raise ValueError("probe: this guard has no probe; pass probe=(weight, bias) to apply_sasa")
        return self._probe

    def _check_generate_kwargs(self, kwargs: dict[str, Any]) -> None:
        gen = getattr(self.model, "generation_config", None)
        for name in ("num_beams", "num_return_sequences"):
            value = kwargs.get(name, getattr(gen, name, 1) if gen is not None else 1)
            if value not in (None, 1):
                raise ValueError(f"{name}: sasa's guarded generate supports 1 only, got {value}")
        for name in ("past_key_values", "cache"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name}: guarded generate runs its own prefill; do not pass a cache")
        if self.config.scope == "last" and kwargs.get("use_cache") is False:
            raise ValueError("use_cache: scope='last' reads the prefill's keys and values; use_cache=False leaves none")

    def _capture(self) -> Capture:
        s, f = self.config.safety_layer, self.config.fused_layer
        return Capture(self._layers, keep=(s, f), kwargs_from=s + 1, record_kv=self.config.scope == "last")

    def _normal_pass(self, inputs: dict[str, Any]) -> tuple[Tensor, NormalPass]:
        """Run the model's own forward once, observed; return (last positions, what it left)."""
        batch, length = check_inputs(_tensor_inputs(inputs), self._device, self._pad_id)
        for name in ("past_key_values", "cache", "use_cache", "output_hidden_states", "labels"):
            if name in inputs:
                raise ValueError(f"{name}: not accepted here; sasa runs the normal pass itself")
        last_pos = last_positions(inputs, batch, length, self._device)
        kwargs = dict(inputs)
        kwargs["use_cache"] = self.config.scope == "last"
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # the normal pass's own logits are not needed
        with torch.no_grad(), self._capture() as capture:
            self.model(**kwargs)
            normal = capture.result
        return last_pos, normal

    def _final_hidden(self, h: Tensor, last_pos: Tensor) -> Tensor:
        """``[B, 1, d]`` pre-norm state at each row's last prompt token."""
        return gather_seq(h, last_pos, -2) if self.config.scope == "all" else h

    def _features_from(self, h: Tensor, last_pos: Tensor) -> Tensor:
        z = self._norm(self._final_hidden(h, last_pos))
        if self.config.feature == "hidden":
            return z[:, 0]
        return self._logits(z)[:, 0]

    def _logits(self, z: Tensor) -> Tensor:
        logits = self._head(z)
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _score_from(self, normal: NormalPass, last_pos: Tensor, probe: ProbeTensors) -> Tensor:
        """``[B, C]`` probabilities with one ``sasa_kernels.probe`` call."""
        h = self._augment.run(normal, self.config.scope, last_pos)
        hidden_space = self.config.feature == "hidden" or self.folded
        if hidden_space and self._kernel_final_norm:
            # Final norm, gather of the last position, matmul, bias and sigmoid in one launch.
            positions = last_pos if self.config.scope == "all" else None
            rows = h if positions is not None else h[:, 0]
            return sk.probe(
                rows.contiguous(),
                probe.weight,
                probe.bias,
                positions=positions,
                norm_weight=self._norm.weight.detach(),
                norm_eps=C.rmsnorm_eps(self._norm),
                weight_offset=self.family.norm_offset,
            )
        z = self._norm(self._final_hidden(h, last_pos))[:, 0]
        rows = z if hidden_space else self._logits(z)
        return sk.probe(rows.contiguous(), probe.weight, probe.bias)

    def _decide(self, probs: Tensor, probe: ProbeTensors) -> Tensor:
        threshold = probe.threshold if probe.threshold is not None else torch.tensor(self.config.threshold)
        flagged = flag_rows(probs, threshold, fail_closed=self.config.fail_closed)
        nan = torch.isnan(probs).any(dim=1)
        if bool(nan.any()):
            rows = nan.nonzero().flatten().tolist()
            outcome = "flagged (fail_closed=True)" if self.config.fail_closed else "passed (fail_closed=False)"
            logger.warning("sasa: NaN score for row(s) %s; %s", rows, outcome)
        return flagged

    def _write_refusals(self, sequences: Tensor, flagged: Tensor, prompt_width: int) -> Tensor:
        if not bool(flagged.any()):
            return sequences
        pad = self._pad_id if self._pad_id is not None else (self._eos_id if self._eos_id is not None else 0)
        refusal = list(self._refusal_ids)
        width = max(sequences.shape[1], prompt_width + len(refusal))
        out = torch.full((sequences.shape[0], width), pad, dtype=sequences.dtype, device=sequences.device)
        out[:, : sequences.shape[1]] = sequences
        rows = flagged.nonzero().flatten().to(sequences.device)
        out[rows, prompt_width:] = pad
        if refusal:
            ids = torch.tensor(refusal, dtype=sequences.dtype, device=sequences.device)
            out[rows, prompt_width : prompt_width + len(refusal)] = ids
        return out


class _PrefillState:
    def __init__(self, batch: int, num_probes: int, device: torch.device):
        self.done = False
        self.probs = torch.full((batch, num_probes), float("nan"), device=device)
        self.flagged: Optional[Tensor] = None


class _StopFlagged(C.StoppingCriteria):
    """Marks flagged rows finished right after the prefill's token, so they spend no more steps
    of their own and ``generate`` ends as soon as every passed row is done."""

    def __init__(self, state: _PrefillState):
        self.state = state

    def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        flagged = self.state.flagged
        if flagged is None:  # the prefill hook never ran: fail closed
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return flagged.to(input_ids.device)


class _NormHolder(nn.Module):
    # can_fuse_input_norm looks for ``.input_layernorm``; the final norm is checked the same way.
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.input_layernorm = norm


def _tensor_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if isinstance(v, Tensor) or k in ("input_ids", "inputs_embeds", "attention_mask")}


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def _hidden_size(decoder: nn.Module) -> int:
    weight = getattr(decoder.norm, "weight", None)
    if isinstance(weight, Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    return int(getattr(C.text_config(decoder), "hidden_size", -1))


def _tokenize_refusal(tokenizer: Any, text: str) -> list[int]:
    if tokenizer is None:
        return []
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    if not callable(tok):
        raise TypeError(f"tokenizer: expected a tokenizer or processor, got {type(tokenizer).__name__}")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    ids = [int(i) for i in ids]
    eos = getattr(tok, "eos_token_id", None)
    if isinstance(eos, int):
        ids.append(eos)  # a refusal ends the answer, as a generated one would
    return ids


def apply_sasa(
    model: nn.Module,
    config: Optional[SASAConfig] = None,
    probe: Any = None,
    tokenizer: Any = None,
) -> SASAGuard:
    """Attach SASA to this model *instance* and return its :class:`SASAGuard`.

    No class is changed and no forward is replaced: other instances are unaffected, and
    :meth:`SASAGuard.remove` restores this one exactly. Patching an instance twice raises unless
    the first guard was removed.

    Args:
        model: a loaded causal LM or vision-language model of a supported ``model_type``
            (:data:`sasa.SUPPORTED_MODEL_TYPES`).
        config: the :class:`SASAConfig`. Its layer numbers are 0-based decoder-block indices
            (``H`` after block ``i``), checked here against the model's block count. When
            ``None``, ``probe.config`` is used if the probe object has one.
        probe: ``None`` (then only :meth:`SASAGuard.features` works), a probe directory written by
            :meth:`sasa.SASAProbe.save` (its fingerprint is checked against ``model``; its config is
            used when ``config`` is ``None``), a ``(weight [C, F], bias [C])``
            pair in feature space (``F`` = output-head width for ``feature="logits"``, hidden size
            for ``"hidden"``), or an object with ``weight``/``bias`` (and optional ``threshold``,
            ``categories``).
        tokenizer: a tokenizer or processor, used to tokenize the refusal text.

    Raises:
        ValueError: unsupported ``model_type`` (the message lists the supported ones), a model
            without decoder blocks, a layer index out of range, a probe of the wrong width.
        RuntimeError: the instance already has an active guard.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
    if isinstance(probe, (str, os.PathLike)):
        # A directory written by SASAProbe.save: loading checks it was fitted for this model.
        probe = SASAProbe.load(probe, model=model)
    if config is None:
        config = getattr(probe, "config", None)
        if config is None:
            raise TypeError("config: expected a SASAConfig (or a probe object carrying one), got None")
    if not isinstance(config, SASAConfig):
        raise TypeError(f"config: expected a SASAConfig, got {type(config).__name__}")
    existing = model.__dict__.get(_GUARD_ATTR)
    if existing is not None and existing.active:
        raise RuntimeError("model: this instance already has an active SASA guard; call guard.remove() first")
    family = family_of(getattr(model.config, "model_type", None))
    decoder = C.find_decoder(model)
    if decoder is None or len(decoder.layers) == 0:
        raise ValueError(f"model: no decoder blocks found in this {type(model).__name__} (expected a non-empty .layers)")
    if not isinstance(getattr(decoder, "norm", None), nn.Module):
        raise ValueError(f"model: the decoder {type(decoder).__name__} has no final norm (.norm)")
    num_layers = len(decoder.layers)
    for name in ("safety_layer", "fused_layer"):
        value = getattr(config, name)
        if value >= num_layers:
            raise ValueError(
                f"{name}: {value} is out of range for this model, which has {num_layers} decoder blocks "
                f"(0-based indices 0..{num_layers - 1})"
            )
    device = _model_device(model)
    tensors = None
    if probe is not None:
        if config.feature == "logits":
            head = C.find_output_head(model)
            if head is None or not isinstance(getattr(head, "weight", None), Tensor):
                raise ValueError("model: feature='logits' needs an output head (lm_head); use feature='hidden'")
            size = int(head.weight.shape[0])
        else:
            size = _hidden_size(decoder)
        tensors = probe_tensors(probe, size, config.feature, device)
    if config.scope == "last" and C.attn_implementation(model) not in ("eager", "sdpa"):
        raise ValueError(
            f"config.scope: 'last' supports the eager and sdpa attention implementations, this model uses "
            f"{C.attn_implementation(model)!r}; use scope='all'"
        )
    guard = SASAGuard(model, config, family, decoder, tensors, tokenizer)
    model.__dict__[_GUARD_ATTR] = guard
    return guard
