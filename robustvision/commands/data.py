"""``robustvision data``: list the data sets and inspect one split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from robustvision.commands import check_at_least, user_errors

app = typer.Typer(no_args_is_help=True, help="List and inspect data sets.")
console = Console()


@app.command("list")
def list_() -> None:
    """Print every data set with its kind, whether it needs --root, and what it is."""
    from robustvision.data import DATASETS, list_datasets

    table = Table(title="data sets")
    for col in ("name", "kind", "needs --root", "what"):
        table.add_column(col)
    for name in list_datasets():
        meta = DATASETS.meta(name)
        doc = (DATASETS.get(name).__doc__ or "").replace("``", "").strip().splitlines()
        table.add_row(name, str(meta.get("kind", "")), "yes" if meta.get("needs_root") else "no", doc[0] if doc else "")
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Data set name (robustvision data list)."),
    root: Path | None = typer.Option(None, help="Folder of its files (not needed by digits)."),
    image_size: int | None = typer.Option(None, help="Resize to this side."),
) -> None:
    """Load a data set's splits and print their size, classes, image size, channels and class counts."""
    from collections import Counter

    from robustvision.data import create_dataset

    with user_errors():
        check_at_least("--image-size", image_size, 1, " pixel")
        splits = {}
        for split in ("train", "test"):
            try:
                splits[split] = create_dataset(name, split=split, root=root, image_size=image_size)
            except FileNotFoundError:
                if split == "train" and name == "imagefolder":
                    continue  # an ImageFolder tree may hold only an evaluation split
                raise
    table = Table(title=f"data set {name!r}")
    for col in ("split", "images", "classes", "image size", "channels", "per class (first 10)"):
        table.add_column(col)
    for split, ds in splits.items():
        if hasattr(ds, "labels"):
            labels = ds.labels.tolist()
        elif hasattr(ds, "samples"):
            labels = [int(label) for _, label in ds.samples]
        else:
            labels = [int(ds[i][1]) for i in range(len(ds))]
        counts = Counter(labels)
        head = ", ".join(f"{ds.classes[c]}:{counts[c]}" for c in sorted(counts)[:10])
        table.add_row(
            split, str(len(ds)), str(ds.num_classes), f"{ds.image_size}x{ds.image_size}", str(ds.channels), head
        )
    console.print(table)
