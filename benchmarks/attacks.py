"""PGD-l-inf and AutoAttack: robustvision vs torchattacks on the same model, data and budget, in one run.

The model is a small CNN trained for a few epochs on MNIST (``../shared/data/mnist`` holds only the 10k test set: the
first 8,000 images train it, the attacks run on images from the last 2,000) or, when MNIST is absent, on the
digits set. It is cached under ``$ROBUSTVISION_HOME/benchmarks``. Rows:

- ``pgd_linf``: both libraries with the same steps, step size and random start.
- ``autoattack (10-step)``: torchattacks' ``AutoAttack(version='standard')`` runs APGD, APGD-T and FAB-T with their
  default 10 iterations; ours is run with the same iteration counts (equal work) for the speed ratio.
- ``autoattack (standard)``: ours with the reference protocol (100 iterations); it must be at least as strong as
  torchattacks' (robust accuracy <=).

Speed is images per second of wall time on this machine; both sides run in the same process, alternately, so the
ratio survives a shared CPU while the absolute numbers do not. Usage::

    python benchmarks/attacks.py            # 500 images
    python benchmarks/attacks.py --quick    # 50 images
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _support import fail, print_prerequisites, run
from rich.console import Console
from rich.table import Table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robustvision.data import create_dataset  # noqa: E402
from robustvision.noises import create_noise  # noqa: E402
from robustvision.runtime import home_dir, shared_data_dir  # noqa: E402


def small_cnn(in_chans: int, side: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (side // 4) ** 2, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def load_data() -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    root = shared_data_dir()
    if root is not None and (root / "mnist").is_dir():
        x, y = create_dataset("mnist", split="test", root=root / "mnist").tensors()
        return "mnist", x[:8000], y[:8000], x[8000:], y[8000:]
    tr, te = create_dataset("digits", "train"), create_dataset("digits", "test")
    return "digits", *tr.tensors(), *te.tensors()


def trained_model(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    model = small_cnn(x.shape[1], x.shape[2])
    cache = home_dir() / "benchmarks" / f"attacks_cnn_{name}_seed{seed}.pt"
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            b = perm[i : i + 128]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def timed(fn, batch_size: int, x: torch.Tensor, y: torch.Tensor, label: str = "") -> tuple[torch.Tensor, float]:
    print(f"running {label} on {len(y)} images ...", file=sys.stderr, flush=True)
    out, start = [], time.perf_counter()
    for i in range(0, len(y), batch_size):
        out.append(fn(x[i : i + batch_size], y[i : i + batch_size]))
    return torch.cat(out), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="attacked images")
    parser.add_argument("--quick", action="store_true", help="50 images")
    parser.add_argument("--eps", type=float, default=0.1, help="l-inf budget (MNIST-scale default 0.1)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the same for both libraries)")
    parser.add_argument("--skip-equal-work", action="store_true", help="skip our 10-step AutoAttack row")
    args = parser.parse_args()
    print_prerequisites(
        [], data=["MNIST test set when present (../shared/data/mnist), else scikit-learn's bundled digits"]
    )
    try:
        import torchattacks
    except ImportError:
        fail("torchattacks (the peer) is not installed: `make install`, or pip install --no-deps torchattacks==3.5.1")
    torch.set_num_threads(args.threads)
    n = 50 if args.quick else args.n
    name, xtr, ytr, xte, yte = load_data()
    model = trained_model(name, xtr, ytr, args.seed)
    x, y = xte[:n], yte[:n]
    eps, steps, alpha = args.eps, 10, args.eps / 4
    bs = args.batch_size
    clean = accuracy(model, x, y)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    console = Console(width=160)
    console.print(
        f"{name}: {n} test images, small CNN (clean acc {clean:.3f}), l-inf eps {eps:g}, seed {args.seed}, "
        f"{torch.get_num_threads()} threads, torchattacks {torchattacks.__version__}"
    )
    rows = []

    def report(label: str, t_ours: float, t_ta: float, acc_ours: float, acc_ta: float) -> None:
        rows.append((label, t_ours, t_ta, acc_ours, acc_ta))
        console.print(
            f"  {label}: ours {n / t_ours:.3g} img/s, torchattacks {n / t_ta:.3g} img/s (ratio {t_ta / t_ours:.2f}x); "
            f"robust acc ours {acc_ours:.3f}, torchattacks {acc_ta:.3f}"
        )

    # --- PGD-l-inf, same steps / step size / random start; warm-up, then best of 3 alternating runs ----------
    ours_pgd = create_noise("pgd_linf", eps=eps, steps=steps, rel_stepsize=alpha / eps)
    torch.manual_seed(args.seed)
    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ours_pgd(x[:8], y[:8], model, generator=gen())
    ta_pgd(x[:8], y[:8])
    t_o = t_t = float("inf")
    for _ in range(3):
        g = gen()
        adv_o, t = timed(lambda a, b, g=g: ours_pgd(a, b, model, generator=g), bs, x, y, "ours pgd")
        t_o = min(t_o, t)
        adv_t, t = timed(ta_pgd, bs, x, y, "torchattacks pgd")
        t_t = min(t_t, t)
    report("pgd_linf (10 steps, best of 3)", t_o, t_t, accuracy(model, adv_o, y), accuracy(model, adv_t, y))

    # --- AutoAttack: torchattacks' default (10-step APGD/FAB) vs ours with the reference protocol ---------------
    ta_aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=args.seed)
    adv_t, t_ta_aa = timed(ta_aa, bs, x, y, "torchattacks autoattack")
    ta_aa_acc = accuracy(model, adv_t, y)
    ours_aa = create_noise("autoattack_linf", eps=eps)
    g = gen()
    adv_std, t_o = timed(lambda a, b: ours_aa(a, b, model, generator=g), bs, x, y, "ours autoattack standard")
    std_acc = accuracy(model, adv_std, y)
    report("autoattack: ours standard (100-step) vs ta default", t_o, t_ta_aa, std_acc, ta_aa_acc)

    # --- AutoAttack at torchattacks' iteration counts (equal work) -------------------------------------------
    if not args.skip_equal_work:
        ours_aa10 = create_noise("autoattack_linf", eps=eps, apgd_steps=10, fab_steps=10)
        g = gen()
        adv_o, t_o = timed(lambda a, b: ours_aa10(a, b, model, generator=g), bs, x, y, "ours autoattack 10-step")
        report("autoattack: both 10-step (equal work)", t_o, t_ta_aa, accuracy(model, adv_o, y), ta_aa_acc)

    linf = (adv_std - x).abs().flatten(1).amax(1).max().item()
    table = Table(
        title=f"{name}: {n} test images, small CNN (clean acc {clean:.3f}), l-inf eps {eps:g}, seed {args.seed}, "
        f"{torch.get_num_threads()} threads, torchattacks {torchattacks.__version__}"
    )
    for col in ("attack", "ours img/s", "torchattacks img/s", "speed ratio", "ours robust acc", "ta robust acc"):
        table.add_column(col, justify="right" if col != "attack" else "left")
    for label, to, tt, ao, at in rows:
        table.add_row(label, f"{n / to:.3g}", f"{n / tt:.3g}", f"{tt / to:.2f}x", f"{ao:.3f}", f"{at:.3f}")
    console.print(table)
    console.print(f"max l-inf perturbation of our standard AutoAttack: {linf:.6f} (eps {eps:g})")
    strong = std_acc <= ta_aa_acc
    console.print(
        f"our standard AutoAttack robust acc {std_acc:.3f} {'<=' if strong else '>'} torchattacks' {ta_aa_acc:.3f}: "
        + ("at least as strong" if strong else "WEAKER")
    )


if __name__ == "__main__":
    run(main)
