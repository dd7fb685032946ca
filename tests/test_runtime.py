"""Process-level helpers: extras, the shared data folder."""

from __future__ import annotations

import pytest

from robustvision.runtime import shared_data_dir


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
