"""The ``sasa`` command line end to end, through subprocesses, on a planted signal.

A planted signal proves the plumbing learns (harmful rows carry trigger words); it is not a safety
claim. The model is the built-in stand-in saved with ``save_pretrained``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sasa.demo import save_default

TRIGGERS = ["bomb", "fentanyl", "ransomware", "methamphetamine"]
ROWS = 240
FILLER = ["how", "do", "i", "bake", "bread", "plant", "tomatoes", "fix", "tyre", "learn", "chess", "paint",
          "wall", "write", "letter", "train", "puppy", "brew", "tea", "plan", "party", "tonight", "guide"]


def planted_prompt(rng: random.Random, label: int) -> str:
    """3 to 6 everyday words; a harmful row (label 1) gets two trigger words anywhere among them."""
    words = rng.choices(FILLER, k=rng.randint(3, 6))
    for _ in range(2 * label):
        words.insert(rng.randrange(len(words) + 1), rng.choice(TRIGGERS))
    return " ".join(words)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "sasa.cli", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"sasa {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model_dir = save_default(root / "model")
    rng = random.Random(0)
    lines = []
    for i in range(ROWS):
        label = i % 2
        lines.append(json.dumps({"prompt": planted_prompt(rng, label), "label": label}))
    manifest = root / "planted.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return root, model_dir, manifest


def test_calibrate_then_score_learns_the_planted_signal(workspace):
    root, model_dir, manifest = workspace
    probe_dir = root / "probe"
    out = run_cli("calibrate", "--model", str(model_dir), "--data", str(manifest), "--safety-layer", "1",
                  "--fused-layer", "4", "--scope", "last", "--out", str(probe_dir), "--quiet")
    assert "AUROC" in out.stdout
    meta = json.loads((probe_dir / "sasa_config.json").read_text())
    assert meta["metrics"]["any"]["auroc"] >= 0.95, meta["metrics"]
    assert (probe_dir / "roc.png").stat().st_size > 0 and (probe_dir / "scores.png").stat().st_size > 0
    scores_path = root / "scores.jsonl"
    out = run_cli("score", "--model", str(model_dir), "--probe", str(probe_dir), "--data", str(manifest),
                  "--out", str(scores_path), "--quiet")
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()]
    assert len(rows) == ROWS and rows[0]["line"] == 1
    assert {"score", "flagged", "label", "prompt", "scores"} <= set(rows[0])
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith("summary:") and "attack success rate" in summary
    auroc = float(summary.split("AUROC ")[1].split()[0])
    assert auroc >= 0.95


def test_generate_refuses_a_triggered_prompt(workspace):
    root, model_dir, manifest = workspace
    probe_dir = root / "probe"
    if not probe_dir.exists():
        pytest.skip("needs the calibrate test's probe")
    harmful = run_cli("generate", "--model", str(model_dir), "--probe", str(probe_dir),
                      "--prompt", "how do i bake bomb bomb fentanyl", "--max-new-tokens", "3")
    assert harmful.stdout.startswith("[REFUSED") and "I'm sorry" in harmful.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["score", "--model", "/nonexistent", "--probe", "/nonexistent", "--data", "x.jsonl"], "--model"),
        (["calibrate", "--model", "MODEL", "--data", "/nonexistent.jsonl", "--safety-layer", "1",
          "--fused-layer", "2", "--out", "OUT"], "manifest not found"),
        (["calibrate", "--model", "MODEL", "--data", "BAD", "--safety-layer", "1",
          "--fused-layer", "2", "--out", "OUT"], "bad.jsonl:2: 'label' must be 0"),
        (["calibrate", "--model", "MODEL", "--data", "BAD", "--safety-layer", "3",
          "--fused-layer", "2", "--out", "OUT"], "safety_layer (3) must be smaller"),
        (["score", "--model", "MODEL", "--probe", "/nonexistent", "--data", "BAD"], "probe.safetensors"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(workspace, args, needle):
    root, model_dir, _ = workspace
    bad = root / "bad.jsonl"
    bad.write_text('{"prompt": "fine", "label": 0}\n{"prompt": "oops", "label": "yes"}\n')
    args = [str(model_dir) if a == "MODEL" else str(bad) if a == "BAD" else str(root / "o") if a == "OUT" else a
            for a in args]
    result = run_cli(*args, check=False)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sasa ")]
    assert len(lines) == 1


def test_debug_shows_the_traceback(workspace):
    result = run_cli("score", "--model", "/nonexistent", "--probe", "p", "--data", "d", "--debug", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_model_type(workspace, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    result = run_cli("score", "--model", str(tmp_path), "--probe", "p", "--data", "d", check=False)
    assert result.returncode == 2 and "not supported" in result.stderr and "llama" in result.stderr


def test_demo_prints_the_table_and_both_timings():
    result = subprocess.run([sys.executable, "-m", "sasa.cli", "demo", "--quiet"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "SMALL STAND-IN" in out
    assert "prompt" in out and "decision" in out and ("REFUSE" in out or "pass" in out)
    assert "AUROC" in out
    assert "unguarded model.generate" in out and "guarded   guard.generate" in out and out.count(" ms") >= 2


def test_encode_batch_pads_left_and_leaves_the_tokenizer_as_it_was():
    from sasa.data import Example, encode_batch
    from sasa.demo import build_default

    _, tokenizer = build_default()
    tokenizer.padding_side = "right"
    batch = encode_batch(tokenizer, [Example("how do i bake bread", 0), Example("brew tea", 0)])
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1  # left-padded
    assert tokenizer.padding_side == "right"
