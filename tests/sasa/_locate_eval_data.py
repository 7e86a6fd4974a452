"""Manifests for the ``locate`` / ``eval`` tests: planted signals of chosen strength, written as JSONL.

A planted signal proves the plumbing measures what it should (harmful rows carry trigger words);
it is not a safety claim.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

from tests.sasa.cli.test_cli import FILLER, TRIGGERS


def planted_rows(n: int, *, seed: int, trigger_rate: float = 1.0, triggers: int = 2) -> list[dict[str, Any]]:
    """``n`` rows alternating benign/harmful; a harmful row gets ``triggers`` trigger words with
    probability ``trigger_rate`` (below 1, some harmful rows look benign: a weaker signal)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(3, 6))
        if label and rng.random() < trigger_rate:
            for _ in range(triggers):
                words.insert(rng.randrange(len(words) + 1), rng.choice(TRIGGERS))
        rows.append({"prompt": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_main(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``sasa.cli.main(args)`` in-process: (exit code, stdout, stderr)."""
    from sasa.cli.app import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, needle: Optional[str] = None) -> str:
    """The single ``sasa ...: error:`` line of ``err`` (asserting there is exactly one, no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("sasa ")]
    assert len(lines) == 1, err
    if needle is not None:
        assert needle in lines[0], lines[0]
    return lines[0]
