"""``robustvision bench``: the main job. Train or reuse the default zoo, run the noise suite, store, report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robustvision.commands import check_writable_file, user_errors
from robustvision.commands.results import STORE_HELP, leaderboard_table

console = Console()


def _split(values: list[str] | None) -> list[str] | None:
    """Options given as repeated flags and/or comma-separated lists."""
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _check_root(cfg) -> None:
    """One clear error for an image-folder run without a folder."""
    if cfg.dataset == "imagefolder" and not cfg.data_root:
        raise ValueError(
            "--dataset imagefolder needs --root DIR (the imagenet preset defaults to "
            "../shared/data/imagenet_samples, which is absent here)"
        )


def bench(
    preset: str = typer.Option(
        "default", "--preset", help="quick | default | full | imagenet (pretrained ImageNet models on real photos)."
    ),
    models: list[str] | None = typer.Option(None, "--models", help="Models to keep (name or name/technique)."),
    techniques: list[str] | None = typer.Option(None, "--techniques", help="Training techniques to keep."),
    noises: list[str] | None = typer.Option(
        None,
        "--noises",
        help="Noise selectors: names, globs, kinds (adversarial, natural, system), name@v1,v2 (e.g. pgd_linf@8/255, "
        "fog@1,5), imagenet_p[:name]. Default: the preset's suite.",
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="Data set (robustvision data list); default digits."),
    data_root: str | None = typer.Option(None, "--root", help="Folder of the data set, for those that need one."),
    checkpoints: list[str] | None = typer.Option(
        None, "--checkpoints", help="Checkpoint files or folders to evaluate instead of the default zoo."
    ),
    pretrained: bool | None = typer.Option(
        None,
        "--pretrained/--no-pretrained",
        help="Evaluate --models with their ImageNet weights (tf_efficientnet_lite0/1/2 ship in packages; other zoo "
        "or timm:<name> models download them).",
    ),
    n_examples: int | None = typer.Option(None, "--n-examples", help="Test images per cell (0 = all)."),
    n_adversarial: int | None = typer.Option(None, "--n-adversarial", help="Test images per attack cell."),
    n_natural: int | None = typer.Option(None, "--n-natural", help="Test images per corruption cell (0 = n-examples)."),
    n_system: int | None = typer.Option(None, "--n-system", help="Test images per system-noise cell (0 = n-examples)."),
    attack_steps: int | None = typer.Option(None, "--attack-steps", help="Iterations of PGD/MIM."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed (every cell's seed derives from it)."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    executor: str | None = typer.Option(None, "--executor", help="local (this machine; --workers processes) or ray."),
    workers: int | None = typer.Option(
        None, "--workers", help="Local worker processes, or CPUs of a local Ray instance (0 = automatic)."
    ),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of an existing Ray cluster."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per process (0 = torch's default)."),
    out: str | None = typer.Option(None, "--out", help="Report to write (default report.html; '' for none)."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="mCE baseline: a model (name or name/technique), or alexnet (published errors)."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML file of bench config fields."),
    checks: bool | None = typer.Option(
        None, "--checks/--no-checks", help="Run the cheap health checks on every model (default: on)."
    ),
    n_checks: int | None = typer.Option(None, "--n-checks", help="Images the health checks use (default 64)."),
) -> None:
    """Benchmark models against adversarial, natural and system noise; store every number; write the report.

    With no arguments: trains or reuses the default zoo on digits, runs the default suite (clean, FGSM, PGD at
    RobustART's budgets, MIM, every ImageNet-C corruption at severities 1/3/5, every system noise, ImageNet-P
    flip rates), prints the leaderboard and writes report.html. Re-running resumes: stored cells are skipped.
    """
    import contextlib

    from robustvision.bench.plan import load_config, split_selectors
    from robustvision.bench.report import write_report
    from robustvision.bench.runner import check_ray_address, prepare, run_bench
    from robustvision.bench.store import ResultsStore
    from robustvision.bench.summary import summarize

    with user_errors():
        cfg = load_config(
            preset,
            config,
            models=_split(models),
            techniques=_split(techniques),
            noises=split_selectors(noises) if noises is not None else None,
            dataset=dataset,
            data_root=data_root,
            checkpoints=_split(checkpoints),
            pretrained=pretrained,
            n_examples=n_examples,
            n_adversarial=n_adversarial,
            n_natural=n_natural,
            n_system=n_system,
            attack_steps=attack_steps,
            seed=seed,
            store=store,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            device=device,
            threads=threads,
            out=out,
            baseline=baseline,
            checks=checks,
            n_checks=n_checks,
        )
        if cfg.out:
            check_writable_file("--out", cfg.out)
        if cfg.ray_address and cfg.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        if cfg.executor == "ray" and cfg.ray_address:
            check_ray_address(cfg.ray_address)
        _check_root(cfg)
        with contextlib.ExitStack() as stack:
            # One preparation per run: the data is loaded and every noise built once, the noise list (budgets,
            # severities, names) is checked on the data set before the store is opened, and the store before any
            # model is trained.
            opened: list[ResultsStore] = []
            prepared = prepare(
                cfg,
                log=lambda msg: console.print(f"[yellow]{msg}[/]"),
                before_models=lambda: opened.append(stack.enter_context(ResultsStore(cfg.store))),
            )
            rs, entries = opened[0], prepared.models
            if (
                cfg.baseline and cfg.baseline != "alexnet"
            ):  # the mCE baseline must be a model of this run or of the store
                wanted = cfg.baseline if "/" in cfg.baseline else f"{cfg.baseline}/standard"
                stored = rs.cells(dataset=cfg.dataset)
                known = {m.key for m in entries} | set(stored["model"] + "/" + stored["technique"])
                if wanted not in known:
                    raise ValueError(f"--baseline {cfg.baseline!r} is not a model here; choose from {sorted(known)}")
            console.print(
                f"bench [bold]{cfg.preset}[/] on [bold]{cfg.dataset}[/]: {len(entries)} model variants, "
                f"executor {cfg.executor}, store {rs.display_url}"
            )
            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console, transient=False) as bar:
                task = bar.add_task("cells", total=None)

                def progress(done: int, total: int, label: str) -> None:
                    bar.update(task, completed=done, total=max(total, 1), description=f"cells: {label}")

                summary_run = run_bench(cfg, entries, rs, progress=progress, prepared=prepared)
            for note in summary_run.notes:
                console.print(f"[yellow]skipped[/]: {note}")
            console.print(
                f"run {summary_run.run_id}: {summary_run.planned} cells planned, {summary_run.skipped_existing} "
                f"already stored, {summary_run.written} written in {summary_run.seconds:.1f} s"
            )
            summary = summarize(rs, dataset=cfg.dataset, baseline=cfg.baseline)
            keys = {m.key for m in entries}
            board = summary.leaderboard
            if not board.empty:
                summary.leaderboard = board[(board["model"] + "/" + board["technique"]).isin(keys)]
            console.print(leaderboard_table(summary, title=f"robustvision bench ({cfg.dataset})", width=console.width))
            if cfg.out:
                path = write_report(rs, cfg.out, dataset=cfg.dataset, baseline=cfg.baseline)
                console.print(f"report: {path}")
