"""Helpers shared by the bench tests: tiny trained checkpoints, test-only noises, a synthetic store."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustvision.bench.store import CellRecord, ResultsStore
from robustvision.models import create_model
from robustvision.models.checkpoints import save_checkpoint
from robustvision.noises.base import NOISES, Noise, NoiseKind

MIXER_KW = {"num_blocks": 1, "embed_dim": 32}


def _train_lenet(technique: str, seed: int) -> torch.nn.Module:
    from robustvision.data import create_dataset

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


def tiny_checkpoints(root: Path) -> Path:
    """Three checkpoints (LeNet-5 standard and label-smoothing, a random-init 1-block Mixer), made once per
    session under ``root`` and reused."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / ".done"
    if not done.exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny nets: one thread is faster than two contending ones
        save_checkpoint(_train_lenet("standard", 0), root / "lenet5_standard.safetensors", {"technique": "standard"})
        save_checkpoint(
            _train_lenet("label_smoothing", 1),
            root / "lenet5_ls.safetensors",
            {"technique": "label_smoothing"},
        )
        torch.manual_seed(2)
        mixer = create_model("mixer_tiny", num_classes=10, image_size=32, **MIXER_KW).eval()
        save_checkpoint(mixer, root / "mixer.safetensors", {"technique": "standard", "model_kwargs": MIXER_KW})
        torch.set_num_threads(threads)
        done.touch()
    return root


# ----------------------------------------------------------------------------------------------- test noises
class Darken(Noise):
    """Natural test noise: multiply by ``1 - 0.15 * severity`` plus seeded Gaussian noise (so seeds matter)."""

    name = "test_darken"
    kind = NoiseKind.NATURAL

    def __init__(self, severity: int = 1) -> None:
        if not 1 <= int(severity) <= 5:
            raise ValueError(f"severity must be an integer from 1 to 5, got {severity}")
        super().__init__(int(severity))

    def sample_params(self, shape, generator=None):
        return {"noise": torch.randn(shape, generator=generator) * 0.05 * self.severity}

    def apply(self, images, params, labels=None, model=None):
        return (images * (1 - 0.15 * self.severity) + params["noise"].to(images.device)).clamp(0, 1)


class Posterize(Noise):
    """System test noise: quantise to ``bits`` bits."""

    kind = NoiseKind.SYSTEM

    def __init__(self, severity: int = 1, *, bits: int = 3) -> None:
        if severity != 1:
            raise ValueError(f"system noise has a single setting: severity must be 1, got {severity}")
        super().__init__(1)
        self.bits = bits
        self.name = f"test_posterize{bits}"

    def apply(self, images, params, labels=None, model=None):
        levels = 2**self.bits - 1
        return torch.round(images * levels) / levels


class AlwaysZero(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return torch.zeros_like(out).index_fill_(1, torch.tensor([0]), 1.0)


class ModelSwap(Noise):
    """A ``wraps_model`` system noise: evaluates a model that always answers class 0; never touches images."""

    name = "test_modelswap"
    kind = NoiseKind.SYSTEM
    wraps_model = True

    def __init__(self, severity: int = 1) -> None:
        super().__init__(1)

    def wrap(self, model):
        return AlwaysZero(model)

    def apply(self, images, params, labels=None, model=None):
        raise AssertionError("a wraps_model noise must not be applied to images by the runner")


TEST_NOISES = {
    "test_darken": (Darken, {"kind": NoiseKind.NATURAL}),
    "test_posterize3": (lambda severity=1: Posterize(severity, bits=3), {"kind": NoiseKind.SYSTEM}),
    "test_posterize5": (lambda severity=1: Posterize(severity, bits=5), {"kind": NoiseKind.SYSTEM}),
    "test_modelswap": (ModelSwap, {"kind": NoiseKind.SYSTEM}),
}


@contextlib.contextmanager
def registered_test_noises():
    """Register the test noises for the duration of a block (removed afterwards)."""
    added = []
    try:
        for name, (builder, meta) in TEST_NOISES.items():
            if name not in NOISES._builders:
                NOISES.add(name, builder, **meta)
                added.append(name)
        yield
    finally:
        for name in added:
            NOISES._builders.pop(name, None)
            NOISES._meta.pop(name, None)


# ------------------------------------------------------------------------------------------- synthetic store
def synthetic_store(url: str, seed: int = 0) -> ResultsStore:
    """A store holding every kind of cell for three model variants, with seeded random correctness."""
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
