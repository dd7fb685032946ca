"""``robustvision das``: render the car data set, train the targets, optimise and evaluate camouflage."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.progress import Progress

from robustvision.commands import check_at_least, user_errors
from robustvision.commands.results import STORE_HELP

app = typer.Typer(no_args_is_help=True)
console = Console()

DEFAULT_MODELS = "das_resnet,das_vit,das_mixer"


MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def __getattr__(name: str):
    # ``DAS_IMAGENET_CAR_CLASSES`` lives in robustvision.physical.targets; it is still importable from here, lazily,
    # so that loading the CLI does not import the renderer.
    if name == "DAS_IMAGENET_CAR_CLASSES":
        from robustvision.physical.targets import DAS_IMAGENET_CAR_CLASSES

        return DAS_IMAGENET_CAR_CLASSES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _assets(mesh: str | None, faces: str | None, seed_texture: str | None, edge: str | None, procedural: bool):
    from robustvision.physical.data import load_car_assets

    if mesh is not None and Path(mesh).suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"--mesh {mesh!r} is not a mesh file ({', '.join(MESH_SUFFIXES)})")
    return load_car_assets(mesh, faces, seed_texture, edge, procedural=procedural)


@app.command()
def dataset(
    out: Path = typer.Option(Path("runs/das"), help="Output folder (writes train.pt and test.pt)."),
    train_size: int = typer.Option(1000, help="Training images."),
    test_size: int = typer.Option(300, help="Test images (0: render the training split only)."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    mesh: str | None = typer.Option(None, help="Mesh file (default: the DAS Audi when present, else generated)."),
    faces: str | None = typer.Option(None, help="Paintable face ids, 1-based (default: DAS all_faces.txt)."),
    procedural: bool = typer.Option(False, help="Use the generated car even when the Audi is present."),
    backgrounds: str | None = typer.Option(None, help="Folder of background photos."),
    random_paint: float = typer.Option(0.5, help="Fraction of car images with random paint."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Render car-vs-not-car images over real backgrounds (car: original or random paint)."""
    with user_errors():
        from robustvision.physical.data import load_backgrounds, render_car_dataset

        assets = _assets(mesh, faces, None, None, procedural)
        bgs = load_backgrounds(backgrounds)
        out.mkdir(parents=True, exist_ok=True)
        if train_size < 1 or test_size < 0:
            raise ValueError("--train-size must be >= 1 and --test-size >= 0")
        for split, n, s in (("train", train_size, seed), ("test", test_size, seed + 1)):
            if n == 0:
                continue
            with Progress(console=console) as bar:
                task = bar.add_task(f"rendering {split}", total=n)
                data = render_car_dataset(
                    assets,
                    n,
                    image_size,
                    seed=s,
                    backgrounds=bgs,
                    random_paint=random_paint,
                    progress=lambda i, t=task: bar.advance(t),
                )
            data["meta"] = {"mesh": assets.name, "image_size": image_size, "seed": s}
            torch.save(data, out / f"{split}.pt")
        written = " and ".join(str(out / f"{k}.pt") for k, n in (("train", train_size), ("test", test_size)) if n)
        console.print(f"wrote {written} ({assets.name})")


@app.command()
def train(
    data: Path = typer.Option(Path("runs/das"), help="Folder with train.pt/test.pt from `das dataset`."),
    models: str = typer.Option(DEFAULT_MODELS, help="Comma-separated target architectures."),
    detector: bool = typer.Option(True, help="Also train the one-box car detector."),
    epochs: int = typer.Option(8, help="Epochs."),
    lr: float = typer.Option(2e-3, help="AdamW learning rate."),
    shift: int = typer.Option(
        0, help="Classifiers: random translation by up to this many pixels (das_vit needs it; see docs)."
    ),
    extra_data: str = typer.Option(
        "", help="Comma-separated extra training sets (.pt from `das dataset` or render_car_dataset) to append."
    ),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Train car classifiers (one per family) and the car detector; writes <data>/models/*.safetensors."""
    with user_errors():
        from robustvision.physical.train import TargetTrainConfig, train_targets
        from robustvision.runtime import resolve_device
        from robustvision.training.progress import progress_bar

        cfg = TargetTrainConfig(epochs=epochs, lr=lr, shift=shift, seed=seed, device=str(resolve_device(device)))
        names = [m.strip() for m in models.split(",") if m.strip()]
        with progress_bar(console=console) as bar:
            tasks: dict[str, int] = {}

            def advance(name: str, step: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"training {name}", total=total, info="")
                bar.update(tasks[name], completed=step, total=total)

            train_targets(
                data,
                names,
                cfg,
                detector=detector,
                extra_data=extra_data.split(","),
                progress=advance,
                log=console.print,
            )


@app.command()
def optimize(
    model: str = typer.Option(
        ...,
        help="Target: a checkpoint from `das train`, or a zoo name such as timm:resnet50 (with --pretrained); "
        "several, comma-separated, optimise one texture against their ensemble (losses summed).",
    ),
    pretrained: bool = typer.Option(False, help="Zoo models: load the library's ImageNet weights (downloads)."),
    image_size: int = typer.Option(224, help="Zoo models: input size."),
    car_classes: str = typer.Option(
        "", help="Comma-separated 'car' class ids (default: 1 for `das train` models, DAS's 7 ImageNet car classes)."
    ),
    out: Path = typer.Option(Path("runs/das/attack"), help="Output folder."),
    mesh: str | None = typer.Option(None, help="Mesh file (default: the DAS Audi when present)."),
    faces: str | None = typer.Option(None, help="Paintable face ids, 1-based."),
    seed_texture: str | None = typer.Option(None, help="Seed pattern image (default: DAS smile.jpg)."),
    edge: str | None = typer.Option(None, help="Edge mask of the seed (default: smile_edge.jpg or Canny)."),
    procedural: bool = typer.Option(False, help="Attack the generated car."),
    mode: str = typer.Option("das", help="das or naive (classification loss only)."),
    texture: str = typer.Option(
        "uv", help="uv (a UV atlas; generalises to unseen poses, see docs) or cube (DAS's per-face texture cubes)."
    ),
    atlas_size: int = typer.Option(32, help="UV atlas side (32 transfers across families better than 64; see docs)."),
    views: int = typer.Option(160, help="Pool of cached training views (batches are sampled from it)."),
    steps: int = typer.Option(300, help="Optimisation steps."),
    batch_size: int = typer.Option(8, help="Views per step."),
    lr: float = typer.Option(0.1, help="Adam peak learning rate."),
    lr_schedule: str = typer.Option("cosine", help="cosine (warm-up + cosine decay) or constant."),
    cls_loss: str = typer.Option("margin", help="margin (C&W, keeps pushing after a flip) or ce (-log(1-p(car)))."),
    margin: float = typer.Option(5.0, help="kappa of the margin loss (logits)."),
    eot_background: float = typer.Option(0.8, help="Probability of a fresh random background per view and step."),
    eot_photometric: float = typer.Option(0.2, help="Brightness/contrast jitter per view and step."),
    eot_shift: int = typer.Option(0, help="Random translation (pixels) of each rendered view per step."),
    content_weight: float = typer.Option(
        3e-5, help="lambda of the seed-content loss (3e-5 for the UV atlas; DAS used 1e-4 with 309-face cubes)."
    ),
    cls_weight: float = typer.Option(1.0, help="Weight of the targeted 'not car' loss in DAS mode."),
    eval_views: int = typer.Option(32, help="Held-out views for metrics.json."),
    seed: int = typer.Option(2333, help="Random seed."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Optimise a camouflage texture; writes texture.pt, gallery PNGs + index.html and metrics.json."""
    with user_errors():
        from robustvision.bench.capabilities import store_das
        from robustvision.physical.attack import AttackConfig, optimize_texture
        from robustvision.physical.data import load_backgrounds, make_views, original_texture
        from robustvision.physical.evaluate import evaluate_texture
        from robustvision.physical.report import write_gallery
        from robustvision.physical.texture import create_texture
        from robustvision.runtime import resolve_device

        check_at_least("--views", views, 1)
        check_at_least("--eval-views", eval_views, 1)
        targets = [_target(m.strip(), pretrained, image_size) for m in model.split(",") if m.strip()]
        if not targets:
            raise ValueError("--model is empty")
        sizes = {c["image_size"] for _, c in targets}
        if len(sizes) > 1:
            raise ValueError(f"the ensemble's models take different image sizes {sorted(sizes)}")
        if len({tuple(c["car_classes"]) for _, c in targets}) > 1 and not car_classes.strip():
            raise ValueError("the ensemble's models have different car classes: give --car-classes")
        names = [c["arch"] for _, c in targets]
        if len(set(names)) < len(names):
            raise ValueError(f"--model names the same architecture twice: {', '.join(names)}")
        clfs = {c["arch"]: m for m, c in targets}
        arch = "+".join(names)
        size = targets[0][1]["image_size"]
        cars = tuple(int(c) for c in car_classes.split(",") if c.strip()) or tuple(targets[0][1]["car_classes"])
        assets = _assets(mesh, faces, seed_texture, edge, procedural)
        bgs = load_backgrounds()
        train_views = make_views(assets.mesh, views, size, bgs, generator=torch.Generator().manual_seed(seed))
        test_views = make_views(assets.mesh, eval_views, size, bgs, generator=torch.Generator().manual_seed(seed + 1))
        dev = str(resolve_device(device))
        cfg = AttackConfig(
            mode=mode,  # type: ignore[arg-type]
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,  # type: ignore[arg-type]
            cls_loss=cls_loss,  # type: ignore[arg-type]
            margin=margin,
            eot_background=eot_background,
            eot_photometric=eot_photometric,
            eot_shift=eot_shift,
            texture=texture,  # type: ignore[arg-type]
            atlas_size=atlas_size,
            seed=seed,
            device=dev,
            car_classes=cars,
        )
        cfg.weights.content = content_weight
        cfg.weights.classification = cls_weight
        for m in clfs.values():
            m.to(dev)
        with Progress(console=console) as bar:
            task = bar.add_task(f"{mode} attack on {arch}", total=steps)
            result = optimize_texture(
                list(clfs.values()),
                assets,
                train_views,
                cfg,
                backgrounds=bgs,
                progress=lambda s, row: bar.update(task, completed=s + 1),
            )
        for m in clfs.values():
            m.cpu()
        out.mkdir(parents=True, exist_ok=True)
        seed_tex = create_texture(texture, assets.mesh, _seed_init(assets, cfg), cube_size=cfg.cube_size)
        torch.save(
            {
                "kind": texture,
                "state": result.texture.state_dict(),
                "config": cfg.__dict__ | {"weights": cfg.weights.__dict__},
                "mesh": assets.name,
            },
            out / "texture.pt",
        )
        metrics = {
            "model": arch,
            "seconds_per_step": result.seconds_per_step,
            "final_losses": result.history[-1],
            "original": evaluate_texture(original_texture(assets.mesh), test_views, clfs, car_classes=cars),
            "seed": evaluate_texture(seed_tex, test_views, clfs, car_classes=cars),
            "attacked": evaluate_texture(result.texture, test_views, clfs, seed_texture=seed_tex, car_classes=cars),
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "history.json").write_text(json.dumps(result.history))
        write_gallery(
            out,
            test_views,
            {"original": original_texture(assets.mesh), "seed": seed_tex, mode: result.texture},
            clfs,
            car_classes=cars,
        )
        console.print(json.dumps(metrics, indent=2))
        textures = {"original": metrics["original"], "seed": metrics["seed"], out.resolve().name: metrics["attacked"]}
        console.print(store_das(store, textures, car=assets.name, n=eval_views, seed=seed + 1))


def _target(model: str, pretrained: bool, image_size: int):
    """A checkpoint written by `das train`, or a zoo model (ImageNet head) by name."""
    from robustvision.physical.targets import DAS_IMAGENET_CAR_CLASSES, load_model

    if Path(model).suffix == ".safetensors" or Path(model).is_file():
        clf, card = load_model(model)
        return clf, card | {"car_classes": [1]}
    try:
        from robustvision.models import create_model
    except ImportError as err:
        raise ValueError(f"{model!r} is not a checkpoint file and the model zoo is not available") from err
    clf = create_model(model, num_classes=1000, image_size=image_size, pretrained=pretrained).eval()
    return clf, {"arch": model, "image_size": image_size, "car_classes": list(DAS_IMAGENET_CAR_CLASSES)}


def _seed_init(assets, cfg):
    import torch.nn.functional as F

    if cfg.texture == "uv":
        return F.interpolate(assets.seed[None], size=(cfg.atlas_size,) * 2, mode="bilinear", align_corners=False)[0]
    return assets.seed


@app.command()
def evaluate(
    texture: str = typer.Option(..., help="texture.pt from `das optimize` ('original' or 'seed' for baselines)."),
    models: str = typer.Option(..., help="Comma-separated classifier/detector checkpoints (.safetensors)."),
    mesh: str | None = typer.Option(None, help="Mesh file (default: the DAS Audi when present)."),
    faces: str | None = typer.Option(None, help="Paintable face ids, 1-based."),
    procedural: bool = typer.Option(False, help="Use the generated car."),
    views: int = typer.Option(100, help="Held-out views."),
    seed: int = typer.Option(7, help="Seed of the held-out views."),
    out: Path | None = typer.Option(None, help="Write the metrics as JSON here."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Measure a texture's car accuracy on any models (and AP@0.5 of a detector) on held-out views."""
    with user_errors():
        from robustvision.bench.capabilities import das_texture_label, store_das
        from robustvision.physical.data import load_backgrounds, make_views, original_texture
        from robustvision.physical.evaluate import evaluate_texture
        from robustvision.physical.targets import load_model
        from robustvision.physical.texture import create_texture

        check_at_least("--views", views, 1)
        assets = _assets(mesh, faces, None, None, procedural)
        classifiers, detector, size = {}, None, None
        for path in [m.strip() for m in models.split(",") if m.strip()]:
            m, card = load_model(path)
            size = card["image_size"]
            if card.get("kind") == "detector":
                detector = m
            elif list(card.get("classes", [])) != ["not_car", "car"]:
                # car accuracy reads class 1 as "car": any other classifier would score a meaningless number
                raise ValueError(
                    f"{path} is not a car-vs-not-car classifier from `robustvision das train` "
                    f"(its classes: {card.get('classes', 'not recorded')})"
                )
            else:
                classifiers[card["arch"]] = m
        if size is None:
            raise ValueError("no model given")
        seed_tex = create_texture("cube", assets.mesh, assets.seed)
        if texture == "original":
            tex = original_texture(assets.mesh)
        elif texture == "seed":
            tex = seed_tex
        else:
            tex = load_texture(texture, assets)
        vs = make_views(assets.mesh, views, size, load_backgrounds(), generator=torch.Generator().manual_seed(seed))
        metrics = evaluate_texture(tex, vs, classifiers, detector=detector, seed_texture=seed_tex)
        console.print(json.dumps(metrics, indent=2))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2))
        console.print(store_das(store, {das_texture_label(texture): metrics}, car=assets.name, n=views, seed=seed))


def load_texture(path: str, assets):
    """Rebuild a texture saved by ``das optimize``."""
    from robustvision.physical.texture import create_texture

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"texture file not found: {p}")
    from robustvision.models.checkpoints import torch_load_trusted

    blob = torch_load_trusted(p, what="texture")
    try:
        cfg = blob["config"]
        kind, param = blob["kind"], blob["state"]["param"]
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"{p} is not a texture saved by `robustvision das optimize`") from None
    init = _seed_init(assets, type("C", (), cfg))
    tex = create_texture(kind, assets.mesh, init, cube_size=cfg.get("cube_size", 6))
    if tex.param.shape != param.shape:
        raise ValueError(f"{p} was optimised for another mesh or face list ({blob.get('mesh')})")
    tex.load_state_dict(blob["state"])
    return tex.eval()
