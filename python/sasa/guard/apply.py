"""``apply_sasa`` and ``SASAGuard``: SASA inside a loaded Hugging Face model instance.

The guard never replaces a forward. It attaches itself to the instance and installs, for its
lifetime, hooks on the decoder blocks and the model (:mod:`sasa.guard.capture`, :mod:`sasa.guard.generate`)
that stay inert except inside the guard's own calls, a fused-norm slot on one norm
(:class:`sasa.guard.fused_norm.FusedNormSlot`), and a guarded ``generate`` on the instance, so that
``model.generate`` and everything built on it (``pipeline``, serving code) is guarded; a guarded
``init_continuous_batching`` (:mod:`sasa.guard.batching`: ``generate_batch`` and serving's continuous
batching); a check that refuses generation started around the instance, through its class
(:mod:`sasa.guard.entry_check`); and a refusal to be pickled (:mod:`sasa.guard.no_pickle`).
:meth:`SASAGuard.remove` undoes all of it exactly.

Thread safety: every public call may run concurrently with others on the same guard or model;
each call sees only its own forward (its recorder lives in a :mod:`contextvars` context). Do not
call :func:`apply_sasa` or :meth:`SASAGuard.remove` while other threads are inside the model.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from sasa.config import SASAConfig
from sasa.data.inputs import check_inputs, embedding_dtype, input_vocab_size, last_positions, tensor_inputs
from sasa.data.prompt_format import PromptFormat
from sasa.distributed.tensor_parallel import ScoreAgreement
from sasa.guard.augment import AugmentedPass
from sasa.guard.batching import BatchingPatch
from sasa.guard.capture import BlockHooks, GuardPart, NormalPass, Recorder, check_observed
from sasa.guard.compiled_pass import CompiledBlocks
from sasa.guard.entry_check import EntryCheck
from sasa.guard.generate import PrefillHook, SASAGenerateOutput, guarded_generate
from sasa.guard.generate_patch import GeneratePatch
from sasa.guard.no_pickle import NoPickle
from sasa.guard.readout import Readout
from sasa.guard.refusal_output import tokenize_refusal
from sasa.guard.resolve import Resolved, feature_size, model_device, resolve
from sasa.guard.ride import Ride
from sasa.hf import compat
from sasa.probe.tensors import ProbeTensors

_GUARD_ATTR = "_sasa_guard"
_NOT_ACCEPTED = ("past_key_values", "cache", "use_cache", "output_hidden_states", "labels")


class SASAGuard:
    """SASA on one model instance. Made by :func:`apply_sasa`; see its docstring.

    Usable as a context manager: ``with apply_sasa(model, probe=...) as guard: ...`` removes it on exit.
    """

    def __init__(self, model: nn.Module, resolved: Resolved, tokenizer: Any):
        config = resolved.config
        self.model = model
        self.config = config
        self.family = resolved.family
        self.prompt_format: Optional[PromptFormat] = resolved.prompt_format
        self._tokenizer = tokenizer
        self._layers: nn.ModuleList = resolved.decoder.layers
        self._feature_size = feature_size(model, resolved.decoder, config.feature)
        self._pad_id = compat.generation_pad_id(model)
        self._eos_id = compat.generation_eos_id(model)
        self._vocab_size = input_vocab_size(model)
        self._probe: Optional[ProbeTensors] = resolved.probe
        self._readout = Readout(model, resolved.decoder, resolved.family, config.feature, resolved.probe)
        self._refusal_ids = tokenize_refusal(tokenizer, config.refusal_text)
        self._logits_to_keep = compat.forward_accepts(model, "logits_to_keep")
        self._augment = AugmentedPass(
            self._layers, config.safety_layer, config.fused_layer, config.mode, config.coef, config.eps,
            resolved.family.norm_offset, resolved.family.llama_norm_numerics,
        )
        if config.compile_augmented:
            self._augment.compiled = CompiledBlocks()
        s, f = config.safety_layer, config.fused_layer
        # scope="last" rides along inside the normal forward (sasa.guard.ride); scope="all" and the
        # compiled pass (one graph for its blocks) run after it.
        self._ride = config.scope == "last" and not config.compile_augmented
        self._hooks = BlockHooks(self._layers, keep=(s, f), kwargs_from=s + 1, notify_from=f if self._ride else None,
                                 chain_from=s)
        self._prefill = PrefillHook(model)
        self._augment.install()
        # Generation that goes around the instance (through the class) is refused (sasa.guard.entry_check);
        # model.generate and model.init_continuous_batching are the guarded ways in.
        self._entry = EntryCheck(model)
        self._generate_patch = GeneratePatch(model, lambda kwargs: guarded_generate(self, kwargs))
        self._batching = BatchingPatch(self, self._entry)
        self._no_pickle = NoPickle(model)
        # Tensor parallel: one all-reduce per scored batch, so every rank decides on the same scores
        # (a no-op otherwise; see sasa.distributed.tensor_parallel).
        self._agree = ScoreAgreement.for_model(model)
        self._active = True

    # ------------------------------------------------------------------ public API

    def features(self, **inputs: Any) -> Tensor:
        """SASA features at each row's last prompt token: float32 ``[B, F]``.

        ``F`` is the output-head width for ``feature="logits"`` (explicit logits, soft-capped where
        the model soft-caps) and the hidden size for ``"hidden"`` (the final-normed state).
        ``inputs`` are what the model's forward takes (a tokenizer's or processor's output, e.g.
        :meth:`encode`'s); see :meth:`score` for the input contract.
        """
        self._check_active()
        last_pos, normal, _, ride = self._normal_pass(inputs)
        with torch.no_grad():
            return self._readout.features(self._augmented(normal, last_pos, ride))

    def score(self, **inputs: Any) -> Tensor:
        """Probe probabilities: float32 ``[B, C]``, one column per probe (:attr:`categories`).

        Input contract: ``input_ids`` (or ``inputs_embeds``) ``[B, T]`` with an ``attention_mask``
        when rows are padded (either side), on the model's device, formatted as the probe's
        calibration prompts were (:attr:`prompt_format`: with a chat-template probe every row must
        end with the template's generation prompt, else ``ValueError``; ``inputs_embeds`` cannot
        be checked). :meth:`encode` produces such inputs from text.
        """
        self._check_active()
        self._require_probe()
        last_pos, normal, _, ride = self._normal_pass(inputs)
        with torch.no_grad():
            return self._agree(self._score_from(normal, last_pos, ride))

    def generate(self, **kwargs: Any) -> SASAGenerateOutput:
        """Guarded generation, with the guard's outputs: see :class:`SASAGenerateOutput`.

        ``model.generate(...)`` is guarded the same way while the guard is applied (and returns
        what ``generate`` returns); this method adds ``flagged`` and ``scores``. One normal prefill
        scores every row; flagged rows answer the refusal text and stop; the others continue
        exactly as ``model.generate`` would (same call, same batch), so their tokens are
        bit-identical. Takes the model inputs (see :meth:`score` for the contract) and the
        ``generate`` keyword arguments. Greedy decoding and sampling with one sequence per prompt
        are supported; beam search, several return sequences, assisted or chunked-prefill
        decoding and a caller's cache are refused. A ``streamer`` (batch of one) receives nothing
        until the decision: then the refusal, or exactly the unguarded stream.
        """
        out, decision, sequences = guarded_generate(self, kwargs)
        return SASAGenerateOutput(sequences, decision.flagged, decision.probs, self.config.refusal_text, out)

    def encode(self, prompts: Union[str, Sequence[str]], images: Any = None) -> dict[str, Tensor]:
        """Model inputs for ``prompts`` (and one image per prompt, if given), formatted as the probe
        expects (its :attr:`prompt_format`; without one, the tokenizer's chat template), left-padded,
        on the model's device. Needs the ``tokenizer`` given to :func:`apply_sasa`."""
        from sasa.data.manifest import encode_prompts

        if self._tokenizer is None:
            raise ValueError("tokenizer: encode() needs the tokenizer or processor; pass tokenizer= to apply_sasa")
        return encode_prompts(self._tokenizer, prompts, images, prompt_format=self.prompt_format,
                              device=model_device(self.model))

    def remove(self) -> None:
        """Detach the guard: the instance is as before :func:`apply_sasa` (idempotent)."""
        if not self._active:
            return
        self._active = False
        self._hooks.remove()
        self._prefill.remove()
        self._augment.remove()
        self._no_pickle.remove()
        self._batching.remove()
        self._generate_patch.remove()
        self._entry.remove()
        if self.model.__dict__.get(_GUARD_ATTR) is self:
            del self.model.__dict__[_GUARD_ATTR]

    def __enter__(self) -> "SASAGuard":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    __deepcopy__ = GuardPart.__deepcopy__

    def __repr__(self) -> str:
        probes = self.categories if self._probe is not None else None
        return (
            f"SASAGuard({type(self.model).__name__}, layers=({self.config.safety_layer}, {self.config.fused_layer}) "
            f"of {self.num_layers}, scope={self.config.scope!r}, feature={self.config.feature!r}, probes={probes}, "
            f"prompt_format={self.prompt_format.describe() if self.prompt_format else None}, "
            f"{'active' if self._active else 'removed'})"
        )

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
        return self._feature_size

    @property
    def folded(self) -> bool:
        """Whether the logits probe was folded into hidden space (exact for a plain linear head)."""
        return self._readout.folded

    @property
    def categories(self) -> list[str]:
        """The name of each probe (each column of :meth:`score`)."""
        probe = self._require_probe()
        return list(probe.categories) if probe.categories else [f"probe{i}" for i in range(len(probe.bias))]

    # ------------------------------------------------------------------ internals

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("this SASAGuard was removed; call apply_sasa again")

    def _require_probe(self) -> ProbeTensors:
        if self._probe is None:
            raise ValueError("probe: this guard has no probe; pass probe=... to apply_sasa")
        return self._probe

    def _recorder(self, last_pos: Tensor) -> tuple[Recorder, Optional[Ride]]:
        """A recorder for one call, and the ride that runs the augmented pass inside the forward."""
        s = self.config.safety_layer
        last = self.config.scope == "last"
        recorder = Recorder(keep=(s, self.config.fused_layer), kwargs_from=s + 1, record_kv=last, chain_from=s,
                            chain_positions=last_pos if last else None)
        ride = None
        if self._ride:
            ride = Ride(self._augment, recorder, last_pos)
            recorder.after_block = ride
        return recorder, ride

    def _check_call_inputs(self, inputs: dict[str, Any]) -> tuple[int, int, Tensor]:
        device = model_device(self.model)
        batch, length = check_inputs(
            tensor_inputs(inputs), device, self._pad_id, vocab_size=self._vocab_size,
            embed_dtype=embedding_dtype(self.model),
        )
        last_pos = last_positions(inputs, batch, length, device)
        if self.prompt_format is not None:
            self.prompt_format.check_input_ids(inputs.get("input_ids"), last_pos)
        return batch, length, last_pos

    def _normal_pass(self, inputs: dict[str, Any]) -> tuple[Tensor, NormalPass, int, Optional[Ride]]:
        """Run the model's own forward once, observed; (last positions, what it left, T, its ride)."""
        for name in _NOT_ACCEPTED:
            if name in inputs:
                raise ValueError(f"{name}: not accepted here; sasa runs the normal pass itself")
        _, length, last_pos = self._check_call_inputs(inputs)
        kwargs = dict(inputs)
        kwargs["use_cache"] = self.config.scope == "last"
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # the normal pass's own logits are not needed
        recorder, ride = self._recorder(last_pos)
        with torch.no_grad(), self._hooks.recording(recorder):
            self.model(**kwargs)
            normal = recorder.result
            self._check_observed(normal, length)
        return last_pos, normal, length, ride

    def _check_observed(self, normal: NormalPass, length: int) -> None:
        config = self.config
        check_observed(normal, config.safety_layer, config.fused_layer, config.scope, len(self._layers), length)

    def _augmented(self, normal: NormalPass, last_pos: Tensor, ride: Optional[Ride]) -> Tensor:
        """The augmented pre-norm state ``[B, d]``: the ride's, or the augmented pass run now."""
        if ride is not None:
            return ride.result()
        return self._augment.run(normal, self.config.scope, last_pos)

    def _score_from(self, normal: NormalPass, last_pos: Tensor, ride: Optional[Ride] = None) -> Tensor:
        """``[B, C]`` probabilities: the augmented state, then one ``sasa_kernels.probe`` call."""
        return self._readout.scores(self._augmented(normal, last_pos, ride))


def apply_sasa(
    model: nn.Module,
    config: Optional[SASAConfig] = None,
    probe: Any = None,
    tokenizer: Any = None,
    *,
    allow_config_override: bool = False,
) -> SASAGuard:
    """Attach SASA to this model *instance* and return its :class:`SASAGuard`.

    No class is changed and no forward is replaced: other instances are unaffected, and
    :meth:`SASAGuard.remove` restores this one exactly. While applied, ``model.generate`` (and so
    ``pipeline(...)`` and serving code built on it) is guarded: flagged rows answer the refusal.
    A plain ``model(...)`` forward is not guarded (it generates nothing). Patching an instance
    twice raises unless the first guard was removed.

    Args:
        model: a loaded causal LM or vision-language model of a supported ``model_type``
            (:data:`sasa.SUPPORTED_MODEL_TYPES`).
        config: the :class:`SASAConfig`. Its layer numbers are 0-based decoder-block indices
            (``H`` after block ``i``), checked here against the model's block count. When
            ``None``, the probe's own config is used. An explicit config whose layers, mode,
            coefficient, epsilon, scope or feature differ from the probe's is refused (the message
            names both) unless ``allow_config_override=True``.
        probe: ``None`` (then only :meth:`SASAGuard.features` works), a probe directory written by
            :meth:`sasa.SASAProbe.save` (its fingerprint is checked against ``model``), a
            :class:`sasa.SASAProbe` (its fingerprint, if it has one, is checked too), a
            ``(weight [C, F], bias [C])`` pair in feature space (``F`` = output-head width for
            ``feature="logits"``, hidden size for ``"hidden"``), or an object with
            ``weight``/``bias`` (and optional ``threshold``, ``categories``). Non-finite weights
            and thresholds outside ``[0, 1]`` are refused (such a probe could never fire).
        tokenizer: the tokenizer or processor: tokenizes the refusal text, and :meth:`SASAGuard.encode`
            formats prompts with it. Checked against the probe's prompt format (same chat template).
        allow_config_override: apply the probe under an explicit config that differs from its own.

    Raises:
        ValueError: unsupported ``model_type`` (the message lists the supported ones), a model
            without decoder blocks, a layer index out of range, a probe of the wrong width, for
            another model, or inconsistent with ``config``.
        RuntimeError: the instance already has an active guard.
    """
    existing = model.__dict__.get(_GUARD_ATTR) if isinstance(model, nn.Module) else None
    if existing is not None and existing.active:
        raise RuntimeError("model: this instance already has an active SASA guard; call guard.remove() first")
    resolved = resolve(model, config, probe, tokenizer, allow_config_override=allow_config_override)
    guard = SASAGuard(model, resolved, tokenizer)
    model.__dict__[_GUARD_ATTR] = guard
    return guard
