"""The annotation tool's shared torch thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from robustvision.app.annotate.threads import on_torch_thread


def test_every_caller_runs_on_one_torch_thread():
    def where() -> str:
        torch.ones(4).sum()
        return threading.current_thread().name

    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: on_torch_thread(where), range(16)))
    assert len(names) == 1 and names.pop().startswith("robustvision-torch")
    assert on_torch_thread(lambda a, b=0: a + b, 2, b=3) == 5


def test_errors_reach_the_caller_and_nested_calls_do_not_wait_on_themselves():
    def boom():
        raise ValueError("bad click")

    with pytest.raises(ValueError, match="bad click"):
        on_torch_thread(boom)
    assert on_torch_thread(lambda: on_torch_thread(lambda: 7)) == 7
