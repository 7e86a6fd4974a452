"""``sasa serve``: transformers serve's OpenAI-compatible HTTP server, guarded by a SASA probe.

    sasa serve --model DIR --probe PROBE_DIR --port 8000

The server is transformers' own (``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``,
streaming or not, images as it takes them); the model's process guards its model
(:mod:`sasa.serve.engine`), a refused request answers the probe's refusal text with
``finish_reason: "content_filter"`` (:mod:`sasa.serve.server`), and the decision crosses from the
model's process to the API server beside the answer (:mod:`sasa.serve.decisions`). Needs the
``serve`` extra and transformers' process-per-model server (5.25; 5.17 is refused by name).

Only :mod:`sasa.cli.commands.serve` is imported by ``sasa --help`` (standard library only); the other
modules import transformers' server when used.
"""
