"""What ``sasa locate`` found: per-layer measures, the grid, the recommendation; JSON, text, plots."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from sasa._reporting import fmt, json_safe
from sasa._types import PathLike


@dataclass(frozen=True)
class LayerStats:
    """Measures at decoder block ``layer`` (0-based; ``H`` after that block), last prompt token.

    ``None`` where a measure does not apply (``fusion_similarity`` without image/text-twin rows,
    ``refusal_rate`` when the vocabulary holds no refusal token).
    """

    layer: int
    probe_auroc: float
    cosine_gap: float
    fusion_similarity: Optional[float]
    refusal_rate: Optional[float]


@dataclass(frozen=True)
class GridCell:
    """Held-out AUROC of a SASA probe (``scope="last"``) for one ``(safety_layer, fused_layer)``.

    ``score_gap`` is the held-out mean probability of harmful rows minus that of benign rows
    (breaks AUROC ties: a wider gap is a more confident separation).
    """

    safety_layer: int
    fused_layer: int
    auroc: float
    score_gap: float


@dataclass
class LocateResult:
    """Everything :func:`sasa.locate.locate` measured (``to_dict`` is ``locate.json``)."""

    layers: list[LayerStats]
    grid: list[GridCell]
    recommended: tuple[int, int]
    model_fingerprint: dict[str, Any]
    counts: dict[str, int]
    settings: dict[str, Any]
    cost: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    @property
    def recommended_cell(self) -> GridCell:
        s, f = self.recommended
        return next(c for c in self.grid if (c.safety_layer, c.fused_layer) == (s, f))

    def to_dict(self) -> dict[str, Any]:
        s, f = self.recommended
        return json_safe({
            "layers": [asdict(layer) for layer in self.layers],
            "grid": [asdict(cell) for cell in self.grid],
            "recommended": {"safety_layer": s, "fused_layer": f, "auroc": self.recommended_cell.auroc},
            "model_fingerprint": self.model_fingerprint,
            "counts": self.counts,
            "settings": self.settings,
            "cost": self.cost,
            "notes": self.notes,
            "plots": [p.name for p in self.plots],
        })

    def save(self, directory: PathLike) -> Path:
        """Write ``locate.json``, ``layers.png`` and ``grid.png`` into ``directory`` (created).

        ``locate.json`` is written last and the plots replaced before it (:func:`sasa._reporting.publish_report`):
        an interrupted save leaves no ``locate.json`` beside plots of another run."""
        from sasa._reporting import publish_report
        from sasa.locate.plots import plot_grid, plot_layers

        directory = Path(directory)
        self.plots = [directory / "layers.png", directory / "grid.png"]  # locate.json names them
        writers = [
            ("layers.png", lambda p: plot_layers(self, p)),
            ("grid.png", lambda p: plot_grid(self, p)),
            ("locate.json", lambda p: p.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")),
        ]
        return publish_report(directory, writers, complete="locate.json")[-1]

    def calibrate_command(self, model: str = "MODEL_DIR", data: str = "DATA.jsonl", out: str = "PROBE_DIR") -> str:
        """The ``sasa calibrate`` command line for the recommended pair, with locate's settings."""
        s, f = self.recommended
        st = self.settings
        args = ["sasa", "calibrate", "--model", model, "--data", data, "--safety-layer", str(s),
                "--fused-layer", str(f), "--scope", "last", "--feature", st["feature"], "--mode", st["mode"]]
        if st["mode"] != "replace":
            args += ["--coef", repr(st["coef"])]
        if st.get("raw_prompt"):
            args.append("--raw-prompt")
        args += ["--out", out]
        return " ".join(shlex.quote(a) for a in args)

    def summary(self) -> str:
        """The printed report: per-layer table, grid, recommendation, cost."""
        c = self.counts
        lines = [f"{c['rows']} rows ({c['harmful']} harmful / {c['benign']} benign), {c['image_rows']} with an image, "
                 f"{c['twin_pairs']} image/text-twin pairs; {len(self.layers)} decoder blocks (0-based)",
                 "",
                 f"{'block':>5}  {'probe_auroc':>11}  {'cosine_gap':>10}  {'fusion_sim':>10}  {'refusal_rate':>12}"]
        s, f = self.recommended
        for layer in self.layers:
            mark = "  <- safety" if layer.layer == s else "  <- fused" if layer.layer == f else ""
            lines.append(f"{layer.layer:>5}  {fmt(layer.probe_auroc):>11}  {fmt(layer.cosine_gap):>10}  "
                         f"{fmt(layer.fusion_similarity):>10}  {fmt(layer.refusal_rate):>12}{mark}")
        lines += ["", f"grid: held-out AUROC of a SASA probe (scope=last, feature={self.settings['feature']}, "
                      f"mode={self.settings['mode']}); rows s = safety block, columns f = fused block"]
        lines += _grid_table(self.grid, self.recommended)
        cell = self.recommended_cell
        lines += ["", f"recommended: safety_layer={s}, fused_layer={f} (held-out AUROC {cell.auroc:.3f}, "
                      f"score gap {cell.score_gap:.3f})"]
        lines += [f"note: {note}" for note in self.notes]
        k = self.cost
        lines.append(f"cost: {k['normal_passes']} normal passes, {k['augmented_passes']} augmented one-token passes "
                     f"({k['augmented_block_calls']} block calls), {k['probe_fits']} probe fits; {k['wall_s']:.1f} s")
        return "\n".join(lines)


def _grid_table(grid: list[GridCell], recommended: tuple[int, int]) -> list[str]:
    safety = sorted({c.safety_layer for c in grid})
    fused = sorted({c.fused_layer for c in grid})
    value = {(c.safety_layer, c.fused_layer): c.auroc for c in grid}
    lines = ["      " + "".join(f"{'f=' + str(f):>8}" for f in fused)]
    for s in safety:
        cells = []
        for f in fused:
            v = value.get((s, f))
            text = "" if v is None else fmt(v) + ("*" if (s, f) == recommended else " ")
            cells.append(f"{text:>8}")
        lines.append(f"{'s=' + str(s):<6}" + "".join(cells))
    return lines
