"""Timing the guard on a model: time to first token, per-token cost and peak memory, as ratios
against the unguarded model measured in the same run. ``sasa bench``, ``sasa demo`` and
``benchmarks/bench_ttft.py`` all time with this package::

    from sasa.bench import compare_ttft
    result = compare_ttft(model, inputs, probe=probe, tokenizer=tokenizer)   # one input, two series
    print("\\n".join(result.lines()))

    from sasa.bench import Guarded, Point, Unguarded, measure, summarize, format_table
    series = [Unguarded(), Guarded(config.replace(scope="all")), Guarded(config.replace(scope="last"))]
    found = measure(model, [Point(1, 256, inputs)], series, rounds=5, new_tokens=8)
    print(format_table(summarize(found, series)))

How it measures:

- **Interleaved rounds.** Every series runs once per round, in an order rotated each round; a
  warm-up round comes first. Medians and 20th/80th percentiles per series; ratios against the
  baseline with the spread of the per-round paired ratios.
- **One call, two numbers.** Each call is ``generate(max_new_tokens=N, min_new_tokens=N)``, greedy,
  with a stopping criterion that stamps the time of every new token: the first stamp gives the
  time to first token, the gaps between stamps the per-token (decode step) cost.
- **Untimed set-up.** :class:`Guarded` applies :func:`sasa.apply_sasa` before the timed call and
  removes the guard after it; :class:`Unguarded` times ``model.generate`` with no guard applied.
- **Every row passes.** A flagged row stops after one token, which would fake the per-token cost,
  so :class:`Guarded` times a probe that never fires (:func:`passing_probe`) built with the very
  config being timed, and raises :class:`TimedRowFlagged` should a timed row be flagged anyway.
- **Busy machines are named.** :class:`LoadMonitor` reports the load average and other processes'
  CPU use; reports carry a warning when the machine was busy.

Importing this package imports only the standard library; the names below load on first use.
"""

from __future__ import annotations

from sasa._faces import lazy_exports

_EXPORTS = {
    "compare_ttft": "compare", "TTFTComparison": "compare",
    "LoadMonitor": "machine", "LoadReport": "machine", "load_average": "machine", "machine_info": "machine",
    "describe_machine": "machine",
    "Measurement": "interleave", "Point": "interleave", "measure": "interleave", "peak_memory_mib": "interleave",
    "synthetic_inputs": "prompts",
    "format_table": "report", "plot_records": "report", "summarize": "report", "write_csv": "report",
    "GenerateTiming": "series", "Guarded": "series", "Series": "series", "TimedRowFlagged": "series",
    "Unguarded": "series", "passing_probe": "series", "time_generate": "series",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
