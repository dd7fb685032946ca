"""A gallery of rendered views (PNG files and an HTML page) for camouflage textures."""

from __future__ import annotations

import html
from pathlib import Path

import torch
from torch import nn

from robustvision.physical.data import ViewSet, render_views
from robustvision.physical.train import predict

__all__ = ["write_gallery"]


def write_gallery(
    out: Path,
    views: ViewSet,
    textures: dict[str, nn.Module],
    classifiers: dict[str, nn.Module],
    *,
    limit: int = 16,
    car_classes: tuple[int, ...] = (1,),
    upscale: int = 3,
) -> Path:
    """Render up to ``limit`` views under each texture; write ``gallery/<texture>_<i>.png`` and ``index.html``.

    Each image is captioned with every classifier's probability of "car".
    """
    from PIL import Image

    out = Path(out)
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    sub = views.subset(range(min(limit, len(views))))
    rows = []
    for tname, tex in textures.items():
        with torch.no_grad():
            imgs = render_views(sub, tex)
        probs = {m: torch.softmax(predict(clf, imgs), 1)[:, list(car_classes)].sum(1) for m, clf in classifiers.items()}
        cells = []
        for i, img in enumerate(imgs):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            pil = Image.fromarray(arr).resize((arr.shape[1] * upscale, arr.shape[0] * upscale), Image.NEAREST)
            name = f"{tname}_{i:02d}.png"
            pil.save(out / "gallery" / name)
            cap = ", ".join(f"{html.escape(m)} p(car)={float(p[i]):.2f}" for m, p in probs.items())
            cells.append(f'<figure><img src="gallery/{name}"><figcaption>{cap}</figcaption></figure>')
        rows.append(f"<h2>{html.escape(tname)}</h2><div class=row>{''.join(cells)}</div>")
    page = (
        "<!doctype html><meta charset=utf-8><title>DAS camouflage gallery</title>"
        "<style>body{font-family:sans-serif}.row{display:flex;flex-wrap:wrap;gap:6px}"
        "figure{margin:0;font-size:11px;width:200px}img{width:192px;image-rendering:pixelated}</style>"
        "<h1>DAS camouflage gallery</h1>" + "".join(rows)
    )
    path = out / "index.html"
    path.write_text(page)
    return path
