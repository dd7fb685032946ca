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


def test_seeded_block_draws_as_seed_everything_and_restores_the_callers_state():
    import random

    import numpy as np
    import torch

    from robustvision.runtime import seed_everything, seeded

    seed_everything(5)
    expected = (torch.rand(3), np.random.rand(2), random.random())
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with seeded(5):
        got = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
