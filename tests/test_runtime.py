"""Process-level helpers: the shared torch thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from robustvision.runtime import on_torch_thread, shared_data_dir


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


def test_a_missing_extra_names_its_install():
    from robustvision.runtime import require_extra

    with pytest.raises(ModuleNotFoundError, match=r"pip install 'robustvision\[physical\]'"):
        require_extra("no_such_module_for_robustvision", "physical")
    assert require_extra("json", "bench").dumps([1]) == "[1]"


def test_a_set_shared_data_variable_is_authoritative(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTVISION_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    # a name that is no folder hides ../shared/data even where it exists (how `make smoke` simulates a fresh clone)
    monkeypatch.setenv("ROBUSTVISION_SHARED_DATA", "none")
    assert shared_data_dir() is None
    monkeypatch.setenv("ROBUSTVISION_SHARED_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None
