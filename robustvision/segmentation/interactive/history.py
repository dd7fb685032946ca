"""One undo history per object: the steps a predictor answered, and a cursor that undo and redo move.

Every :class:`~robustvision.segmentation.interactive.predictor.Predictor` owns one :class:`ClickHistory`. A
:class:`Step` is the single record of one interaction: the clicks so far, the probability map shown, and what the
next click continues from (EdgeFlow's edge map or the ablation's previous mask, and the zoom-in region). The
annotation tool's undo/redo only moves the cursor (:meth:`ClickHistory.undo`, :meth:`ClickHistory.redo`); the
predictor reads the step under the cursor when the next click comes. No second copy of any map is kept.

Example:
    >>> import numpy as np
    >>> from robustvision.segmentation.interactive import Click
    >>> h = ClickHistory()
    >>> a, b = Click(1, 1, True), Click(2, 2, False)
    >>> h.push(Step((a,), np.zeros((4, 4), np.float32)))
    >>> h.push(Step((a, b), np.ones((4, 4), np.float32)))
    >>> h.undo().clicks == (a,), h.can_redo, float(h.redo().probs.max())
    (True, True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robustvision.segmentation.interactive.clicks import Click

Box = tuple[int, int, int, int]  # (rmin, rmax, cmin, cmax), inclusive


@dataclass(frozen=True, eq=False)
class Step:
    """One answered interaction.

    Attributes:
        clicks: every click on the object up to this step, in order.
        probs: the ``H x W`` float32 probabilities in [0, 1] shown for these clicks (read-only).
        aux: what the next click feeds back (``H x W`` float32): the predicted edge map (EdgeFlow) or the
            unclipped probabilities (previous-mask models); None for predictors that read ``probs`` instead.
        roi: the zoom-in region the next click may keep (learned predictors), None for the whole image.
    """

    clicks: tuple[Click, ...]
    probs: np.ndarray
    aux: np.ndarray | None = None
    roi: Box | None = None

    def nbytes(self) -> int:
        """Bytes of the maps this step holds (a map shared by ``probs`` and ``aux`` counts once)."""
        maps = {id(m): m for m in (self.probs, self.aux) if m is not None}
        return sum(m.nbytes for m in maps.values())


class ClickHistory:
    """The steps of the object in progress, oldest first, and a cursor: the steps before it are shown.

    The steps always form one chain (each extends the clicks of the one before). Undo moves the cursor back and
    redo forward, without touching a map; :meth:`push` (a new answer) drops the steps after the cursor, as any
    editor's redo stack is dropped by a new edit.
    """

    def __init__(self) -> None:
        self._steps: list[Step] = []
        self._cursor = 0

    def __len__(self) -> int:
        """Steps kept, the undone ones (which redo brings back) included."""
        return len(self._steps)

    @property
    def cursor(self) -> int:
        """How many steps are shown (0: none, the object has no clicks)."""
        return self._cursor

    @property
    def current(self) -> Step | None:
        """The step shown, or None before the first click (or after undoing every click)."""
        return self._steps[self._cursor - 1] if self._cursor else None

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The clicks of the step shown (empty before the first click)."""
        step = self.current
        return step.clicks if step is not None else ()

    @property
    def probs(self) -> np.ndarray | None:
        """The probability map shown, or None before the first click."""
        step = self.current
        return step.probs if step is not None else None

    @property
    def can_undo(self) -> bool:
        """Whether a step is shown that undo can take back."""
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        """Whether an undone step is kept that redo can bring back."""
        return self._cursor < len(self._steps)

    def undo(self) -> Step | None:
        """Step back one click; returns the step now shown (None: no clicks left)."""
        if self._cursor:
            self._cursor -= 1
        return self.current

    def redo(self) -> Step | None:
        """Bring back the last undone step; returns the step now shown."""
        if self._cursor < len(self._steps):
            self._cursor += 1
        return self.current

    def clear(self) -> None:
        """Forget every step (a new object)."""
        self._steps.clear()
        self._cursor = 0

    def continue_from(self, clicks: Sequence[Click]) -> Step | None:
        """The latest kept step whose clicks are a strict prefix of ``clicks``; the steps after it are dropped.

        This is the step a prediction for ``clicks`` continues from: after an undo it is the step shown, so the
        next click continues exactly where the object stood; a caller that passes a shorter click list (the NoC
        loop, a script) is matched the same way. None when no kept step is a prefix (a first click).
        """
        key = tuple(clicks)
        while self._steps:
            prefix = self._steps[-1].clicks
            if len(prefix) < len(key) and key[: len(prefix)] == prefix:
                break
            self._steps.pop()
        self._cursor = len(self._steps)
        return self._steps[-1] if self._steps else None

    def push(self, step: Step) -> None:
        """Record a new answer after the step shown; the undone steps after the cursor are dropped."""
        del self._steps[self._cursor :]
        self._steps.append(step)
        self._cursor = len(self._steps)
