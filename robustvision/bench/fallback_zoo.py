"""A small stand-in for ``robustvision.training.ensure_zoo``, used only when the training package is absent.

It trains (or reuses, from ``ROBUSTVISION_HOME/bench_fallback_zoo``) three light models on ``digits`` -- one per
family -- plus two technique variants of the CNN, with a plain AdamW loop. The real default zoo (more
architectures, the full technique list, the shared Trainer) lives in ``robustvision.training``; the bench uses it
whenever it is installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustvision.models import create_model
from robustvision.models.checkpoints import save_checkpoint
from robustvision.runtime import home_dir, make_generator

# (name, arch, technique, constructor overrides)
FALLBACK_ZOO: tuple[tuple[str, str, str, dict], ...] = (
    ("lenet5", "lenet5", "standard", {}),
    ("lenet5", "lenet5", "pgd_at", {}),
    ("lenet5", "lenet5", "mixup", {}),
    ("vit_tiny", "vit_tiny", "standard", {"depth": 2, "embed_dim": 64, "num_heads": 2}),
    ("mixer_tiny", "mixer_tiny", "standard", {"num_blocks": 2, "embed_dim": 64}),
)
EPOCHS = 6


def _train(arch: str, technique: str, overrides: dict, seed: int = 0):
    from robustvision.data import create_dataset
    from robustvision.noises.adversarial import PGD

    torch.manual_seed(seed)
    train = create_dataset("digits", split="train", seed=seed)
    test = create_dataset("digits", split="test", seed=seed)
    x, y = train.tensors()
    model = create_model(arch, num_classes=10, image_size=32, **overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    g = make_generator(seed, "fallback", arch, technique)
    steps = EPOCHS * ((len(y) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(EPOCHS):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            xb, yb = x[order[i : i + 64]], y[order[i : i + 64]]
            model.train()
            if technique == "pgd_at":
                xb = PGD(model, eps=2 / 255, norm="linf", steps=3)(xb, yb, generator=g)
                model.train()
            if technique == "mixup":
                lam = float(torch.distributions.Beta(0.2, 0.2).sample())
                perm = torch.randperm(len(yb), generator=g)
                logits = model(lam * xb + (1 - lam) * xb[perm])
                loss = lam * F.cross_entropy(logits, yb) + (1 - lam) * F.cross_entropy(logits, yb[perm])
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    xt, yt = test.tensors()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return model, acc


def ensure_zoo(preset: str = "default", device: str = "cpu", **_: object) -> list[str]:
    """Train the fallback zoo once (on the CPU) and return its checkpoint paths (reused on later calls)."""
    root = home_dir() / "bench_fallback_zoo"
    paths = []
    for name, arch, technique, overrides in FALLBACK_ZOO:
        path = root / f"{name}__{technique}.safetensors"
        if not path.is_file():
            model, acc = _train(arch, technique, overrides)
            card = {"name": name, "technique": technique, "dataset": "digits", "clean_accuracy": acc}
            save_checkpoint(model, path, {**card, "model_kwargs": overrides})
        paths.append(str(path))
    return paths
