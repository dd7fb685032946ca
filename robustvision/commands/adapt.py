"""``robustvision adapt``: unsupervised domain adaptation for semantic segmentation (source_only, MinEnt, CFContra).

Examples:
    robustvision adapt --method cfcontra --iters 600            # train (same as `robustvision adapt train ...`)
    robustvision adapt train --method minent --target photos:/path/to/street/photos
    robustvision adapt evaluate runs/adapt/cfcontra-seed0.safetensors --target synthetic
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from robustvision.commands import default_command_group, user_errors
from robustvision.commands.results import STORE_HELP

# `robustvision adapt --method ...` is `robustvision adapt train --method ...` (the spelling).
app = typer.Typer(
    cls=default_command_group("train"),
    no_args_is_help=True,
    help="Unsupervised domain adaptation for segmentation: train (source_only | minent | cfcontra) and evaluate.",
)
console = Console()

Method = Annotated[str, typer.Option("--method", "-m", help="source_only, minent or cfcontra.")]
Source = Annotated[str, typer.Option(help="Labelled source: synthetic, gta5:DIR or cityscapes:DIR.")]
Target = Annotated[str, typer.Option(help="Unlabelled target: synthetic, cityscapes:DIR or photos:DIR.")]
EvalTarget = Annotated[
    str | None,
    typer.Option(help="Labelled target for evaluation after training (default: the target when it is labelled)."),
]
Iters = Annotated[int, typer.Option(help="Optimisation steps.")]
Warmup = Annotated[int | None, typer.Option(help="Source-only steps first (default: half of --iters).")]
Arch = Annotated[
    str, typer.Option(help="deeplabv2_tiny (CPU), deeplabv2_resnet18/50/101, deeplabv2_efficientnet_lite0/1/2.")
]
Pretrained = Annotated[
    bool,
    typer.Option(
        "--pretrained/--no-pretrained",
        help="Start the encoder from the packaged ImageNet weights (deeplabv2_efficientnet_lite0/1/2).",
    ),
]
BatchSize = Annotated[int, typer.Option(help="Source and target images per step (each).")]
ImageSize = Annotated[str, typer.Option(help="HEIGHTxWIDTH every image is resized to.")]
Optimizer = Annotated[str, typer.Option(help="adamw or sgd (ADVENT: sgd with --lr 2.5e-4).")]
Lr = Annotated[float, typer.Option(help="Base learning rate (heads 10x, poly decay).")]
EntMain = Annotated[float, typer.Option(help="MinEnt weight, main head (ADVENT 0.001).")]
EntAux = Annotated[float, typer.Option(help="MinEnt weight, aux head (ADVENT 0.0002).")]
ContrastW = Annotated[float, typer.Option(help="Weight of each of CFContra's four contrastive terms (0.001).")]
FdaBeta = Annotated[float, typer.Option(help="FDA low-frequency window (fraction of the short side).")]
Seed = Annotated[int, typer.Option(help="Seed (training and the generated benchmark).")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
Out = Annotated[Path | None, typer.Option(help="Checkpoint path (default runs/adapt/<method>-seed<seed>.safetensors).")]
Init = Annotated[Path | None, typer.Option(help="Start from this checkpoint's weights (e.g. a source-only model).")]
Store = Annotated[str | None, typer.Option("--store", help=STORE_HELP)]


def _print_metrics(metrics, title: str) -> None:
    from robustvision.segmentation.uda.labels import CLASS_NAMES

    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for c in metrics.eval_classes:
        table.add_row(CLASS_NAMES[c], f"{100 * metrics.iou[c]:.1f}")
    table.add_row("[bold]mIoU[/]", f"[bold]{100 * metrics.miou:.1f}[/]")
    table.add_row("pixel acc.", f"{100 * metrics.pixel_accuracy:.1f}")
    console.print(table)


def _train(
    method: str,
    source: str,
    target: str,
    eval_target: str | None,
    iters: int,
    warmup_iters: int | None,
    arch: str,
    pretrained: bool,
    batch_size: int,
    image_size: str,
    optimizer: str,
    lr: float,
    ent_main: float,
    ent_aux: float,
    contrast_weight: float,
    fda_beta: float,
    seed: int,
    device: str,
    out: Path | None,
    init: Path | None,
    store: str | None = None,
) -> None:
    from robustvision.bench.capabilities import store_adapt
    from robustvision.segmentation.uda.data import parse_size
    from robustvision.segmentation.uda.evaluate import evaluate_segmenter
    from robustvision.segmentation.uda.specs import open_domain
    from robustvision.segmentation.uda.train import AdaptConfig, adapt, load_adapted, save_adapted

    if init is not None and pretrained:
        raise ValueError("give --init or --pretrained, not both: --init already sets every weight")
    if out is not None and out.suffix != ".safetensors":  # before training, not after it
        raise ValueError(f"--out must end in .safetensors, got {str(out)!r}")
    size = parse_size(image_size)
    cfg = AdaptConfig(
        method=method, arch=arch, pretrained=pretrained, iters=iters,
        warmup_iters=iters // 2 if warmup_iters is None else warmup_iters, batch_size=batch_size, image_size=size,
        optimizer=optimizer, lr=lr, ent_main=ent_main, ent_aux=ent_aux,
        contrast_weight=contrast_weight, fda_beta=fda_beta, seed=seed, device=device,
    ).validate()  # fmt: skip
    model = None
    if init is not None:
        model, card, _, _ = load_adapted(init, device)
        cfg.arch = card["arch"]
    tgt = open_domain(target, "target", size, seed=seed)  # first: a bad target folder fails before generation
    src = open_domain(source, "source", size, seed=seed)
    if eval_target is None and not target.startswith("photos:"):
        eval_target = target
    ev = open_domain(eval_target, "eval", size, seed=seed) if eval_target else None
    console.print(f"[bold]{method}[/]: {len(src)} source / {len(tgt)} target images at {size[0]}x{size[1]}, "
                  f"{iters} steps ({cfg.warmup_iters} source-only warm-up), {cfg.arch}"
                  f"{' (ImageNet encoder)' if pretrained else ''} on {device}")  # fmt: skip
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("adapting", total=iters, info="")

        def on_step(step: int, losses: dict[str, float]) -> None:
            info = " ".join(f"{k}={v:.3g}" for k, v in losses.items() if k in ("ce", "ent", "con_t2s", "total"))
            bar.update(task, advance=1, info=info)

        result = adapt(cfg, src, tgt, model=model, callback=on_step)
    metrics = None
    if ev is not None:
        m, _ = evaluate_segmenter(result.model, ev, device=device)
        _print_metrics(m, f"{method} on {eval_target} ({len(ev)} images)")
        metrics = {"target": eval_target, **m.as_dict()}
    out = out or Path("runs") / "adapt" / f"{method}-seed{seed}.safetensors"
    weights, card = save_adapted(out, result, metrics)
    if result.source_bank is not None:
        nbytes = result.source_bank.nbytes() + result.target_bank.nbytes()
        console.print(f"memory bank: 2 x {result.source_bank.prototypes.shape[0]} x "
                      f"{result.source_bank.prototypes.shape[1]} prototypes = {nbytes} bytes")  # fmt: skip
    console.print(f"{result.seconds_per_iter * 1000:.0f} ms/step; checkpoint {weights} (card {card})")
    if metrics is not None:
        meta = {"arch": cfg.arch, "config": {"method": method, "seed": seed, "pretrained": pretrained}}
        console.print(store_adapt(store, metrics, checkpoint=weights, target=eval_target, card=meta, n=len(ev)))


@app.command("train")
def train(
    method: Method = "cfcontra",
    source: Source = "synthetic",
    target: Target = "synthetic",
    eval_target: EvalTarget = None,
    iters: Iters = 1000,
    warmup_iters: Warmup = None,
    arch: Arch = "deeplabv2_tiny",
    pretrained: Pretrained = False,
    batch_size: BatchSize = 4,
    image_size: ImageSize = "64x128",
    optimizer: Optimizer = "adamw",
    lr: Lr = 1e-3,
    ent_main: EntMain = 0.001,
    ent_aux: EntAux = 0.0002,
    contrast_weight: ContrastW = 0.001,
    fda_beta: FdaBeta = 0.05,
    seed: Seed = 0,
    device: Device = "cpu",
    out: Out = None,
    init: Init = None,
    store: Store = None,
) -> None:
    """Train a segmenter on the labelled source and adapt it to the unlabelled target; save a checkpoint."""
    with user_errors():
        _train(method, source, target, eval_target, iters, warmup_iters, arch, pretrained, batch_size, image_size,
               optimizer, lr, ent_main, ent_aux, contrast_weight, fda_beta, seed, device, out, init, store)  # fmt: skip


@app.command("evaluate")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint written by `adapt train`.")],
    target: Annotated[str, typer.Option(help="Labelled target: synthetic, cityscapes:DIR or gta5:DIR.")] = "synthetic",
    image_size: Annotated[str | None, typer.Option(help="HEIGHTxWIDTH (default: the training size).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json, confusion.png, overlays.")] = None,
    overlays: Annotated[int, typer.Option(help="Number of prediction overlays to write.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 16,
    seed: Seed = 0,
    device: Device = "cpu",
    store: Store = None,
) -> None:
    """Per-class IoU and mIoU on a labelled target, a confusion-matrix PNG and prediction overlays."""
    with user_errors():
        from robustvision.bench.capabilities import store_adapt
        from robustvision.segmentation.uda.data import parse_size
        from robustvision.segmentation.uda.evaluate import evaluate_segmenter, save_confusion_png, save_overlays
        from robustvision.segmentation.uda.specs import open_domain
        from robustvision.segmentation.uda.train import load_adapted

        if out is not None and out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} is a file; give a folder for metrics.json and the overlays")
        model, card, _, _ = load_adapted(checkpoint, device)
        size = parse_size(image_size) if image_size else tuple(card["config"]["image_size"])
        data = open_domain(target, "eval", size, seed=seed)
        metrics, (images, preds, masks) = evaluate_segmenter(model, data, batch_size=batch_size, device=device)
        out = out or checkpoint.with_suffix(".eval")
        out.mkdir(parents=True, exist_ok=True)
        _print_metrics(metrics, f"{card['config']['method']} ({card['arch']}) on {target}: {len(data)} images")
        (out / "metrics.json").write_text(
            json.dumps({"checkpoint": str(checkpoint), "target": target, **metrics.as_dict()}, indent=2)
        )
        conf = save_confusion_png(metrics, out / "confusion.png")
        paths = save_overlays(images, preds, masks, out / "overlays", n=overlays)
        console.print(f"wrote {out / 'metrics.json'}, {conf} and {len(paths)} overlays in {out / 'overlays'}")
        console.print(
            store_adapt(store, metrics.as_dict(), checkpoint=checkpoint, target=target, card=card, n=len(data))
        )
