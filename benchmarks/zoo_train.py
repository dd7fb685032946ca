"""Wall time and peak memory of ``robustvision zoo train --preset default`` from scratch (target: < 10 min, 2 cores).

The zoo is trained by the real CLI in a child process with a fresh temporary ROBUSTVISION_HOME. Printed:

- wall time, CPU time (user + sys) and peak RSS of the child, the machine's load average before and after (the
  machine may be shared: CPU time is the figure that survives contention, wall time is what a user waits);
- each member's clean test accuracy and training seconds from its model card;
- the peer: two standard members trained by the Trainer and by a bare PyTorch loop (same model, optimizer,
  schedule, epochs, batches; one thread), back to back in this process, so the Trainer's overhead shows as a ratio
  measured under the same load.

Usage::

    python benchmarks/zoo_train.py            # the whole default preset
    python benchmarks/zoo_train.py --quick    # two members only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _support import fail, print_prerequisites, run

TARGET_S = 600.0


def run_zoo(home: Path, only: list[str]) -> dict:
    env = {**os.environ, "ROBUSTVISION_HOME": str(home)}
    repo = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "robustvision.cli", "zoo", "train", "--preset", "default", "--device", "cpu"]
    cmd += ["--no-progress"] + [a for name in only for a in ("--only", name)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {last}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024, "stdout": proc.stdout}


def bare_loop_seconds(model_name: str, model_kwargs: dict, config) -> tuple[float, float]:
    """Train ``model_name`` with a minimal hand-written loop (the peer); returns (seconds, test accuracy)."""
    import math

    import torch
    import torch.nn.functional as F

    from robustvision.data import create_dataset
    from robustvision.models import create_model

    torch.set_num_threads(1)  # as the zoo's workers
    train = create_dataset("digits", split="train")
    test = create_dataset("digits", split="test")
    torch.manual_seed(config.seed)
    model = create_model(model_name, image_size=32, **model_kwargs)
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
    steps = len(train) // config.batch_size
    total = steps * config.epochs
    warm = int(config.warmup_epochs * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.1 + 0.9 * s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))),
    )
    x, y = train.tensors()
    start = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(len(x))
        for i in range(steps):
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        xt, yt = test.tensors()
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return time.perf_counter() - start, acc


def trainer_seconds(member, config) -> tuple[float, float]:
    """Train ``member`` with the package's Trainer, one thread; returns (seconds of training + final evaluation,
    test accuracy). Data set and model construction are outside the timing, as for the bare loop."""
    import torch

    from robustvision.data import create_dataset
    from robustvision.models import create_model
    from robustvision.training import train_classifier

    torch.set_num_threads(1)
    train = create_dataset("digits", split="train")
    test = create_dataset("digits", split="test")
    torch.manual_seed(config.seed)
    model = create_model(member.model, image_size=32, **member.model_kwargs)
    start = time.perf_counter()
    metrics = train_classifier(model, train, test, config.replace(progress=False, device="cpu"), member.technique)
    return time.perf_counter() - start, metrics["clean_accuracy"]


def peer(only_models: tuple[str, ...] = ("lenet5", "mixer_tiny")) -> None:
    """Trainer vs a bare loop on the same standard members, back to back in this process (same load)."""
    from robustvision.training.zoo_presets import DEFAULT_PRESET, member_config

    print("  peer: Trainer vs a bare PyTorch loop, same member and recipe, back to back in this process, 1 thread")
    print(f"  {'model':12s} {'Trainer s':>9s} {'bare s':>8s} {'ratio':>6s} {'Trainer acc':>11s} {'bare acc':>8s}")
    for member in DEFAULT_PRESET.members:
        if member.model not in only_models or member.technique != "standard":
            continue
        config = member_config(DEFAULT_PRESET, member)
        t_trainer, acc_trainer = trainer_seconds(member, config)
        t_bare, acc_bare = bare_loop_seconds(member.model, member.model_kwargs, config)
        print(
            f"  {member.model:12s} {t_trainer:9.1f} {t_bare:8.1f} {t_trainer / t_bare:6.2f} "
            f"{acc_trainer:11.4f} {acc_bare:8.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train two members only (lenet5, mixer_tiny)")
    parser.add_argument("--no-peer", action="store_true", help="skip the bare-loop peer")
    parser.add_argument("--peer-only", action="store_true", help="only the Trainer-vs-bare-loop comparison")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print_prerequisites([])
    if args.peer_only:
        peer()
        return

    only = ["lenet5/standard", "mixer_tiny"] if args.quick else []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rv_zoo_bench_") as tmp:
        home = Path(tmp)
        result = run_zoo(home, only)
        cards = sorted((home / "zoo" / "digits").glob("*.json"))
        rows = [json.loads(p.read_text()) for p in cards]
    load_after = os.getloadavg()

    print(f"robustvision zoo train --preset default{' (quick: ' + ', '.join(only) + ')' if only else ''}")
    print(f"  cores: {os.cpu_count()}  load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print(f"  wall time   {result['wall_s']:8.1f} s   (target < {TARGET_S:.0f} s on 2 quiet cores)")
    print(f"  CPU time    {result['cpu_s']:8.1f} s   (user + sys of the child; /2 ~ wall on 2 idle cores)")
    print(f"  peak RSS    {result['peak_rss_mb']:8.1f} MB")
    print(f"  {'model':12s} {'technique':16s} {'family':12s} {'clean acc':>9s} {'train s':>8s}")
    for card in sorted(rows, key=lambda c: (c["family"], c["arch"], c["technique"])):
        print(
            f"  {card['arch']:12s} {card['technique']:16s} {card['family']:12s} "
            f"{card['clean_accuracy']:9.4f} {card['train_seconds']:8.1f}"
        )
    if not args.no_peer:
        peer()


if __name__ == "__main__":
    run(main)
