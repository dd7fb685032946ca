"""The one undo history: the predictor's steps, whose cursor the annotation tool's undo/redo moves."""

from __future__ import annotations

import numpy as np
import pytest

from robustvision.app.annotate.controller import AnnotationProject, ClickSession
from robustvision.segmentation.interactive import Click, ClickHistory, Step

A, B, C, D = Click(48, 64, True), Click(10, 100, False), Click(40, 70, True), Click(60, 50, True)


def _step(*clicks: Click, value: float = 0.0) -> Step:
    return Step(tuple(clicks), np.full((2, 2), value, np.float32))


def test_history_cursor_moves_without_touching_the_steps():
    h = ClickHistory()
    assert h.current is None and h.clicks == () and h.probs is None and not h.can_undo and not h.can_redo
    h.push(_step(A, value=0.1))
    h.push(_step(A, B, value=0.2))
    assert len(h) == 2 and h.cursor == 2 and h.clicks == (A, B) and h.can_undo and not h.can_redo
    assert h.undo().clicks == (A,) and h.can_redo and len(h) == 2
    assert h.undo() is None and h.undo() is None and h.cursor == 0  # undo past the first click stays at none
    assert h.redo().clicks == (A,) and h.redo().clicks == (A, B) and h.redo().clicks == (A, B)
    h.undo()
    h.push(_step(A, C, value=0.3))  # a new answer after an undo drops the undone step
    assert len(h) == 2 and h.clicks == (A, C) and not h.can_redo
    h.clear()
    assert len(h) == 0 and h.current is None


def test_continue_from_finds_the_longest_strict_prefix_and_drops_the_rest():
    h = ClickHistory()
    for n in range(1, 4):
        h.push(_step(*(A, B, C)[:n]))
    assert h.continue_from([A, B, C, D]).clicks == (A, B, C) and len(h) == 3
    assert h.continue_from([A, B, D]).clicks == (A, B) and len(h) == 2 and h.cursor == 2
    assert h.continue_from([A, B]).clicks == (A,) and len(h) == 1  # the same clicks again: recomputed
    assert h.continue_from([C]) is None and len(h) == 0
    h.push(_step(A))
    h.push(_step(A, B))
    h.undo()
    assert h.continue_from([A, C]).clicks == (A,) and len(h) == 1  # after an undo: the step shown


@pytest.fixture(params=["edgeflow", "edgeflow_noedge", "grabcut"])
def session(request, folder):
    project = AnnotationProject(folder, backend=request.param)
    s = ClickSession(project, backend=request.param)
    s.open("disc.png")
    return s


def _fresh(session: ClickSession) -> ClickSession:
    other = ClickSession(session.project, backend=session.backend)
    other.open("disc.png")
    return other


def test_undo_then_a_click_equals_the_clicks_without_the_detour(session):
    assert session.history is session.predictor.history  # one history object, the predictor's
    for c in (A, B, C):
        session.click(c.x, c.y, c.is_positive)
    session.undo()
    session.undo()
    assert session.history.cursor == 1 and len(session.history) == 3  # undo only moved the cursor
    detour = session.click(D.x, D.y, D.is_positive).copy()
    assert session.clicks == [A, D] and len(session.history) == 2 and not session.can_redo

    straight = _fresh(session)
    straight.click(A.x, A.y, A.is_positive)
    expected = straight.click(D.x, D.y, D.is_positive)
    np.testing.assert_array_equal(detour, expected)
    # the steps the next click continues from match too (EdgeFlow's edge map, the zoom region)
    got, want = session.history.current, straight.history.current
    assert got.roi == want.roi
    if want.aux is not None:
        np.testing.assert_array_equal(got.aux, want.aux)


def test_redo_restores_the_exact_map_and_the_next_click_continues_from_it(session):
    session.click(A.x, A.y, A.is_positive)
    second = session.click(B.x, B.y, B.is_positive)
    kept = second.copy()
    assert session.undo() is session.history.current.probs and session.clicks == [A]
    assert session.redo() is second  # the kept step itself, no new prediction
    np.testing.assert_array_equal(session.probs, kept)
    after_redo = session.click(C.x, C.y, C.is_positive).copy()

    straight = _fresh(session)
    for c in (A, B):
        straight.click(c.x, c.y, c.is_positive)
    np.testing.assert_array_equal(straight.click(C.x, C.y, C.is_positive), after_redo)


def test_one_record_per_click(session):
    h, w = session.project.image_size("disc.png")
    for c in (A, B, C):
        probs = session.click(c.x, c.y, c.is_positive)
    with pytest.raises(ValueError, match="read-only"):
        probs[0, 0] = 1.0  # the map is the history's record
    maps_per_step = 2 if session.backend.startswith("edgeflow") else 1  # EdgeFlow keeps what the next click feeds
    assert [s.nbytes() for s in session.history._steps] == [maps_per_step * h * w * 4] * 3
    session.reset()
    assert len(session.history) == 0 and session.probs is None and session.clicks == []
