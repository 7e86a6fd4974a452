"""The ``scope="last"`` augmented pass riding along inside the normal forward.

The augmented token needs, at block ``j > f``, only what the normal pass has already produced when
it leaves block ``j`` (that block's arguments, keys and values). So instead of running blocks
``f+1..L-1`` for the token after the forward, a :class:`Ride` runs block ``j`` for it right after
the normal pass leaves block ``j``, while the block's weights are still in the processor's cache:
the same arithmetic, done when the weights are near. The normal tokens' computation is not touched
at all (nothing is added to their tensors, so their results stay bit-identical; appending the token
to the normal pass instead would change the shapes of every matrix product, and with them the
rounding of the normal rows: see docs/method.md section 4).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from sasa.guard.augment import AugmentedPass, OneTokenPass
from sasa.guard.capture import Recorder


class Ride:
    """Called by the recorder after every block ``>= f`` of the normal forward (one call's state).

    Errors are kept, not raised, so the normal forward (the prefill of ``generate``) goes on; the
    guard then fails closed on :meth:`result`.
    """

    def __init__(self, augment: AugmentedPass, recorder: Recorder, last_pos: Tensor):
        self._augment = augment
        self._recorder = recorder
        self._last_pos = last_pos
        self._pass: Optional[OneTokenPass] = None
        self._busy = False  # the token's own block calls fire the same hooks: ignore them
        self.error: Optional[BaseException] = None

    def __call__(self, idx: int) -> None:
        if self._busy or self.error is not None or idx < self._augment.fused_layer:
            return
        self._busy = True
        try:
            if self._pass is None:
                if idx != self._augment.fused_layer:
                    raise RuntimeError(f"decoder block {idx} ran before the fused block {self._augment.fused_layer}")
                self._pass = self._augment.start(self._recorder.result, self._last_pos)
            else:
                self._pass.step(idx)
        except Exception as err:  # noqa: BLE001 - kept for result(): the forward itself must go on
            self.error = err
        finally:
            self._busy = False

    def release(self) -> None:
        """Let go of the normal pass's states (hidden states, recorded keys and values): after the
        prefill they would otherwise stay alive for the whole generation (the prefill's keys and
        values of blocks s+1..L-1 are replaced in the cache by each decode step's concatenation)."""
        self._pass = None

    def result(self) -> Tensor:
        """The token's pre-norm state after the last block, ``[B, d]``; raises if the ride failed."""
        if self.error is not None:
            raise RuntimeError(f"the augmented pass failed inside the normal forward: {self.error!r}") from self.error
        if self._pass is None or not self._pass.done:
            raise RuntimeError("the normal forward did not run every decoder block after the fused block")
        h = self._pass.h[:, 0]
        self.release()
        return h
