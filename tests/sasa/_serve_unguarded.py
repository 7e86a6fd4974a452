"""``sasa serve`` with its loader hook defeated, for the fail-closed tests (run with ``-m``).

    python -m tests.sasa._serve_unguarded silent|lying MODEL PROBE --host H --port P

``silent``: the model's process loads the model unguarded and says nothing (as if the guarded
loader never reached it). ``lying``: it loads the model unguarded but reports it guarded. Either
way every request must fail, and none may be answered by the model.
"""

from __future__ import annotations

import sys

from sasa.serve.decisions import READY
from sasa.serve.engine import SASAModelLoader
from sasa.serve.server import SASAServe


class SilentLoader(SASAModelLoader):
    def load_model_and_processor(self, model_id, on_progress=None):
        return super(SASAModelLoader, self).load_model_and_processor(model_id, on_progress=on_progress)


class LyingLoader(SASAModelLoader):
    def load_model_and_processor(self, model_id, on_progress=None):
        loaded = super(SASAModelLoader, self).load_model_and_processor(model_id, on_progress=on_progress)
        self.decisions.put((READY, "not really"))
        return loaded


class DefeatedServe(SASAServe):
    loader_class: type = SilentLoader

    def run(self, socket=None, engine_connection=None):
        # SASAServe.run imports SASAModelLoader from sasa.serve.engine when it runs: swap it there.
        import sasa.serve.engine as engine

        original = engine.SASAModelLoader
        engine.SASAModelLoader = self.loader_class
        try:
            super().run(socket=socket, engine_connection=engine_connection)
        finally:
            engine.SASAModelLoader = original


def main(argv: list[str]) -> None:
    mode, model, probe = argv[:3]
    flags = dict(zip(argv[3::2], argv[4::2]))
    DefeatedServe.loader_class = {"silent": SilentLoader, "lying": LyingLoader}[mode]
    DefeatedServe(probe=probe, decision_timeout=3.0, force_model=model, host=flags["--host"],
                  port=int(flags["--port"]), device="cpu", log_level="warning", model_timeout=-1)


if __name__ == "__main__":
    main(sys.argv[1:])
