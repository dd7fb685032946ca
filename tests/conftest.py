"""Fixtures shared by every test folder. Tests never touch the network; tests that read ../shared/data skip when it
is absent.

``tests/`` mirrors ``robustvision/`` (``tests/bench/`` tests ``robustvision/bench/``, ...); a fixture used by one
folder lives in that folder's ``conftest.py``, one used across folders lives here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustvision.runtime import shared_data_dir

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ROBUSTVISION_HOME unless one is shared deliberately via a fixture, and its own
    default results store (``ROBUSTVISION_STORE``), so a command run without ``--store`` never writes to the
    checkout's or the user's ``runs/robustvision.db``."""
    if "ROBUSTVISION_TEST_HOME" in os.environ:
        monkeypatch.setenv("ROBUSTVISION_HOME", os.environ["ROBUSTVISION_TEST_HOME"])
    else:
        monkeypatch.setenv("ROBUSTVISION_HOME", str(tmp_path_factory.getbasetemp() / "rv_home"))
    monkeypatch.setenv("ROBUSTVISION_STORE", str(tmp_path_factory.mktemp("store") / "results.db"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; skips the test with a clear reason when it is absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is absent (a fresh clone has none); set ROBUSTVISION_SHARED_DATA to run this")
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout under test (README, docs/, benchmarks/; the folder to put on a subprocess's PYTHONPATH)."""
    return ROOT


@pytest.fixture
def artifacts_dir(repo_root) -> Path:
    """Where tests keep artefacts worth looking at (screenshots, reports): test-artifacts/ in the checkout."""
    path = repo_root / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Small nets run fastest on one thread when the CPU is shared (two threads thrash under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------ the CLI in-process
@pytest.fixture
def run_main():
    """``run_main(argv)`` runs ``robustvision.cli.main`` (the real entry point); returns ``(exit status, output)``."""

    def run(argv: list[str]) -> tuple[int, str]:
        import contextlib
        import io
        import sys

        from robustvision.cli import main

        out = io.StringIO()
        old = sys.argv
        sys.argv = ["robustvision", *argv]
        try:
            with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
                main()
        finally:
            sys.argv = old
        return exc.value.code, out.getvalue()

    return run


# ----------------------------------------------------------------------------------------------- small models
def _train_digits_lenet(technique: str = "standard", seed: int = 0) -> torch.nn.Module:
    """A LeNet-5 (3 x 32 x 32, 10 classes) trained for two epochs on 640 embedded digits; ``label_smoothing`` or
    ``standard``. The same weights whatever the thread count (tests/bench/test_runner.py checks it)."""
    import torch.nn.functional as F

    from robustvision.data import create_dataset
    from robustvision.models import create_model

    torch.manual_seed(seed)
    x, y = create_dataset("digits", split="train").tensors()
    x, y = x[:640], y[:640]
    model = create_model("lenet5", num_classes=10, image_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    smoothing = 0.1 if technique == "label_smoothing" else 0.0
    model.train()
    for _ in range(2):
        for i in range(0, len(y), 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64], label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_lenet():
    """A factory for a small trained digits LeNet-5: ``digits_lenet(technique="standard", seed=0)``."""
    return _train_digits_lenet


# ------------------------------------------------------------------------------------------- synthetic data
def _synthetic_store(url: str, seed: int = 0):
    """A results store holding every kind of cell for three model variants, with seeded random correctness."""
    import numpy as np

    from robustvision.bench.store import CellRecord, ResultsStore

    rng = np.random.default_rng(seed)
    store = ResultsStore(url)
    n = 60
    variants = [
        ("resnet_s", "standard", "cnn", 0.95),
        ("resnet_s", "pgd_at", "cnn", 0.85),
        ("vit_s", "standard", "transformer", 0.9),
    ]
    settings = [("clean", "clean", 0.0, 0)]
    settings += [
        (a, "adversarial", e, lv) for a in ("fgsm", "pgd_linf") for lv, e in enumerate((0.5 / 255, 2 / 255, 8 / 255), 1)
    ]
    settings += [(c, "natural", float(s), s) for c in ("gaussian_noise", "fog") for s in (1, 3, 5)]
    settings += [(s, "system", 1.0, 1) for s in ("resize_pil_bilinear", "decode_opencv", "precision_fp16")]
    settings += [("imagenet_p:rotate", "natural", 0.0, 0)]
    store.record_run(
        "synthetic", dataset="digits", preset="quick", config={}, config_hash="0", package_version="t", git_commit=None
    )
    for model, tech, fam, base_acc in variants:
        labels = rng.integers(0, 10, n)
        for noise, kind, sev, lv in settings:
            drop = {
                "clean": 0,
                "adversarial": 0.1 * lv * (0.3 if tech == "pgd_at" else 1),
                "natural": 0.05 * lv,
                "system": 0.03,
            }[kind]
            correct = rng.random(n) < max(0.0, base_acc - drop)
            preds = np.where(correct, labels, (labels + 1) % 10)
            metric = {"clean": "clean_accuracy", "adversarial": "robust_accuracy"}.get(kind, "accuracy")
            metrics = {metric: float(correct.mean())}
            if noise.startswith("imagenet_p"):
                metrics = {"flip_probability_lower_better": float(rng.uniform(0.01, 0.1))}
            elif kind == "natural":
                metrics["corruption_error_lower_better"] = 1 - float(correct.mean())
            store.write_cell(
                "synthetic",
                CellRecord(
                    cell_key=f"digits/{model}/{tech}/{noise}/{sev:.6g}",
                    config_hash="h",
                    dataset="digits",
                    model=model,
                    technique=tech,
                    noise=noise,
                    kind=kind,
                    severity=sev,
                    seed=1,
                    n=n,
                    metrics=metrics,
                    level=lv,
                    family=fam,
                    correct=correct,
                    predictions=preds,
                ),
            )
    return store


@pytest.fixture(scope="session")
def synthetic_store():
    """A factory for a filled results store: ``synthetic_store(url, seed=0)`` (the caller closes it)."""
    return _synthetic_store


@pytest.fixture
def foreign_sqlite(tmp_path) -> Path:
    """``tmp_path/other.db``: a SQLite file that is not a results store (one unrelated table)."""
    import sqlite3

    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    return path


def _fake_grabcut(root: Path, n: int = 2, size=(40, 60)) -> None:
    """Write ``n`` generated GrabCut-layout instances (``data_GT/imK.jpg``, ``boundary_GT/imK.bmp``) under ``root``."""
    import cv2
    import numpy as np

    for i in range(n):
        img = np.full((*size, 3), 40, np.uint8)
        img[10:30, 15:45] = 200
        m = np.zeros(size, np.uint8)
        m[10:30, 15:45] = 255
        m[9, 15:45] = 128
        for path, arr in ((root / "data_GT" / f"im{i}.jpg", img), (root / "boundary_GT" / f"im{i}.bmp", m)):
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), arr)


@pytest.fixture(scope="session")
def fake_grabcut():
    """A factory writing a tiny generated GrabCut-layout data set: ``fake_grabcut(root, n=2, size=(40, 60))``."""
    return _fake_grabcut


def _toy_bars(n: int = 96, seed: int = 0):
    """Four classes, each a bright bar in its own place on a dim noisy 28 x 28 background."""
    from robustvision.data.base import TensorClassificationDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for c in range(4):
        x[y == c, :, 4 + 5 * c : 8 + 5 * c, 6:22] = 0.9
    return TensorClassificationDataset("toy", "train", x, y, ["a", "b", "c", "d"])


@pytest.fixture(scope="session")
def toy_bars():
    """A factory for a tiny training set: ``toy_bars(n=96, seed=0)``."""
    return _toy_bars
