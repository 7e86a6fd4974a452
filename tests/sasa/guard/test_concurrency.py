"""One guard, many threads: every call sees only its own forward (no crossed scores, no errors)."""

from __future__ import annotations

import threading

import torch

from sasa import SASAConfig, apply_sasa
from tests.sasa import _tiny

THREADS = 6
CALLS = 8


def _flagging_probe(t, config):
    """A hidden-feature probe thresholded between the rows' values: some rows flagged, some not."""
    with apply_sasa(t.model, config) as guard:
        feats = guard.features(**t.left)
    j = int((feats.max(0).values - feats.min(0).values).argmax())
    cut = float(feats[:, j].sort().values[:2].mean())
    weight = torch.zeros(feats.shape[1])
    weight[j] = 50.0
    return weight, torch.tensor(-50.0 * cut)


def _batches(t):
    """Different batches (single rows, pairs, the whole batch), each with its own padding."""
    out = []
    for rows in ([0], [1], [2], [0, 2], [1, 2], [0, 1, 2]):
        ids = t.right["input_ids"][rows]
        mask = t.right["attention_mask"][rows]
        width = int(mask.sum(1).max())
        # Re-pad on the left to this subset's own width.
        left_ids = torch.full((len(rows), width), _tiny.PAD, dtype=ids.dtype)
        left_mask = torch.zeros((len(rows), width), dtype=mask.dtype)
        for i in range(len(rows)):
            n = int(mask[i].sum())
            left_ids[i, width - n:] = ids[i, :n]
            left_mask[i, width - n:] = 1
        out.append({"input_ids": left_ids, "attention_mask": left_mask})
    return out


def _run_threads(work):
    errors, results = [], {}
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(k):
        try:
            start.wait()
            for i in range(CALLS):
                key = (k, i)
                value = work(k, i)
                with lock:
                    results[key] = value
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors[:3]
    assert len(results) == THREADS * CALLS
    return results


def test_concurrent_calls_match_sequential_results():
    t = _tiny.llama()
    config = SASAConfig(1, 2, scope="last", feature="hidden")
    probe = _flagging_probe(t, config)
    batches = _batches(t)
    gen = dict(max_new_tokens=3, do_sample=False)
    with apply_sasa(t.model, config, probe=probe) as guard:
        want_scores = [guard.score(**b) for b in batches]
        want_gen = [guard.generate(**b, **gen) for b in batches]
        want_model_gen = [t.model.generate(**b, **gen) for b in batches]
        assert any(g.flagged.any() for g in want_gen) and any((~g.flagged).any() for g in want_gen)

        def work(k, i):
            j = (k + i) % len(batches)
            kind = (k + 2 * i) % 3
            if kind == 0:
                return j, kind, guard.score(**batches[j])
            if kind == 1:
                out = guard.generate(**batches[j], **gen)
                return j, kind, (out.sequences, out.flagged, out.scores)
            return j, kind, t.model.generate(**batches[j], **gen)

        results = _run_threads(work)
    for j, kind, value in results.values():
        if kind == 0:
            torch.testing.assert_close(value, want_scores[j], atol=1e-6, rtol=1e-6)
        elif kind == 1:
            sequences, flagged, scores = value
            assert torch.equal(flagged, want_gen[j].flagged)
            assert torch.equal(sequences, want_gen[j].sequences)
            torch.testing.assert_close(scores, want_gen[j].scores, atol=1e-6, rtol=1e-6)
        else:
            assert torch.equal(value, want_model_gen[j])


def test_an_unguarded_forward_in_another_thread_is_not_captured():
    """Plain forwards running beside guarded calls neither disturb them nor are disturbed."""
    t = _tiny.llama()
    config = SASAConfig(1, 2, scope="all", feature="hidden")
    batches = _batches(t)
    with torch.no_grad():
        want_logits = [t.model(**b).logits for b in batches]
    with apply_sasa(t.model, config) as guard:
        want_feats = [guard.features(**b) for b in batches]

        def work(k, i):
            j = (k * 3 + i) % len(batches)
            if k % 2:
                with torch.no_grad():
                    return j, "logits", t.model(**batches[j]).logits
            return j, "features", guard.features(**batches[j])

        results = _run_threads(work)
    for j, kind, value in results.values():
        want = want_logits[j] if kind == "logits" else want_feats[j]
        torch.testing.assert_close(value, want, atol=1e-6, rtol=1e-6)
