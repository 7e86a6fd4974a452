"""The ``sasa`` command line end to end, through subprocesses, on a planted signal.

A planted signal proves the plumbing learns (harmful rows carry trigger words); it is not a safety
claim. The model is the built-in stand-in saved with ``save_pretrained``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from sasa.demo.stand_in import save_default

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


def test_stand_in_demo_prints_the_table_and_both_timings():
    result = subprocess.run([sys.executable, "-m", "sasa.cli", "demo", "--stand-in", "--quiet"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "SMALL STAND-IN" in out
    assert "prompt" in out and "decision" in out and ("REFUSE" in out or "pass" in out)
    assert "AUROC" in out
    assert "unguarded model.generate" in out and "guarded   guard.generate" in out and out.count(" ms") >= 2


def test_encode_batch_pads_left_and_leaves_the_tokenizer_as_it_was():
    from sasa.data.manifest import Example, encode_batch
    from sasa.demo.stand_in import build_default

    _, tokenizer = build_default()
    tokenizer.padding_side = "right"
    batch = encode_batch(tokenizer, [Example("how do i bake bread", 0), Example("brew tea", 0)])
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1  # left-padded
    assert tokenizer.padding_side == "right"


@pytest.mark.parametrize(
    "device, needle",
    [("bogus", "--device: 'bogus' is not a device"), ("meta", "--device: meta holds no weights"),
     ("cuda:0" if not __import__("torch").cuda.is_available() else "xla", "--device")],
)
def test_bad_devices_are_one_line_errors(workspace, device, needle):
    root, model_dir, manifest = workspace
    result = run_cli("calibrate", "--model", str(model_dir), "--data", str(manifest), "--safety-layer", "1",
                     "--fused-layer", "2", "--out", str(root / "dev"), "--device", device, check=False)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_score_refuses_to_overwrite_its_manifest(workspace):
    root, model_dir, manifest = workspace
    result = run_cli("score", "--model", str(model_dir), "--probe", "p", "--data", str(manifest),
                     "--out", str(manifest), check=False)
    assert result.returncode == 2 and "--out: " in result.stderr and "is the --data input" in result.stderr
    assert manifest.read_text().count("\n") == ROWS  # untouched


def test_score_refuses_image_rows_on_a_text_only_model(workspace):
    root, model_dir, manifest = workspace
    probe_dir = root / "probe"
    if not probe_dir.exists():
        pytest.skip("needs the calibrate test's probe")
    (root / "pic.png").write_bytes(b"\x89PNG")
    rows = root / "with_image.jsonl"
    rows.write_text('{"prompt": "how do i bake bread", "label": 0}\n'
                    '{"prompt": "what is in this picture", "label": 1, "image": "pic.png"}\n')
    result = run_cli("score", "--model", str(model_dir), "--probe", str(probe_dir), "--data", str(rows), check=False)
    assert result.returncode == 2 and "line 2: row has an image" in result.stderr and "text-only" in result.stderr


def test_calibrate_refuses_an_unrelated_output_directory_before_working(workspace, tmp_path):
    root, model_dir, manifest = workspace
    (tmp_path / "thesis.tex").write_text("mine")
    result = run_cli("calibrate", "--model", str(model_dir), "--data", str(manifest), "--safety-layer", "1",
                     "--fused-layer", "2", "--out", str(tmp_path), check=False)
    assert result.returncode == 2 and "is not empty and holds no sasa probe" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_a_hub_id_gets_a_download_hint():
    result = run_cli("score", "--model", "llava-hf/llava-1.5-7b-hf", "--probe", "p", "--data", "d", check=False)
    assert result.returncode == 2 and "looks like a Hugging Face Hub id" in result.stderr and "--local-dir" in result.stderr


def test_version_and_help_show_defaults():
    import sasa_kernels

    assert run_cli("--version").stdout.strip() == f"sasa {sasa_kernels.__version__}"
    text = run_cli("calibrate", "--help").stdout
    assert "(default: last)" in text and "(default: 0.05)" in text and "(default: 8)" in text
    assert "--batch-size" not in run_cli("generate", "--help").stdout


def test_cli_choice_lists_follow_the_config():
    from sasa import config
    from sasa.cli import flags

    assert flags.SCOPES == config.SCOPES and flags.FEATURES == config.FEATURES and flags.MODES == config.MODES


def test_calibrate_without_matplotlib_still_saves_the_probe(workspace, tmp_path):
    root, model_dir, manifest = workspace
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('matplotlib is blocked in this test')\n")
    env = dict(__import__("os").environ)
    env["PYTHONPATH"] = f"{blocker}:{env.get('PYTHONPATH', '')}"
    out_dir = tmp_path / "probe"
    result = subprocess.run([sys.executable, "-m", "sasa.cli", "calibrate", "--model", str(model_dir), "--data",
                             str(manifest), "--safety-layer", "1", "--fused-layer", "4", "--out", str(out_dir),
                             "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no plots: matplotlib missing" in result.stdout and "matplotlib is not installed" in result.stderr
    assert (out_dir / "probe.safetensors").is_file() and not (out_dir / "roc.png").exists()


def test_unavailable_scores_are_null_in_the_jsonl(workspace, monkeypatch, capsys):
    import torch

    from sasa import cli
    from sasa.guard.apply import SASAGuard

    root, model_dir, manifest = workspace
    probe_dir = root / "probe"
    if not probe_dir.exists():
        pytest.skip("needs the calibrate test's probe")
    monkeypatch.setattr(SASAGuard, "score", lambda self, **inputs: torch.full((inputs["input_ids"].shape[0], 1), float("nan")))
    out = root / "nan_scores.jsonl"
    assert cli.main(["score", "--model", str(model_dir), "--probe", str(probe_dir), "--data", str(manifest),
                     "--out", str(out), "--quiet"]) == 0
    text = out.read_text()
    assert "NaN" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert all(r["score"] is None and r["flagged"] for r in rows)  # unavailable: flagged (fail closed)


def test_generate_names_the_probe_that_fired(workspace, monkeypatch, capsys):
    import torch

    from sasa import cli
    from sasa.guard.apply import SASAGenerateOutput, SASAGuard
    from sasa.probe.sasa_probe import SASAProbe

    root, model_dir, _ = workspace
    probe_dir = root / "probe"
    if not probe_dir.exists():
        pytest.skip("needs the calibrate test's probe")
    real = SASAProbe.load(probe_dir)
    two = SASAProbe(weight=real.weight.repeat(2, 1), bias=real.bias.repeat(2), threshold=torch.tensor([0.9, 0.2]),
                    categories=["any", "weapons"], feature=real.feature, config=real.config,
                    fingerprint=real.fingerprint, prompt_format=real.prompt_format)
    two.save(root / "two_probes")

    def fake_generate(self, **kwargs):
        ids = kwargs["input_ids"]
        return SASAGenerateOutput(ids, torch.tensor([True]), torch.tensor([[0.3, 0.7]]), self.config.refusal_text)

    monkeypatch.setattr(SASAGuard, "generate", fake_generate)
    assert cli.main(["generate", "--model", str(model_dir), "--probe", str(root / "two_probes"),
                     "--prompt", "how do i bake bread"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("[REFUSED; weapons 0.700]") and "any" not in line.split("]")[0]
