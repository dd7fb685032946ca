"""Shared fixtures. Tests never touch the network; tests that read ../shared/data skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustvision.runtime import shared_data_dir

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ROBUSTVISION_HOME unless one is shared deliberately via a fixture."""
    if "ROBUSTVISION_TEST_HOME" in os.environ:
        monkeypatch.setenv("ROBUSTVISION_HOME", os.environ["ROBUSTVISION_TEST_HOME"])
    else:
        monkeypatch.setenv("ROBUSTVISION_HOME", str(tmp_path_factory.getbasetemp() / "rv_home"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; skips the test with a clear reason when it is absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is absent (a fresh clone has none); set ROBUSTVISION_SHARED_DATA to run this")
    return root


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep artefacts worth looking at (screenshots, reports): test-artifacts/ in the checkout."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
