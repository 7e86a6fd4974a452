"""The seven conformance checks of the issue, for every supported family (tiny seeded models).

1. the normal pass observed by sasa's hooks equals ``output_hidden_states=True`` exactly;
2. ``scope="last"`` equals projecting only the last token and re-running the whole prompt;
3. ``mode="residual", coef=0`` gives the unmodified final state / logits at the last position;
4. scoring leaves the KV cache bit-identical;
5. ``guard.generate`` = ``model.generate`` token for token (greedy, padded batch, fp32 and bf16),
   also for the passed rows when other rows are flagged;
6. the folded logits probe equals the explicit logits probe;
7. ``remove()`` restores the instance.
"""

from __future__ import annotations

import functools

import pytest
import torch

import sasa_kernels as sk
from sasa import SASAConfig, apply_sasa
from sasa.guard.capture import Capture
from sasa.guard.one_token import gather_seq
from sasa.hf import compat
from sasa.hf.families import FAMILIES as FAMILY_DATA
from tests.sasa import _tiny

FAMILIES = sorted(_tiny.BUILDERS)


def scopes(family: str) -> tuple[str, ...]:
    """The scopes a family supports: both, or scope='all' only where scope='last' is refused."""
    return ("all",) if FAMILY_DATA[family].no_scope_last else ("last", "all")


LAST = [f for f in FAMILIES if "last" in scopes(f)]  # the scope='last' checks run on these
ALL_ONLY = [f for f in FAMILIES if "last" not in scopes(f)]
FAMILY_SCOPES = [(f, scope) for f in FAMILIES for scope in scopes(f)]
NEVER = -60.0  # a bias that makes every probability ~1e-26: flags nothing (exp(60) still fits fp32)


@functools.lru_cache(maxsize=None)
def tiny(family: str) -> _tiny.Tiny:
    return _tiny.BUILDERS[family]()


def last_pos(batch):
    return _tiny_last(batch["attention_mask"])


def _tiny_last(mask):
    width = mask.shape[1]
    return width - 1 - mask.flip(1).argmax(1)


def config(t: _tiny.Tiny, **kw) -> SASAConfig:
    """The tiny model's config; scope='last' (the default) where the family supports it, else 'all'."""
    kw.setdefault("scope", scopes(t.family)[0])
    return SASAConfig(t.safety_layer, t.fused_layer, **kw)


def slow_final_state(t: _tiny.Tiny, batch, only_last: bool, mode="replace", coef=1.0):
    """The slow reference: the model's own forward, with block s's output replaced by the
    projection (at every position, or at each row's last prompt position only)."""
    model = t.model
    decoder = compat.find_decoder(model)
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True)
    hs = ref.hidden_states[t.safety_layer + 1]
    hf = ref.hidden_states[t.fused_layer + 1]
    projected = sk.reference.project(hs, hf, mode=mode, coef=coef, eps=1e-6)
    pos = last_pos(batch)
    if only_last:
        rows = torch.arange(hs.shape[0])
        new = hs.clone()
        new[rows, pos] = projected[rows, pos]
    else:
        new = projected
    seen = {}

    def replace(module, args, output):
        return new if isinstance(output, torch.Tensor) else (new, *output[1:])

    def grab(module, args, output):
        seen["z"] = output

    h1 = decoder.layers[t.safety_layer].register_forward_hook(replace)
    h2 = decoder.norm.register_forward_hook(grab)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        h1.remove()
        h2.remove()
    return gather_seq(seen["z"], pos, -2)[:, 0]


def assert_scope_all_equals_the_slow_pass(t: _tiny.Tiny, batch) -> torch.Tensor:
    """``scope="all"``'s hidden features, checked equal to projecting every token and re-running the
    slow way; returned."""
    guard = apply_sasa(t.model, config(t, scope="all", feature="hidden"))
    try:
        full = guard.features(**batch)
    finally:
        guard.remove()
    torch.testing.assert_close(full, slow_final_state(t, batch, only_last=False).float(), atol=1e-5, rtol=1e-5)
    return full


@pytest.mark.parametrize("family", FAMILIES)
def test_1_hidden_states_match_output_hidden_states(family):
    t = tiny(family)
    layers = compat.find_decoder(t.model).layers
    for side in ("left", "right"):
        batch = getattr(t, side)
        with torch.no_grad():
            ref = t.model(**batch, output_hidden_states=True).hidden_states
            with Capture(layers, keep=tuple(range(len(layers))), kwargs_from=1, record_kv=False) as cap:
                t.model(**batch)
        assert len(ref) == len(layers) + 1
        # hidden_states[i + 1] is H after block i, except the last entry, which 5.x models
        # report after the final norm; check it through the norm.
        for i in range(len(layers) - 1):
            assert torch.equal(cap.result.hidden[i], ref[i + 1]), (family, side, i)
        last = cap.result.hidden[len(layers) - 1]
        assert torch.equal(last, ref[-1]) or torch.equal(compat.find_decoder(t.model).norm(last), ref[-1])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_2_scope_last_equals_slow_last_token_projection(family, side):
    t = tiny(family)
    batch = getattr(t, side)
    slow = slow_final_state(t, batch, only_last=True).float()
    if "last" in scopes(family):
        guard = apply_sasa(t.model, config(t, scope="last", feature="hidden"))
        try:
            fast = guard.features(**batch)
        finally:
            guard.remove()
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # and scope="all" equals projecting every token the slow way
    full = assert_scope_all_equals_the_slow_pass(t, batch)
    # Neither check is empty: the projection changes the final state, and projecting every token
    # differs from projecting the last one only.
    guard = apply_sasa(t.model, config(t, scope="all", feature="hidden", mode="residual", coef=0.0))
    try:
        unmodified = guard.features(**batch)
    finally:
        guard.remove()
    assert (full - unmodified).abs().max() > 1e-3 and (slow - unmodified).abs().max() > 1e-3
    assert (full - slow).abs().max() > 1e-4


@pytest.mark.parametrize("family", sorted(_tiny.VLM_FAMILIES))
def test_images_reach_the_language_model(family):
    """The vision-language batches are real image inputs: other pixels give other features."""
    t = tiny(family)
    other = dict(t.right)
    pixels = next(name for name in t.right if name.endswith("pixel_values"))
    other[pixels] = t.right[pixels] + 1.0
    guard = apply_sasa(t.model, config(t, feature="hidden"))
    try:
        a, b = guard.features(**t.right), guard.features(**other)
    finally:
        guard.remove()
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("family, scope", FAMILY_SCOPES)
def test_3_residual_zero_is_the_unmodified_state(family, scope):
    t = tiny(family)
    batch = t.right
    with torch.no_grad():
        logits = t.model(**batch).logits
    want = gather_seq(logits, last_pos(batch), -2)[:, 0].float()
    guard = apply_sasa(t.model, config(t, scope=scope, mode="residual", coef=0.0))
    try:
        got = guard.features(**batch)
    finally:
        guard.remove()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", LAST)
def test_4_scoring_leaves_the_cache_bit_identical(family):
    t = tiny(family)
    batch = t.left
    width = _tiny.VOCAB
    with torch.no_grad():  # the plain model's own cache for this prompt
        plain = compat.output_cache(t.model(**batch, use_cache=True))
    want = [(layer.keys.clone(), layer.values.clone()) for layer in plain.layers]
    guard = apply_sasa(t.model, config(t, scope="last"), probe=(torch.randn(2, width), torch.zeros(2)))
    try:
        # The guard's pass rides along inside the forward (swapping rows in place) and can also run
        # after it: either way the cache must end exactly as the plain model left it.
        pos, normal, _, ride = guard._normal_pass(batch)
        cache = normal.cache
        assert cache is not None and normal.kv and ride is not None
        length = cache.get_seq_length()
        with torch.no_grad():
            guard._score_from(normal, pos, ride)
            guard._score_from(normal, pos)  # the same pass, run after the forward
        assert cache.get_seq_length() == length == plain.get_seq_length()
        for (k, v), layer in zip(want, cache.layers):
            assert torch.equal(k, layer.keys) and torch.equal(v, layer.values)
    finally:
        guard.remove()


@pytest.mark.parametrize("family", LAST)
@pytest.mark.parametrize("side", ["left", "right"])
def test_4_riding_along_equals_the_pass_after_the_forward(family, side):
    t = tiny(family)
    batch = getattr(t, side)
    guard = apply_sasa(t.model, config(t, scope="last", feature="hidden"))
    try:
        pos, normal, _, ride = guard._normal_pass(batch)
        with torch.no_grad():
            riding = ride.result()
            after = guard._augment.run(normal, "last", pos)
    finally:
        guard.remove()
    assert torch.equal(riding, after)


def _generate_pair(t: _tiny.Tiny, probe, scope: str, new_tokens: int = 6):
    batch = t.left
    with torch.no_grad():
        want = t.model.generate(**batch, max_new_tokens=new_tokens, do_sample=False)
    guard = apply_sasa(t.model, config(t, scope=scope, feature="hidden"), probe=probe)
    try:
        got = guard.generate(**batch, max_new_tokens=new_tokens, do_sample=False)
    finally:
        guard.remove()
    return want, got


def _hidden_size(t):
    return compat.find_decoder(t.model).norm.weight.shape[0]


@pytest.mark.parametrize("family, scope", FAMILY_SCOPES)  # "last" rides along inside the prefill
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_5_generate_passes_are_bit_identical(family, dtype, scope):
    t = tiny(family) if dtype == torch.float32 else tiny(family).to(dtype)
    probe = (torch.zeros(_hidden_size(t)), torch.tensor(NEVER))
    want, got = _generate_pair(t, probe, scope=scope)
    assert not got.flagged.any()
    assert torch.equal(got.sequences, want)
    assert got.scores.shape == (want.shape[0], 1)  # one column per probe, always


@pytest.mark.parametrize("family", FAMILIES)
def test_5_generate_flagged_rows_refuse_others_unchanged(family):
    t = tiny(family)
    d = _hidden_size(t)
    # A probe reading one hidden feature, thresholded between the rows' values, flags some rows.
    scope = scopes(family)[0]
    guard = apply_sasa(t.model, config(t, scope=scope, feature="hidden"))
    try:
        feats = guard.features(**t.left)
    finally:
        guard.remove()
    j = int((feats.max(0).values - feats.min(0).values).argmax())
    values = feats[:, j].sort().values
    cut = float((values[0] + values[1]) / 2)  # exactly one row at or below it passes... or more
    weight = torch.zeros(d)
    weight[j] = 50.0
    probe = (weight, torch.tensor(-50.0 * cut))
    want_flag = feats[:, j] > cut
    assert want_flag.any() and not want_flag.all()
    want, got = _generate_pair(t, probe, scope=scope)
    assert torch.equal(got.flagged, want_flag)
    prompt = t.left["input_ids"].shape[1]
    for row in range(want.shape[0]):
        if got.flagged[row]:
            assert torch.equal(got.sequences[row, :prompt], want[row, :prompt])
            assert (got.sequences[row, prompt:] == _tiny.PAD).all()  # no tokenizer: padding
        else:
            # Same tokens; only the trailing padding may differ, since generate stops earlier
            # when the flagged rows no longer keep the batch going.
            assert torch.equal(_strip_pad(got.sequences[row]), _strip_pad(want[row]))


def _strip_pad(row):
    keep = len(row)
    while keep > 0 and int(row[keep - 1]) == _tiny.PAD:
        keep -= 1
    return row[:keep]


@pytest.mark.parametrize("family", FAMILIES)
def test_6_folded_logits_probe_equals_explicit(family):
    t = tiny(family)
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(3, _tiny.VOCAB, generator=gen) * 0.3
    bias = torch.randn(3, generator=gen)
    guard = apply_sasa(t.model, config(t), probe=(weight, bias))
    try:
        assert guard.folded == (compat.final_logit_softcap(t.model) is None)
        scores = guard.score(**t.right)
        explicit = torch.sigmoid(guard.features(**t.right) @ weight.T + bias)
    finally:
        guard.remove()
    assert scores.shape == (3, 3)
    torch.testing.assert_close(scores, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_7_remove_restores_the_instance(family):
    t = tiny(family)
    model = t.model
    forward_before = type(model).forward
    # transformers installs hooks of its own (output capturing); only ours must be gone.
    hooks_before = _hooks(model)
    with torch.no_grad():
        before = model(**t.left).logits
    guard = apply_sasa(model, config(t), probe=(torch.randn(_tiny.VOCAB), torch.tensor(0.0)))
    guard.score(**t.left)
    guard.generate(**t.left, max_new_tokens=2, do_sample=False)
    guard.remove()
    assert type(model).forward is forward_before
    assert "forward" not in model.__dict__ and "_sasa_guard" not in model.__dict__
    assert "generate" not in model.__dict__ and type(model).generate is type(t.model).generate
    assert not any("forward" in m.__dict__ for m in model.modules())  # the fused-norm slot is gone too
    assert _hooks(model) == hooks_before
    with torch.no_grad():
        after = model(**t.left).logits
    assert torch.equal(before, after)
    apply_sasa(model, config(t)).remove()  # can be patched again after removal


def _hooks(model):
    return [
        (name, list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
        for name, m in model.named_modules()
    ]


def _moe_families():
    return sorted(name for name in FAMILIES if _tiny.ROUTERS.get(name))


def _routes(t: _tiny.Tiny, run, rows: int):
    """Every router call's expert choice while ``run()`` runs: {block: [indices [N, k], ...]}."""
    path, pick = _tiny.ROUTERS[t.family]
    layers = compat.find_decoder(t.model).layers
    seen: dict[int, list] = {}
    handles = [
        layers[i].get_submodule(path).register_forward_hook(
            lambda m, a, out, i=i: seen.setdefault(i, []).append(pick(out).reshape(-1, pick(out).shape[-1]).clone())
        )
        for i in range(len(layers))
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("family", _moe_families())
def test_moe_router_choice_for_the_augmented_token_is_the_models_own(family):
    """The one-token pass routes the augmented token with the model's own router on its own state:
    its experts equal those the full re-run (the slow reference) picks at that position, and differ
    from the normal pass's choice there in some block (so reusing the normal routing would fail)."""
    t = tiny(family)
    batch = t.right
    rows, width = batch["input_ids"].shape
    pos = last_pos(batch)
    s = t.safety_layer
    guard = apply_sasa(t.model, config(t, scope="last", feature="hidden"))
    try:
        with torch.no_grad():
            got = _routes(t, lambda: guard.features(**batch), rows)
    finally:
        guard.remove()
    reference = _routes(t, lambda: slow_final_state(t, batch, only_last=True), rows)
    changed = False
    for block in range(s + 1, len(compat.find_decoder(t.model).layers)):
        normal = got[block][0].view(rows, width, -1)  # the normal pass: every position
        augmented = got[block][1]  # the one-token pass: one position per row
        assert augmented.shape[0] == rows, (block, augmented.shape)
        # the slow reference: its first call is output_hidden_states' plain forward, the second the re-run
        rerun = reference[block][1].view(rows, width, -1)
        for row in range(rows):
            p = int(pos[row])
            assert set(augmented[row].tolist()) == set(rerun[row, p].tolist()), (block, row)
            changed |= set(augmented[row].tolist()) != set(normal[row, p].tolist())
    assert changed, "the projection never changed a routing decision: the check would not see a reused routing"


@pytest.mark.parametrize("side", ["left", "right"])
def test_scope_last_refuses_a_prompt_ending_inside_a_bidirectional_image_block(side, monkeypatch):
    """Gemma 3's image tokens attend to each other both ways: in a prompt that ends inside the image
    block, the block's other tokens attend to the last one, so re-running it alone is not the
    re-run with it projected. scope='last' refuses (naming scope='all'; generate fails closed),
    scope='all' is exact; and without the refusal the one-token features would be off."""
    from sasa.guard import one_token

    t = tiny("gemma3")
    batch = _tiny.image_last_batch(t, side)
    assert (batch["input_ids"][torch.arange(3), last_pos(batch)] == _tiny.IMAGE).all()
    guard = apply_sasa(t.model, config(t, scope="last", feature="hidden"), probe=(torch.zeros(32), torch.tensor(NEVER)))
    try:
        with pytest.raises(RuntimeError, match="scope='all'") as err:
            guard.features(**batch)
        assert isinstance(err.value.__cause__, one_token.NotLastTokenOnly)
        if side == "left":
            assert guard.generate(**batch, max_new_tokens=2, do_sample=False).flagged.all()  # fail closed
    finally:
        guard.remove()
    assert_scope_all_equals_the_slow_pass(t, batch)
    # The refusal is needed: skipping the check gives features off the slow last-token re-run.
    import sasa.guard.augment as augment_module

    monkeypatch.setattr(augment_module, "check_last_token_only", lambda *a, **k: None)
    guard = apply_sasa(t.model, config(t, scope="last", feature="hidden"))
    try:
        unchecked = guard.features(**batch)
    finally:
        guard.remove()
    assert (unchecked - slow_final_state(t, batch, only_last=True).float()).abs().max() > 1e-3


def test_the_last_token_check_passes_causal_and_sliding_masks_and_refuses_bidirectional_ones():
    from sasa.guard.one_token import NotLastTokenOnly, check_last_token_only

    T = 6
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    pos = torch.tensor([5, 3])  # row 1 right-padded: positions 4, 5 are padding
    padded = causal.clone().expand(2, 1, T, T).clone()
    padded[1, 0, :, 4:] = False  # padding keys masked; padding queries still attend causally
    sliding = padded & ~torch.ones(T, T, dtype=torch.bool).tril(-3)
    for mask in (None, padded, sliding, torch.where(padded, 0.0, torch.finfo(torch.float32).min)):
        check_last_token_only(mask, pos, 3, others_read_later=True)
    block = padded.clone()
    block[1, 0, 1:4, 1:4] = True  # row 1's last token (3) ends a bidirectional block 1..3
    check_last_token_only(block, pos, 3, others_read_later=False)  # the last block: nobody reads the others
    with pytest.raises(NotLastTokenOnly, match="scope='all'"):
        check_last_token_only(block, pos, 3, others_read_later=True)
    ahead = padded.clone()
    ahead[1, 0, 3, 4] = True  # the last token attends to a later key
    with pytest.raises(NotLastTokenOnly):
        check_last_token_only(ahead, pos, 3, others_read_later=False)


@pytest.mark.parametrize("side", ["left", "right"])
def test_hidden_states_changed_between_blocks_are_refused_where_the_pass_would_miss_them(side, monkeypatch):
    """Qwen3-VL adds DeepStack visual features to the image positions after text blocks 0 and 1,
    outside the blocks, and SASA re-runs blocks s+1..L-1 back to back. With the safety block
    before an injection: scope='all' is refused on image prompts (naming the first usable block;
    generate fails closed), and so is scope='last' on a prompt ending in an image token; scope='last'
    on a prompt ending in text is exact (the injection never touches the token it re-runs); text-only
    prompts pass; and without the check the refused features are off the slow re-run."""
    from sasa.guard import capture

    t = tiny("qwen3_vl")
    early_t = _tiny.Tiny(t.family, t.model, t.left, t.right, 1, 3)
    batch = getattr(t, side)
    ends_in_image = _tiny.image_last_batch(t, side)
    refused = "between decoder blocks 1 and 2.*safety_layer of at least 2"
    never = (torch.zeros(32), torch.tensor(NEVER))
    with apply_sasa(t.model, config(early_t, scope="all", feature="hidden"), probe=never) as guard:
        with pytest.raises(RuntimeError, match=refused):
            guard.features(**batch)
        if side == "left":
            assert guard.generate(**batch, max_new_tokens=2, do_sample=False).flagged.all()  # fail closed
        guard.features(**_tiny.text_batch(side=side))  # no image, nothing injected
    with apply_sasa(t.model, config(early_t, scope="last", feature="hidden"), probe=never) as guard:
        with pytest.raises(RuntimeError, match=refused):
            guard.features(**ends_in_image)
        fast = guard.features(**batch)
    torch.testing.assert_close(fast, slow_final_state(early_t, batch, only_last=True).float(), atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(capture, "_same_states", lambda *args: True)
    for scope, inputs in (("all", batch), ("last", ends_in_image)):
        with apply_sasa(t.model, config(early_t, scope=scope, feature="hidden")) as guard:
            unchecked = guard.features(**inputs)
        slow = slow_final_state(early_t, inputs, only_last=scope == "last").float()
        assert (unchecked - slow).abs().max() > 1e-3, scope


@pytest.mark.parametrize("family", ALL_ONLY)
def test_scope_last_is_refused_where_it_cannot_be_exact(family, monkeypatch):
    """A family whose prompts other positions attend to as a whole (PaliGemma's prefix-LM) refuses
    scope='last' at apply_sasa, naming scope='all'; and the per-prompt mask check would refuse it
    too (it is not the family entry alone that keeps the wrong features out)."""
    import dataclasses

    from sasa.hf import families

    t = tiny(family)
    with pytest.raises(ValueError, match="scope='all'"):
        apply_sasa(t.model, config(t, scope="last"))
    assert sasa_guard_absent(t.model)
    allowed = dataclasses.replace(FAMILY_DATA[family], no_scope_last="")
    monkeypatch.setitem(families.FAMILIES, family, allowed)
    with apply_sasa(t.model, config(t, scope="last", feature="hidden")) as guard:
        with pytest.raises(RuntimeError, match="scope='all'"):
            guard.features(**t.right)


def sasa_guard_absent(model) -> bool:
    from sasa import get_guard

    return get_guard(model) is None


@pytest.mark.parametrize("side", ["left", "right"])
def test_llama4_attention_temperature_tuning_needs_each_tokens_position(side):
    """Llama 4's no-rope blocks scale queries by the position the cache length gives: the re-run token
    gets its own position, exactly, where the rows' last tokens share it (left padding); with right
    padding scope='last' is refused (naming left padding and scope='all') and scope='all' is exact
    (its last block runs whole there)."""
    t = _tiny.llama4(temperature_tuning=True)
    batch = getattr(t, side)
    last = config(t, scope="last", feature="hidden")
    with apply_sasa(t.model, last) as guard:
        if side == "left":
            fast = guard.features(**batch)
            torch.testing.assert_close(fast, slow_final_state(t, batch, only_last=True).float(), atol=1e-5, rtol=1e-5)
        else:
            with pytest.raises(RuntimeError, match="Left-pad the prompts.*scope='all'"):
                guard.features(**batch)
    with apply_sasa(t.model, config(t, scope="all", feature="hidden")) as guard:
        full = guard.features(**batch)
    torch.testing.assert_close(full, slow_final_state(t, batch, only_last=False).float(), atol=1e-5, rtol=1e-5)
    if side == "left":  # not an empty check: another position (4 later) gives other features
        from sasa.guard.one_token import SwappedKV

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SwappedKV, "get_seq_length", lambda self, layer_idx=0: int(self.last_pos.max()) + 4)
            with apply_sasa(t.model, last) as guard:
                assert (guard.features(**batch) - fast).abs().max() > 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_blocks_the_model_skips_are_skipped_by_the_re_run(side):
    """Mllama skips its cross-attention block on a prompt without an image: the re-run (both scopes)
    skips it too, and equals the slow re-run; generation stays bit-identical."""
    t = tiny("mllama")
    batch = _tiny.text_batch(side=side)
    for scope in ("last", "all"):
        with apply_sasa(t.model, config(t, scope=scope, feature="hidden")) as guard:
            got = guard.features(**batch)
            assert guard._normal_pass(batch)[1].skipped == {3}
        want = slow_final_state(t, batch, only_last=scope == "last").float()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if side == "left":
        text_only = _tiny.Tiny(t.family, t.model, batch, _tiny.text_batch(side="right"), t.safety_layer, t.fused_layer)
        want, got = _generate_pair(text_only, (torch.zeros(32), torch.tensor(NEVER)), scope="last")
        assert not got.flagged.any() and torch.equal(got.sequences, want)
