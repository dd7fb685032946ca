"""``robustvision iseg``: train EdgeFlow, evaluate NoC, predict a mask from clicks."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from robustvision.commands import user_errors
from robustvision.commands.results import STORE_HELP

app = typer.Typer(no_args_is_help=True, help="Interactive segmentation (EdgeFlow): train, evaluate, predict.")
console = Console()


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors; the model card goes beside it)."),
    steps: int = typer.Option(1000, help="Optimisation steps."),
    batch_size: int = typer.Option(8, help="Samples per step."),
    crop: int = typer.Option(160, help="Square training crop side."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (cosine decay)."),
    seed: int = typer.Option(0, help="Seed of the run."),
    backbone: str = typer.Option(
        "hrnet18", help="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 (ImageNet-pretrained) or hrnet18."
    ),
    width: int = typer.Option(8, help="hrnet18 backbone width (18 = HRNet-W18 branch widths)."),
    blocks: int = typer.Option(1, help="Residual blocks per branch in each HR module (HRNet: 4)."),
    warmup: int = typer.Option(50, help="Linear learning-rate warm-up steps."),
    overflow_prob: float = typer.Option(
        0.0, help="Share of samples starting from an overflowing previous mask + a negative click (teaches negatives)."
    ),
    single_click_prob: float = typer.Option(
        0.0, help="Share of samples trained with the first click alone (no extra clicks, empty previous mask)."
    ),
    max_next_clicks: int = typer.Option(3, help="Most simulated iterative clicks per batch (RITM: 3)."),
    extra_clicks: int = typer.Option(
        3, help="Most random extra positives (and negatives) per sample; above 3 RITM's 0.8**k law (up to 24)."
    ),
    minutes: float = typer.Option(0.0, help="Wall-clock cap in minutes (0 = none); stops early and records it."),
    no_edge_flow: bool = typer.Option(False, "--no-edge-flow", help="Train the RITM-style ablation instead."),
    train_set: str = typer.Option(
        "synthetic",
        help="synthetic (no download), sbd, lvis, coco_lvis, or real sources mixed by weight: duts, coco, "
        "duts:0.6,coco:0.4.",
    ),
    root: Path = typer.Option(None, help="Data root: the DUTS-style folder for duts (or sbd / COCO layout)."),
    annotations: list[Path] = typer.Option(
        None, "--annotations", help="COCO-format instance JSON for --train-set coco (repeatable, each with --images)."
    ),
    images: list[Path] = typer.Option(None, "--images", help="Image folder of the --annotations file at its position."),
    samples: int = typer.Option(20000, help="Training samples per epoch (synthetic and real mixes)."),
    backbone_lr_mult: float = typer.Option(0.1, help="Learning-rate factor of a pretrained backbone (RITM: 0.1)."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    workers: int = typer.Option(
        0, help="Data-loader processes and click-simulation threads (0 = main thread; same result either way)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    init: Path = typer.Option(
        None, help="Start from this EdgeFlow checkpoint's weights (same --width/--no-edge-flow)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from <out>.state.pt."),
    checkpoint_every: int = typer.Option(100, help="Steps between resumable training states."),
) -> None:
    """Train EdgeFlow (or the --no-edge-flow ablation) with simulated iterative clicks.

    The training state is saved every --checkpoint-every steps; after an interruption, the same command with
    --resume continues exactly where it stopped."""
    with user_errors():
        from robustvision.segmentation.interactive.model import BACKBONES, EdgeFlowConfig
        from robustvision.segmentation.interactive.train import EdgeFlowTrainConfig, train_edgeflow

        if out.suffix != ".safetensors":
            raise ValueError(f"--out must end in .safetensors, got {out}")
        if backbone not in BACKBONES:
            import difflib

            close = difflib.get_close_matches(backbone, BACKBONES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown --backbone {backbone!r}{hint}; known: {', '.join(BACKBONES)}")
        annotations, images = list(annotations or []), list(images or [])
        if len(annotations) != len(images):
            raise ValueError(f"each --annotations needs one --images folder: got {len(annotations)} and {len(images)}")
        if samples < 1 or not backbone_lr_mult >= 0:
            raise ValueError("--samples must be >= 1 and --backbone-lr-mult >= 0")
        cfg = EdgeFlowTrainConfig(
            steps=steps, batch_size=batch_size, crop=crop, lr=lr, seed=seed, max_next_clicks=max_next_clicks,
            minutes=minutes, train_set=train_set, root=str(root) if root else None, threads=threads,
            workers=workers, warmup=warmup, overflow_prob=overflow_prob, extra_clicks=extra_clicks,
            single_click_prob=single_click_prob,
            annotations=[str(a) for a in annotations], images=[str(i) for i in images], samples=samples,
            backbone_lr_mult=backbone_lr_mult,
            model=EdgeFlowConfig(width=width, blocks=blocks, edge_flow=not no_edge_flow, backbone=backbone),
            checkpoint_every=checkpoint_every, init=str(init) if init else None,
        )  # fmt: skip
        if workers < 0 or blocks < 1 or warmup < 0 or not 0 <= overflow_prob <= 1 or not 0 <= extra_clicks <= 24:
            raise ValueError(
                "--workers and --warmup must be >= 0, --blocks >= 1, --overflow-prob in [0, 1] "
                "and --extra-clicks in [0, 24]"
            )
        if not 0 <= single_click_prob <= 1:
            raise ValueError(f"--single-click-prob must be in [0, 1], got {single_click_prob}")
        if checkpoint_every < 1:
            raise ValueError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
        if init is not None and not init.is_file():
            raise FileNotFoundError(f"--init checkpoint {init} does not exist")
        with Progress(console=console) as progress:
            task = progress.add_task("training", total=steps)
            if resume:
                from robustvision.segmentation.interactive.train import state_path

                if state_path(out).is_file():
                    progress.console.print(f"resuming from {state_path(out)}")

            def log(step: int, row: dict) -> None:
                progress.update(task, completed=step)
                progress.console.print(
                    f"step {step}  loss {row.get('loss', 0):.4f}  train IoU {row.get('iou', 0):.3f}  "
                    f"{row.get('steps_per_s', 0):.3f} steps/s  {row['seconds']}s"
                )

            card = train_edgeflow(cfg, out, device=device, log=log, resume=resume)
        console.print(f"wrote {out} ({card['steps_done']} steps, {card['wall_seconds']} s)")


def _samples(dataset: str, root: Path | None, limit: int | None):
    from robustvision.segmentation.interactive.data import load_iseg_dataset

    return load_iseg_dataset(dataset, root, limit)


@app.command()
def evaluate(
    predictor: list[str] = typer.Option(
        ["edgeflow"], "--predictor", "-p", help="Predictor name(s): edgeflow, edgeflow_noedge, grabcut, random_walker."
    ),
    checkpoint: Path = typer.Option(None, help="Checkpoint for a learned predictor (default: the shipped one)."),
    dataset: str = typer.Option("grabcut", help="grabcut, berkeley, davis, sbd or duts_val (the DUTS-TR hold-out)."),
    root: Path = typer.Option(None, help="Data set root (grabcut defaults to ../shared/data/grabcut)."),
    max_clicks: int = typer.Option(20, help="Click budget per instance."),
    limit: int = typer.Option(None, help="Evaluate only the first N instances."),
    json_out: Path = typer.Option(None, "--json", help="Also write the figures as JSON."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    threads: int = typer.Option(2, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """NoC@85/90 and IoU@1/3/5 with RITM's simulated user, plus per-click latency."""
    with user_errors():
        import torch

        from robustvision.bench.capabilities import store_iseg
        from robustvision.commands import check_at_least
        from robustvision.segmentation.interactive import create_predictor, evaluate_dataset

        check_at_least("--limit", limit, 1, " instance")
        check_at_least("--threads", threads, 1)
        check_at_least("--max-clicks", max_clicks, 1)
        torch.set_num_threads(threads)
        samples = _samples(dataset, root, limit)
        if checkpoint is not None and len(predictor) > 1:
            raise ValueError("--checkpoint applies to one predictor; pass a single --predictor")
        rows, summaries = [], []
        for name in predictor:
            p = create_predictor(name, checkpoint=checkpoint, device=device)
            with Progress(console=console) as progress:
                task = progress.add_task(name, total=len(samples))
                summary = evaluate_dataset(
                    p, samples, max_clicks=max_clicks, progress=lambda r, t=task: progress.advance(t)
                )
            rows.append(summary.as_row())
            summaries.append(summary)
        table = Table(title=f"{dataset}: {len(samples)} instances, RITM clicker, max {max_clicks} clicks")
        for key in rows[0]:
            table.add_column(key)
        for row in rows:
            table.add_row(*[str(v) for v in row.values()])
        console.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps(rows, indent=2) + "\n")
        console.print(store_iseg(store, summaries, dataset=dataset, checkpoint=checkpoint))


@app.command()
def predict(
    image: Path = typer.Argument(..., help="Image file."),
    click: list[str] = typer.Option(
        ..., "--click", "-c", help="A click 'y,x,+' (positive) or 'y,x,-' (negative); repeat in order."
    ),
    out: Path = typer.Option(..., "--out", help="Mask PNG to write (255 = object)."),
    predictor: str = typer.Option("edgeflow", help="Predictor name."),
    checkpoint: Path = typer.Option(None, help="Checkpoint for a learned predictor."),
    prob_out: Path = typer.Option(None, help="Also write the probabilities as a .npy file."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Segment one object from clicks (all clicks are applied in order, as a user would)."""
    with user_errors():
        import cv2
        import numpy as np

        from robustvision.commands import check_writable_file
        from robustvision.segmentation.interactive import create_predictor
        from robustvision.segmentation.interactive.data import read_rgb

        if not image.is_file():
            raise FileNotFoundError(f"image {image} does not exist")
        check_writable_file("--out", out, (".png", ".bmp", ".tif", ".tiff"))
        _check_complete_image(image)
        clicks = [_parse_click(c) for c in click]
        p = create_predictor(predictor, checkpoint=checkpoint, device=device)
        p.set_image(read_rgb(image))
        probs = None
        for i in range(1, len(clicks) + 1):
            probs = p.predict(clicks[:i])
        mask = (probs > 0.49).astype(np.uint8) * 255
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), mask):
            raise ValueError(f"cannot write {out} (use a .png path)")
        if prob_out is not None:
            np.save(prob_out, probs)
        console.print(f"wrote {out}: {int((mask > 0).sum())} object pixels of {mask.size}")


def _check_complete_image(path: Path) -> None:
    """``ValueError`` for a file that is not a whole image (OpenCV decodes a truncated JPEG's top part silently)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"image {str(path)!r} cannot be read completely: {err}") from None


def _parse_click(text: str):
    from robustvision.segmentation.interactive import Click

    parts = text.replace(" ", "").split(",")
    if len(parts) != 3 or parts[2] not in {"+", "-", "pos", "neg"}:
        raise ValueError(f"a click is 'y,x,+' or 'y,x,-', got {text!r}")
    try:
        y, x = int(parts[0]), int(parts[1])
    except ValueError as err:
        raise ValueError(f"click coordinates must be integers, got {text!r}") from err
    return Click(y, x, parts[2] in {"+", "pos"})
