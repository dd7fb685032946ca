"""``robustvision check MODEL``: gradient-masking health checks on one model, each with a verdict and its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from robustvision.commands import user_errors

console = Console()
VERDICT_STYLE = {"pass": "[green]pass[/]", "warn": "[bold yellow]warn[/]", "skip": "[dim]skip[/]"}


def check(
    model: str = typer.Argument(..., help="Zoo member (name or name/technique) or a checkpoint (.safetensors)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Data set (default: the model card's, else digits)."),
    data_root: str | None = typer.Option(None, "--root", help="Folder of the data set, for those that need one."),
    checks: str | None = typer.Option(None, "--checks", help="Comma-separated checks (default: all)."),
    cheap: bool = typer.Option(False, "--cheap", help="Only the benchmark's cheap subset, at its settings."),
    eps: str = typer.Option("8/255", "--eps", help="l-inf budget under test (a number or a fraction)."),
    n_examples: int = typer.Option(100, "--n-examples", help="Test images checked."),
    steps: int = typer.Option(
        20, "--steps", help="Steps of the reference PGD the checks compare with (step 2.5 eps/steps, Madry et al.)."
    ),
    default_steps: int = typer.Option(
        20,
        "--default-steps",
        help="Steps of the benchmark's default PGD (RobustART: 20 of 0.075 eps), measured for the default attack "
        "gap (info, not a warning); 0 skips it.",
    ),
    seed: int = typer.Option(0, "--seed", help="Base seed (data order and every attack)."),
    surrogate: str | None = typer.Option(
        None,
        "--surrogate",
        help="Model to transfer attacks from (zoo name or checkpoint). Default: the unmasked model with --mask, "
        "else the zoo's lenet5/standard (resnet18/standard for lenet5 itself) for zoo members, else none.",
    ),
    mask: str | None = typer.Option(
        None, "--mask", help="Wrap the model in a gradient-masking head first (temperature | relu): a negative control."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    fail_on_warn: bool = typer.Option(False, "--fail-on-warn", help="Exit with status 1 when a check warns."),
) -> None:
    """Run the gradient-masking health checks on MODEL: eps-monotonicity, an unbounded budget, stronger attacks
    (x5 steps, x5 restarts, a larger step, APGD-DLR, black-box Square), transfer from a surrogate, gradients.

    A check warns when a stronger attack finds more than 3 points a well-tuned reference PGD (20 steps of 2.5
    eps/steps, Madry et al.; one random start) missed, when eps = 1 leaves more than 3 % accuracy, when accuracy
    rises with eps, or when more than 5 % of inputs have a zero or non-finite gradient. The default attack gap
    (RobustART's PGD-20 of 0.075 eps against the worst case over every attack) is printed as information about
    the benchmark's attack, not as a warning.
    """
    import time

    import torch

    from robustvision.bench.plan import BenchConfig
    from robustvision.bench.runner import load_eval_data
    from robustvision.bench.selectors import parse_number
    from robustvision.bench.sources import resolve_model_spec
    from robustvision.checks import CHEAP_CHECKS, CHEAP_SETTINGS, MASK_MODES, CheckConfig, MaskedLogits, run
    from robustvision.runtime import resolve_device

    with user_errors():
        if mask is not None and mask not in MASK_MODES:
            raise ValueError(f"--mask must be one of {', '.join(MASK_MODES)}, got {mask!r}")
        if threads:
            torch.set_num_threads(threads)
        dev = str(resolve_device(device))
        config = CheckConfig(
            eps=parse_number(eps), n_examples=n_examples, steps=steps, default_steps=default_steps, seed=seed
        )
        if cheap:
            config = config.replace(**CHEAP_SETTINGS)
        names = [c.strip() for c in checks.split(",") if c.strip()] if checks else None
        if cheap and names is None:
            names = list(CHEAP_CHECKS)
        config.validate()
        net, card, label = resolve_model_spec(model, device=dev)
        base = net
        if mask is not None:
            net = MaskedLogits(net, mode=mask)
            label += f" (masked: {mask})"
        sur = None
        wants_transfer = names is None or "transfer" in names
        if wants_transfer:
            if surrogate is not None:
                sur, _, sur_label = resolve_model_spec(surrogate, device=dev)
            elif mask is not None:
                sur, sur_label = base, label.split(" (")[0]
            elif not Path(model).suffix:
                other = "resnet18/standard" if model in ("lenet5", "lenet5/standard") else "lenet5/standard"
                sur, _, sur_label = resolve_model_spec(other, device=dev)
        cfg = BenchConfig(dataset=dataset or card.get("dataset") or "digits", data_root=data_root, seed=seed)
        images, labels, _ = load_eval_data(cfg)
        console.print(
            f"check [bold]{label}[/] on {cfg.dataset}: {min(n_examples, len(labels))} images, l-inf eps "
            f"{config.eps * 255:.3g}/255, reference PGD-{config.steps} (step {config.reference_rel_stepsize:.3g} eps)"
            + (
                f", default PGD-{config.default_steps} (step {config.default_rel_stepsize:g} eps) for the gap"
                if config.default_steps
                else ""
            )
            + (f", surrogate {sur_label}" if sur is not None else "")
        )
        t0 = time.perf_counter()
        with console.status("checking") as status:
            report = run(
                net,
                (images, labels),
                checks=names,
                config=config,
                surrogate=sur,
                progress=lambda name: status.update(f"check: {name}"),
            )
        seconds = time.perf_counter() - t0
    table = Table(title=f"health checks: {label}", box=box.SIMPLE_HEAD)
    table.add_column("check", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("what was measured")
    for r in report.results:
        table.add_row(r.name, VERDICT_STYLE[r.verdict], f"{r.seconds:.1f}", r.message)
    console.print(table)
    worst = report.worst_case_accuracy
    console.print(
        f"clean {100 * report.clean_accuracy:.1f} %, reference PGD {100 * report.pgd_accuracy:.1f} %, worst case "
        f"over every attack at this eps {100 * worst:.1f} % ({report.n} images, seed {seed}); {seconds:.1f} s"
    )
    if report.default_gap is not None:
        console.print(f"[cyan]info:[/] {report.default_gap_message()}")
    verdict = (
        "[green]healthy: every check passed[/]"
        if report.healthy
        else f"[bold yellow]warn:[/] {', '.join(report.failed)}"
    )
    console.print(verdict)
    if json_out is not None:
        payload = {
            "model": label,
            "dataset": cfg.dataset,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
            | {"reference_rel_stepsize": config.reference_rel_stepsize},
            "clean_accuracy": report.clean_accuracy,
            "pgd_accuracy": report.pgd_accuracy,
            "reference_attack": report.reference_attack,
            "default_pgd_accuracy": report.default_accuracy,
            "default_attack": report.default_attack,
            "default_attack_gap": report.default_gap,
            "worst_case_accuracy": worst,
            "seconds": seconds,
            "checks": report.to_rows(),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_out}")
    if fail_on_warn and not report.healthy:
        raise typer.Exit(1)
