"""``compare_ttft``: the guard's time to first token against the unguarded model, in one call.

The short form of :func:`sasa.bench.measure` for one input (what ``sasa demo`` prints): interleaved
rounds, a warm-up, medians, the spread of the paired ratios and a busy-machine warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from torch import nn

from sasa.bench.interleave import Point, measure
from sasa.bench.machine import LoadMonitor, LoadReport
from sasa.bench.report import summarize
from sasa.bench.series import Guarded, Unguarded
from sasa.config import SASAConfig

__all__ = ["TTFTComparison", "compare_ttft"]


@dataclass(frozen=True)
class TTFTComparison:
    """Result of :func:`compare_ttft` (times in milliseconds, medians over ``repeats`` rounds).

    ``ratio`` is ``guarded_ms / unguarded_ms`` (above 1: the guard's cost); ``ratio_p20`` and
    ``ratio_p80`` bound the middle of the per-round paired ratios. ``warning`` is a busy-machine
    warning line, or ``""``.
    """

    unguarded_ms: float
    guarded_ms: float
    ratio: float
    ratio_p20: float
    ratio_p80: float
    repeats: int
    batch: int
    prompt_tokens: int
    load: LoadReport

    @property
    def warning(self) -> str:
        return self.load.warning()

    def lines(self) -> list[str]:
        """Printable lines: what was timed, both times, the ratio, and the warning if any."""
        out = [f"time to first token (median of {self.repeats} interleaved rounds after a warm-up; batch "
               f"{self.batch}, {self.prompt_tokens} prompt tokens, {self.load.threads} threads):",
               f"  unguarded model.generate : {self.unguarded_ms:8.2f} ms",
               f"  guarded   guard.generate : {self.guarded_ms:8.2f} ms  ({self.ratio:.2f}x; "
               f"p20..p80 {self.ratio_p20:.2f}..{self.ratio_p80:.2f}x)"]
        if self.ratio < 1.0:
            out.append("  (below 1x: the guard does extra work, so this is noise; see the spread)")
        if self.warning:
            out.append(self.warning)
        return out


def compare_ttft(model: nn.Module, inputs: Mapping[str, Any], *, probe: Any = None,
                 config: Optional[SASAConfig] = None, tokenizer: Any = None, repeats: int = 10,
                 warmup: int = 1) -> TTFTComparison:
    """Median time to first token of ``guard.generate`` against ``model.generate`` on ``inputs``.

    ``model`` must have no guard applied: the guard is applied (untimed) for each guarded call and
    removed after it. Give ``probe`` (a ``SASAProbe``, a saved probe directory or a pair, with
    ``config`` for a pair), or ``config`` alone to time a probe that never fires. Times one new
    token, so a flagged row costs what a passed one does. Returns a :class:`TTFTComparison`.
    """
    ids = inputs.get("input_ids")
    batch, length = (int(ids.shape[0]), int(ids.shape[1])) if ids is not None else (1, 0)
    point = Point(batch, length, inputs)
    guarded = Guarded(config, probe=probe, tokenizer=tokenizer, require_pass=False, name="guarded")
    with LoadMonitor() as load:
        found = measure(model, [point], [Unguarded(), guarded], rounds=repeats, warmup=warmup, new_tokens=1,
                        memory=False, progress=False)
    rec = {r["series"]: r for r in summarize(found)}
    g = rec["guarded"]
    return TTFTComparison(rec["unguarded"]["ttft_ms"], g["ttft_ms"], g["ttft_ratio"], g["ttft_ratio_p20"],
                          g["ttft_ratio_p80"], repeats, batch, length, load.report())
