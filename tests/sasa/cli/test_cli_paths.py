"""``sasa.cli.paths``: no command may write over its own inputs (``--out``/``--doc`` against
``--model``, ``--probe``, ``--data``, ...), checked once in ``sasa.cli.main`` for every command.

Each refusal test would, without the check, run the command and overwrite the input (exit 0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sasa.calibrate.run import calibrate
from sasa.cli.paths import collision
from sasa.config import SASAConfig
from sasa.data.manifest import read_manifest
from sasa.demo.stand_in import build_default
from tests.sasa._locate_eval_data import one_error_line, planted_rows, run_main, write_jsonl


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A saved stand-in model, a probe calibrated for it, and a planted manifest."""
    root = tmp_path_factory.mktemp("paths")
    model, tokenizer = build_default()
    data = write_jsonl(root / "data.jsonl", planted_rows(40, seed=3))
    probe, _ = calibrate(model, tokenizer, read_manifest(data), SASAConfig(safety_layer=1, fused_layer=4, scope="last"),
                         batch_size=20, progress=False)
    probe.save(root / "probe")
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root, root / "model", root / "probe", data


def digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the SHA-256 of its bytes (to prove nothing changed)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_score_out_inside_the_probe_directory_is_refused(inputs, capsys):
    root, model, probe, data = inputs
    before = digest(probe)
    target = probe / "probe.safetensors"
    code, _, err = run_main(["score", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--out", str(target), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {target} is inside the --probe directory {probe}")
    assert digest(probe) == before


def test_score_out_on_the_model_config_is_refused(inputs, capsys):
    root, model, probe, data = inputs
    before = digest(model)
    code, _, err = run_main(["score", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--out", str(model / "config.json"), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, "is inside the --model directory")
    assert digest(model) == before


def test_a_symlink_does_not_hide_the_probe_directory(inputs, tmp_path, capsys):
    root, model, probe, data = inputs
    before = digest(probe)
    link = tmp_path / "scores.jsonl"
    link.symlink_to(probe / "sasa_config.json")
    code, _, err = run_main(["score", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--out", str(link), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {link} is inside the --probe directory")
    assert digest(probe) == before


def test_eval_out_equal_to_the_probe_directory_is_refused(inputs, capsys):
    root, model, probe, data = inputs
    before = digest(probe)
    code, _, err = run_main(["eval", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--out", str(probe), "--max-new-tokens", "1", "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {probe} is the --probe input {probe}")
    assert digest(probe) == before


def test_eval_refuses_a_manifest_where_it_writes_its_report(inputs, tmp_path, capsys):
    root, model, probe, data = inputs
    manifest = tmp_path / "generations.jsonl"  # eval writes generations.jsonl into --out
    manifest.write_bytes(data.read_bytes())
    code, _, err = run_main(["eval", "--model", str(model), "--probe", str(probe), "--data", str(manifest),
                             "--out", str(tmp_path), "--max-new-tokens", "1", "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {tmp_path} is the directory the command writes into, and holds the --data input")
    assert manifest.read_bytes() == data.read_bytes()


@pytest.mark.parametrize("command", ["calibrate", "locate", "bench", "organism efficacy --doc",
                                     "organism phenotype --json"])
def test_every_command_that_writes_checks_its_outputs(inputs, capsys, command):
    root, model, probe, data = inputs
    before = digest(model)
    argv = {
        "calibrate": ["calibrate", "--model", str(model), "--data", str(data), "--safety-layer", "1",
                      "--fused-layer", "4", "--out", str(model / "probe")],
        "locate": ["locate", "--model", str(model), "--data", str(data), "--out", str(model)],
        "bench": ["bench", "--model", str(model), "--probe", str(probe), "--prompt-lengths", "8", "--rounds", "1",
                  "--scopes", "last", "--new-tokens", "2", "--out", str(model / "bench")],
        "organism efficacy --doc": ["organism", "efficacy", "--model", str(model), "--out", str(root / "efficacy"),
                                    "--doc", str(model / "config.json")],
        "organism phenotype --json": ["organism", "phenotype", "--model", str(model), "--data", str(data),
                                      "--json", str(model / "config.json")],
    }[command]
    code, _, err = run_main([*argv, "--quiet"], capsys)
    assert code == 2
    flag = command.split()[-1] if command.split()[-1].startswith("--") else "--out"
    one_error_line(err, f"{flag}: ")
    assert "--model" in err and str(model) in err
    assert digest(model) == before


def test_an_offload_folder_inside_the_model_directory_is_refused(inputs, capsys):
    root, model, probe, data = inputs
    code, _, err = run_main(["score", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--device-map", "auto", "--offload-folder", str(model), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--offload-folder: {model} is the --model input {model}")


def test_demo_out_may_not_be_the_shipped_probe(tmp_path, monkeypatch, capsys):
    import shutil

    import sasa.organism

    shipped = tmp_path / "probe"  # a copy stands in for the package's probe: the old code replaced it
    shutil.copytree(sasa.organism.PROBE_DIR, shipped)
    monkeypatch.setattr(sasa.organism, "PROBE_DIR", shipped)
    before = digest(shipped)
    code, _, err = run_main(["demo", "--stand-in", "--out", str(shipped), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {shipped} is the shipped organism probe input {shipped}")
    assert digest(shipped) == before


def test_a_symlink_loop_is_one_line(inputs, tmp_path, capsys):
    root, model, probe, data = inputs
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = run_main(["score", "--model", str(model), "--probe", str(probe), "--data", str(data),
                             "--out", str(loop / "scores.jsonl"), "--quiet"], capsys)
    assert code == 2
    one_error_line(err, f"--out: {loop / 'scores.jsonl'} cannot be resolved")


def test_collision_rules(tmp_path):
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    manifest = out / "test.jsonl"
    manifest.write_text("{}\n")
    assert collision(manifest, manifest, ()) == "same"
    assert collision(out / "sub" / "x.json", out / "sub", ()) == "inside"
    assert collision(out, manifest, None) == "holds"  # a command that does not say what it writes: anything
    assert collision(out, manifest, ("eval.json",)) is None  # it writes only eval.json there
    assert collision(out, manifest, ("test.jsonl",)) == "holds"
    assert collision(tmp_path / "elsewhere", manifest, None) is None
