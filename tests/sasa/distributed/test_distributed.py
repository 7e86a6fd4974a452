"""The guard beyond one device: tensor parallel under torchrun (gloo, 2 CPU processes) and an
offloaded ``device_map`` (accelerate).

Tensor parallel: ``_dist_worker.py`` runs under ``torchrun --nproc-per-node 2`` and computes, on each
rank, the guard on the ``tp_plan="auto"`` model and on a plain single-process copy; the assertions
are here. Each torchrun run is bounded by a timeout, and the failure runs check that a rank that
raises, or stops answering, ends the run with a non-zero exit instead of a hang.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers as T

import sasa
import sasa.distributed as sd
from sasa.distributed.session import CommandSession
from tests.sasa import _tiny

WORKER = Path(__file__).resolve().parents[1] / "_dist_worker.py"
#: fp32 TP vs one process: the all-reduce sums the two halves of each projection in another order
#: than one matmul does; measured differences are ~1e-7.
ATOL = 1e-5
RUN_TIMEOUT_S = 240  # a whole torchrun run, start-up included (2 busy cores: ~20-40 s)
FAIL_PG_TIMEOUT_S = 90  # the process-group timeout in the "raise" run: the run must end well before it
HANG_PG_TIMEOUT_S = 4


def torchrun(scenario: str, workdir: Path, pg_timeout_s: float) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), scenario, str(workdir), str(pg_timeout_s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env,
                            preexec_fn=lambda: os.nice(10))
    return result, time.monotonic() - start


def _planted_manifest(path: Path, rows: int = 24) -> None:
    rng = random.Random(0)
    words = ["how", "do", "i", "bake", "bread", "plant", "tomatoes", "fix", "tyre", "learn", "chess"]
    lines = []
    for i in range(rows):
        prompt = rng.choices(words, k=rng.randint(3, 5)) + (["bomb", "fentanyl"] if i % 2 else [])
        lines.append(json.dumps({"prompt": " ".join(prompt), "label": i % 2}))
    path.write_text("\n".join(lines) + "\n")


def _even_vocabulary_demo(directory: Path) -> None:
    """The built-in stand-in with one spare token, so 2 ranks split its vocabulary evenly."""
    from sasa.demo.stand_in import build_default, build_model

    _, tokenizer = build_default()
    tokenizer.add_tokens(["<spare>"])
    model = build_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    assert len(tokenizer) % 2 == 0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


#: The families run under tensor parallelism (and an offloaded device_map) here; the README's family table reads it.
TP_FAMILIES = ("llama", "llava")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    (root / "out").mkdir()
    for name in TP_FAMILIES:
        build = _tiny.BUILDERS[name]
        tiny = build()
        tiny.model.save_pretrained(root / name)
        torch.save(tiny.left, root / f"{name}_inputs.pt")
    from sasa import cli
    from sasa.demo.stand_in import build_default, save_default

    save_default(root / "uneven")  # its vocabulary (129) does not split evenly over 2 ranks
    model, tokenizer = build_default()
    assert model.config.vocab_size % 2 == 1
    batch = tokenizer(["how do i bake bread", "bomb"], return_tensors="pt", padding=True)
    torch.save(dict(batch), root / "uneven" / "inputs.pt")
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(40, model.config.vocab_size, generator=gen), torch.arange(40) % 2
    sasa.SASAProbe.fit(features + labels[:, None], labels, config=sasa.SASAConfig(safety_layer=1, fused_layer=3),
                       fingerprint=sasa.model_fingerprint(model)).save(root / "uneven" / "probe")

    cli_dir = root / "cli"
    _even_vocabulary_demo(cli_dir / "model")
    _planted_manifest(cli_dir / "manifest.jsonl")
    assert cli.main(["calibrate", "--model", str(cli_dir / "model"), "--data", str(cli_dir / "manifest.jsonl"),
                     "--safety-layer", "1", "--fused-layer", "3", "--out", str(cli_dir / "probe"), "--quiet"]) == 0
    assert cli.main(["score", "--model", str(cli_dir / "model"), "--probe", str(cli_dir / "probe"), "--data",
                     str(cli_dir / "manifest.jsonl"), "--out", str(cli_dir / "single_scores.jsonl"), "--quiet"]) == 0
    return root


@pytest.fixture(scope="module")
def agreement(workdir):
    result, _ = torchrun("agree", workdir, pg_timeout_s=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [torch.load(workdir / "out" / f"rank{r}.pt") for r in (0, 1)]
    return ranks, result


def test_tp_scores_equal_one_process_and_every_rank_decides_the_same(agreement):
    (rank0, rank1), _ = agreement
    rank0, rank1 = dict(rank0), dict(rank1)
    for key in ("uneven", "distributed_norm"):
        rank0.pop(key), rank1.pop(key)
    assert set(rank0) == {f"{m}/{f}/{s}" for m in ("llama", "llava") for f, s in (("logits", "last"), ("logits", "all"), ("hidden", "last"))}
    for case, r0 in rank0.items():
        tp, plain = r0["tp"], r0["plain"]
        for key in ("features", "scores", "gen_scores"):
            torch.testing.assert_close(tp[key], plain[key], atol=ATOL, rtol=0, msg=f"{case} {key}")
        assert torch.equal(tp["flagged"], plain["flagged"]), case
        assert 0 < int(tp["flagged"].sum()) < len(tp["flagged"]), f"{case}: the thresholds should flag some rows only"
        for key in ("features", "scores", "gen_scores", "flagged", "sequences"):
            assert torch.equal(r0["tp"][key], rank1[case]["tp"][key]), f"{case} {key}: rank 0 and rank 1 differ"


def test_tp_passed_rows_are_the_unguarded_tp_generate_and_flagged_rows_refuse(agreement):
    (rank0, _), _ = agreement
    for case, r in rank0.items():
        if case in ("uneven", "distributed_norm"):
            continue
        tp, width = r["tp"], r["prompt_width"]
        passed = ~tp["flagged"]
        unguarded = r["unguarded_tp"]
        assert torch.equal(tp["sequences"][passed, : unguarded.shape[1]], unguarded[passed]), case
        assert torch.equal(unguarded, r["unguarded_plain"]), f"{case}: TP generate differs from one process"
        assert torch.equal(tp["sequences"], r["plain"]["sequences"]), case
        # A flagged row holds no model token after the prompt (no tokenizer: the refusal is padding).
        flagged_rows = tp["sequences"][tp["flagged"], width:]
        assert bool((flagged_rows == _tiny.PAD).all()), case


def test_tp_command_line_writes_once_and_reports_an_error_once(agreement, workdir):
    _, result = agreement
    codes = [json.loads((workdir / "out" / f"codes{r}.json").read_text()) for r in (0, 1)]
    assert [c["missing_manifest"] for c in codes] == [2, 2] and [c["score"] for c in codes] == [0, 0]
    errors = [line for line in result.stderr.splitlines() if line.startswith("sasa score: error")]
    assert len(errors) == 1 and "missing.jsonl" in errors[0], result.stderr[-3000:]
    assert result.stdout.count("summary:") == 1, result.stdout[-3000:]
    tp_rows = [json.loads(line) for line in (workdir / "out" / "tp_scores.jsonl").read_text().splitlines()]
    one_rows = [json.loads(line) for line in (workdir / "cli" / "single_scores.jsonl").read_text().splitlines()]
    assert [r["line"] for r in tp_rows] == [r["line"] for r in one_rows]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(tp_rows, one_rows)) <= ATOL
    # The probe was calibrated on these very rows, so its threshold is some row's own score: a row
    # within ATOL of it may fall either side under TP's reduction order. Every other row decides alike.
    threshold = json.loads((workdir / "cli" / "probe" / "sasa_config.json").read_text())["threshold"][0]
    clear = [abs(b["score"] - threshold) > ATOL for b in one_rows]
    assert sum(clear) >= len(one_rows) - 1
    assert [a["flagged"] for a, c in zip(tp_rows, clear) if c] == [b["flagged"] for b, c in zip(one_rows, clear) if c]
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [
        "codes0.json", "codes1.json", "diverge0.pt", "diverge1.pt", "rank0.pt", "rank1.pt", "tp_scores.jsonl"]


def test_tp_ranks_whose_scores_differ_still_decide_alike_and_fail_closed(agreement, workdir):
    """Rank 1's probe flags every row, rank 0's none: the guard's one all-reduce (MAX) makes both
    report rank 1's scores and refuse every row; without it the run would not even finish."""
    r0, r1 = (torch.load(workdir / "out" / f"diverge{r}.pt") for r in (0, 1))
    for key in ("scores", "gen_scores", "flagged", "sequences"):
        assert torch.equal(r0[key], r1[key]), key
    assert bool(r0["flagged"].all()) and bool((r0["scores"] > 0.99).all())


def _uneven(rank: dict) -> dict:
    """The uneven-vocabulary results, or a skip where this transformers cannot shard one."""
    refused = rank["uneven"].get("refused_by_transformers")
    if refused is not None:
        pytest.skip(f"transformers {T.__version__} cannot shard this vocabulary unevenly: {refused}")
    return rank["uneven"]


def test_tp_unevenly_sharded_vocabulary_folds_and_samples_exactly(agreement):
    (rank0, rank1), _ = agreement
    for r in (_uneven(rank0), _uneven(rank1)):
        assert r["sharded"] > 0
        assert r["samples_tp"] == r["samples_plain"]  # read from the shards, no tolerance needed
        torch.testing.assert_close(r["scores_tp"], r["scores_plain"], atol=ATOL, rtol=0)


def test_tp_plan_that_distributes_the_residual_norms_is_refused(agreement):
    (rank0, _), _ = agreement
    message = rank0["distributed_norm"]
    assert "the final norm" in message and "sequence-parallel plans are not supported" in message, message


def test_tp_fingerprinted_probe_on_an_unevenly_sharded_vocabulary(agreement):
    (rank0, _), _ = agreement
    assert _uneven(rank0)["fingerprinted_probe"] == "ok"


def test_a_rank_that_raises_ends_the_run_nonzero_before_the_timeout(workdir):
    result, elapsed = torchrun("raise", workdir, pg_timeout_s=FAIL_PG_TIMEOUT_S)
    assert result.returncode != 0
    assert "planted failure on rank 1" in result.stdout + result.stderr
    assert "UNREACHABLE" not in result.stdout
    assert elapsed < FAIL_PG_TIMEOUT_S, f"took {elapsed:.0f} s: rank 0 waited for the timeout instead of failing"


def test_a_rank_that_stops_answering_times_out_nonzero(workdir):
    result, elapsed = torchrun("hang", workdir, pg_timeout_s=HANG_PG_TIMEOUT_S)
    assert result.returncode != 0
    assert "UNREACHABLE" not in result.stdout
    assert elapsed < RUN_TIMEOUT_S


# --------------------------------------------------------------------------- without torchrun


def _args(**kw):
    from types import SimpleNamespace

    base = dict(command="score", tp=False, dist_timeout=60.0, device_map=None, max_memory=None, offload_folder=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_tp_outside_torchrun_is_a_clear_error(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="--tp: .*torchrun --nproc-per-node 2 -m sasa.cli score --tp"):
        CommandSession(_args(tp=True)).placement()


@pytest.mark.parametrize(
    "kw,needle",
    [(dict(max_memory="cpu=1GiB"), "only used with --device-map"), (dict(dist_timeout=0.0), "--dist-timeout"),
     (dict(device_map="auto", max_memory="cpu"), "DEVICE=AMOUNT")],
)
def test_placement_flag_errors_name_the_flag(kw, needle):
    with pytest.raises(ValueError, match=needle):
        CommandSession(_args(**kw)).placement()


def test_device_map_under_several_processes_is_refused(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ValueError, match="--device-map: cannot be combined with tensor parallelism"):
        CommandSession(_args(device_map="auto")).placement()
    assert CommandSession(_args()).placement().tensor_parallel  # several processes: TP by itself


def test_max_memory_parses_gpu_indices_and_cpu():
    assert sd.parse_max_memory("0=20GiB, 1=20GiB,cpu=64GiB") == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    with pytest.raises(ValueError, match="given twice"):
        sd.parse_max_memory("0=1GiB,0=2GiB")


def test_only_the_first_failing_rank_reports(monkeypatch):
    """The claim is a compare-and-set: of two ranks failing, exactly one prints."""
    import torch.distributed as dist

    from sasa.distributed import env as _env

    store = dist.HashStore()
    monkeypatch.setattr(_env, "is_initialized", lambda: True)
    monkeypatch.setattr(_env, "world_size", lambda: 2)
    monkeypatch.setattr("torch.distributed.distributed_c10d._get_default_store", lambda: store)
    claims = []
    for r in (1, 0):
        monkeypatch.setattr(_env, "rank", lambda r=r: r)
        claims.append(_env.claim_report("sasa/failure/test"))
    assert claims == [True, False]
    assert _env.claim_report("sasa/failure/another") is True  # a later command reports its own failure


def test_the_score_agreement_is_max_and_keeps_nan(monkeypatch):
    """Fail closed across ranks: the highest score of any rank wins, and a NaN on one rank stays NaN."""
    from sasa.distributed import tensor_parallel

    other_rank = torch.tensor([[0.9, 0.1], [0.2, float("nan")], [0.3, 0.3]])

    def all_reduce(values, op, group):
        assert op == tensor_parallel.dist.ReduceOp.MAX and group == "tp-group"
        values.copy_(torch.maximum(values, torch.nan_to_num(other_rank, nan=float("inf"))))

    monkeypatch.setattr(tensor_parallel.dist, "all_reduce", all_reduce)
    mine = torch.tensor([[0.1, 0.2], [0.6, 0.4], [float("nan"), 0.0]])
    agreed = tensor_parallel.ScoreAgreement("tp-group")(mine)
    expected = torch.tensor([[0.9, 0.2], [0.6, float("nan")], [float("nan"), 0.3]])
    torch.testing.assert_close(agreed, expected, equal_nan=True)
    assert tensor_parallel.ScoreAgreement(None)(mine) is mine


# --------------------------------------------------------------------------- device_map (accelerate)

needs_accelerate = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None,
    reason="accelerate is not installed (the 'dist' extra): the device_map tests need it",
)


def _offloaded(path: Path, auto, offload_dir: Path, model: torch.nn.Module) -> torch.nn.Module:
    """``path`` loaded with device_map="auto" and half the model's size as the CPU budget: the
    first modules stay on the CPU, the rest (for these tiny models: the later decoder blocks, the
    final norm and the head, for LLaVA the whole language model) is offloaded to disk."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    placement = sd.Placement(device_map="auto", max_memory={"cpu": total // 2}, offload_folder=str(offload_dir))
    loaded = sd.load_pretrained(path, auto, placement=placement, dtype=torch.float32)
    assert {"cpu", "disk"} <= set(loaded.hf_device_map.values()), loaded.hf_device_map
    return loaded


@needs_accelerate
@pytest.mark.parametrize("family", ["llama", "llava"])
def test_offloaded_device_map_scores_equal_the_plain_model(workdir, tmp_path, family):
    auto = T.AutoModelForCausalLM if family == "llama" else T.AutoModelForImageTextToText
    plain = auto.from_pretrained(workdir / family, dtype=torch.float32).eval()
    model = _offloaded(workdir / family, auto, tmp_path / "offload", plain)
    head = model.get_output_embeddings()
    assert head.weight.device.type == "meta"  # offloaded: loaded by its hook only when used
    inputs = torch.load(workdir / f"{family}_inputs.pt")
    for i, (feature, scope) in enumerate((("logits", "last"), ("logits", "all"), ("hidden", "last"))):
        config = sasa.SASAConfig(safety_layer=1, fused_layer=2, feature=feature, scope=scope)
        size = head.weight.shape[0] if feature == "logits" else plain.config.get_text_config().hidden_size
        gen = torch.Generator().manual_seed(20 + i)
        probe = (torch.randn(2, size, generator=gen), torch.zeros(2))
        with sasa.apply_sasa(plain, config, probe=probe) as guard:
            want = guard.score(**inputs)
            want_features = guard.features(**inputs)
            want_out = guard.generate(**inputs, max_new_tokens=3, do_sample=False)
        with sasa.apply_sasa(model, config, probe=probe) as guard:
            got = guard.score(**inputs)
            got_features = guard.features(**inputs)
            got_out = guard.generate(**inputs, max_new_tokens=3, do_sample=False)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=f"{feature}/{scope}")
        torch.testing.assert_close(got_features, want_features, atol=ATOL, rtol=0)
        assert torch.equal(got_out.flagged, want_out.flagged) and torch.equal(got_out.sequences, want_out.sequences)
        assert head.weight.device.type == "meta", "folding the probe must not leave the head loaded"
