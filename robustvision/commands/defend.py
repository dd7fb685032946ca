"""``robustvision defend``: train GBN and multi-perturbation baselines, evaluate a defended checkpoint.

``robustvision defend --method gbn --dataset mnist --root ../shared/data/mnist`` is the same as
``robustvision defend train --method gbn ...``.
"""

# No ``from __future__ import annotations`` here: the root callback reuses ``train``'s signature, and typer reads
# real annotations from it.
import inspect
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from robustvision.commands import user_errors
from robustvision.commands.results import STORE_HELP
from robustvision.training.progress import progress_bar

app = typer.Typer(no_args_is_help=True)
console = Console()


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _eps(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        norm, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--eps {item!r} must look like NORM=VALUE, e.g. l2=2.0")
        try:
            out[norm.strip()] = float(value)
        except ValueError as err:
            raise ValueError(f"--eps {item!r}: {value!r} is not a number") from err
    return out


def train(
    method: str = typer.Option("gbn", help="gbn | avg | max | msd | eat | pgd_linf | pgd_l2 | pgd_l1 | standard."),
    recipe: str = typer.Option("fast", help="fast | reference (the GBN authors' training; see docs/defense-gbn.md)."),
    dataset: str = typer.Option("mnist", help="Data set (its source split is cut into train/test with --seed)."),
    root: Path | None = typer.Option(None, help="Data folder, e.g. ../shared/data/mnist."),
    arch: str | None = typer.Option(None, help="Zoo architecture (default: lenet5 for mnist, resnet18 otherwise)."),
    out: Path | None = typer.Option(None, help="Checkpoint path (default runs/defend/<dataset>_<method>.safetensors)."),
    epochs: int = typer.Option(5, help="Epochs."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float | None = typer.Option(None, help="SGD learning rate (default: the recipe's, fast 0.05, reference 0.1)."),
    attack_steps: int | None = typer.Option(
        None, help="Iterations of every training attack (fast: 10; reference: its own 50/100/50, else rescaled)."
    ),
    norms: str = typer.Option("l1,l2,linf", help="Perturbation types to train against."),
    eps: list[str] = typer.Option([], help="Budget override NORM=VALUE (repeatable); default: the data set's."),
    layers: str | None = typer.Option(None, help="GBN: comma-separated BatchNorm layers to convert."),
    clean_branch: bool = typer.Option(True, help="GBN: keep a clean branch."),
    gate_adversary: str = typer.Option(
        "branch", help="GBN: 'branch' (each norm attacks its own branch) or 'mixture' (also end to end)."
    ),
    gate_once: bool = typer.Option(False, help="GBN: gate once at the first layer and reuse the decision deeper."),
    eps_ramp_epochs: float | None = typer.Option(None, help="Budgets ramp from 0 over this many epochs (recipe's)."),
    test_fraction: float = typer.Option(0.2, help="Held-out fraction of the source split (MNIST: 8000/2000)."),
    source_split: str = typer.Option("test", help="Split to cut (the shared data has only MNIST's test set)."),
    max_steps: int | None = typer.Option(None, help="Cap on batches per epoch (smoke runs)."),
    seed: int = typer.Option(0, help="Seed of the split, the initialisation, the data order and the attacks."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    threads: int | None = typer.Option(None, help="torch CPU threads (small nets run best with 1 on shared CPUs)."),
) -> None:
    """Train a defended model (GBN or a baseline) and save it with its model card."""
    with user_errors():
        import torch

        from robustvision.defenses.train import (
            DefenseConfig,
            build_model,
            save_defense,
            split_dataset,
            train_defense,
            validation_part,
        )

        if threads:
            torch.set_num_threads(threads)
        arch = arch or ("lenet5" if dataset == "mnist" else "resnet18")
        config = DefenseConfig.from_recipe(
            recipe,
            attack_steps=attack_steps,
            method=method,
            dataset=dataset,
            arch=arch,
            norms=tuple(_csv(norms)),
            budgets=_eps(eps),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            eps_ramp_epochs=eps_ramp_epochs,
            clean_branch=clean_branch,
            gate_adversary=gate_adversary,
            gate_once=gate_once,
            gbn_layers=_csv(layers) or None,
            seed=seed,
            device=device,
            max_steps_per_epoch=max_steps,
        )
        if config.method != "gbn" and layers:
            raise ValueError("--layers applies to --method gbn only")
        train_set, test_set, info = split_dataset(
            dataset, root, seed=seed, test_fraction=test_fraction, source_split=source_split
        )
        model = build_model(
            config, num_classes=train_set.num_classes, in_chans=train_set.channels, image_size=train_set.image_size
        )
        out = out or Path("runs/defend") / f"{dataset}_{method}.safetensors"
        val_set = validation_part(test_set)
        steps = {n: config.attack.steps_for(n) for n in config.norms}
        console.print(
            f"[bold]{method}[/] ({recipe} recipe) on {dataset} ({info['n_train']} train / {info['n_test']} held out, "
            f"the last {len(val_set)} for validation, seed {seed}), {arch}, budgets {config.budgets}, "
            f"attack steps {steps}, {epochs} epochs"
        )
        with progress_bar(console=console) as bar:
            task = bar.add_task("training", total=None, info="")

            def on_step(step: int, total: int, stats: dict[str, float]) -> None:
                bar.update(task, completed=step, total=total, info=f"loss {stats['loss']:.3f}")

            history = train_defense(model, train_set, config, val_set=val_set, callback=on_step)
        for r in history:
            gate = f", gate loss {r.gate_loss:.3f}" if r.gate_loss is not None else ""
            console.print(
                f"epoch {r.epoch}: loss {r.loss:.3f}{gate}, validation clean acc {100 * r.val_clean_acc:.1f}%"
            )
        save_defense(model, out, config, history, info, extra={"root": str(root) if root else None})
        console.print(f"saved {out} (+ {out.with_suffix('.json').name}); evaluate: robustvision defend evaluate {out}")


def evaluate(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by `defend train`."),
    root: Path | None = typer.Option(None, help="Data folder (default: the one recorded at training)."),
    n: int = typer.Option(1000, help="Evaluate the first N held-out images (MSD's protocol: 1000)."),
    preset: str = typer.Option("standard", help="Attack list: quick | standard | strong | none."),
    attack: list[str] = typer.Option([], help="Extra attack NORM=NAME[:key=value,...] (repeatable)."),
    norms: str = typer.Option("l1,l2,linf", help="Norms to evaluate."),
    eps: list[str] = typer.Option([], help="Budget override NORM=VALUE (default: the checkpoint's)."),
    domains: str | None = typer.Option(None, help="GBN: the expected branch list (checked against the card)."),
    adaptive: bool = typer.Option(True, help="GBN: also run the adaptive attacks."),
    adaptive_modes: str = typer.Option("branch,gate", help="GBN: 'branch' (routed) and/or 'gate' (gate-steering)."),
    branch_attacks: str = typer.Option("first", help="GBN: 'first' attack of each norm per branch, or 'all'."),
    diagnose: bool = typer.Option(True, help="GBN: routing table, branch-alone accuracy and perfect routing."),
    routing_attacks: str = typer.Option("first", help="GBN: perfect-routing attacks: 'first' of each norm, or 'all'."),
    batch_size: int = typer.Option(250, help="Attack batch size."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    seed: int = typer.Option(0, help="Attack seed."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
) -> None:
    """Per-norm and union robust accuracy of a defended checkpoint (GBN: adaptive attacks and the routing diagnosis)."""
    with user_errors():
        import torch

        from robustvision.bench.capabilities import store_defend
        from robustvision.commands import check_at_least
        from robustvision.defenses.evaluate import attack_list, evaluate_robustness, format_report, parse_attack
        from robustvision.defenses.multi_perturbation import budgets_for
        from robustvision.defenses.train import load_defense, split_dataset, validation_part
        from robustvision.runtime import resolve_device

        check_at_least("--n", n, 1, " image")
        check_at_least("--batch-size", batch_size, 1)
        check_at_least("--threads", threads, 1)
        if threads:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        model, card = load_defense(checkpoint, domains=_csv(domains) or None, device=dev)
        data = card.get("data") or {}
        defense = card.get("defense") or {}
        name = data.get("dataset")
        if not name:
            raise ValueError(f"the card of {str(checkpoint)!r} records no data set; was it written by defend train?")
        root = root or (Path(card["root"]) if card.get("root") else None)
        _, test_set, _ = split_dataset(
            name,
            root,
            seed=data.get("seed", 0),
            train_size=data.get("n_train"),
            source_split=data.get("source_split", "test"),
        )
        budgets = budgets_for(name, {**defense.get("budgets", {}), **_eps(eps)})
        specs = attack_list(preset, [parse_attack(a) for a in attack], _csv(norms))
        images, labels = test_set.tensors()
        images, labels = images[:n].to(dev), labels[:n].to(dev)
        overlap = len(images) - (len(test_set) - len(validation_part(test_set)))
        if overlap > 0:
            console.print(f"note: the last {overlap} evaluated images are also the training run's validation images")
        with progress_bar(counted=False, console=console) as bar:
            task = bar.add_task("attacks", total=None, info="")
            report = evaluate_robustness(
                model,
                images,
                labels,
                budgets,
                specs,
                adaptive=adaptive,
                adaptive_modes=tuple(_csv(adaptive_modes)),
                branch_attacks=branch_attacks,
                diagnose=diagnose,
                routing_attacks=routing_attacks,
                batch_size=batch_size,
                seed=seed,
                callback=lambda text: bar.update(task, info=text),
            )
        console.print(f"[bold]{checkpoint}[/] ({card.get('technique')}), {report.seconds:.0f} s")
        console.print(format_report(report))
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps({"checkpoint": str(checkpoint), **report.to_dict()}, indent=2))
            console.print(f"wrote {json_out}")
        console.print(store_defend(store, report.to_dict(), checkpoint=checkpoint, card=card, dataset=name, seed=seed))


@app.command("methods")
def methods() -> None:
    """List the training methods."""
    from robustvision.defenses.multi_perturbation import method_summary

    table = Table("method", "what it trains on")
    for row in method_summary():
        table.add_row(row["name"], row["about"])
    console.print(table)


app.command("train")(train)
app.command("evaluate")(evaluate)


def _root(ctx: typer.Context, **kwargs) -> None:
    """Gated Batch Normalization and multi-perturbation defenses (``defend --method X`` trains, as ``train``)."""
    if ctx.invoked_subcommand is not None:
        return
    import click

    if any(ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT for k in kwargs):
        train(**kwargs)
        return
    console.print(ctx.get_help())
    raise typer.Exit()


# The root takes train's options, so `robustvision defend --method gbn ...` trains as the issue writes it.
_root.__signature__ = inspect.Signature(
    [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(train).parameters.values()]
)
app.callback(invoke_without_command=True)(_root)
