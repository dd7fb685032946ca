"""Per-click latency of the annotation server: HTTP round trip vs the bare predictor call, at 480x320.

Starts the real server (uvicorn, 127.0.0.1, a free port) on a generated 480x320 photo-like image, opens the image
(the per-image backbone work happens then, as in the tool), and times N clicks on the object through HTTP; the peer
is the same predictor called directly in-process with the same clicks, measured in the same run.

    python benchmarks/annotate_latency.py [--clicks 30] [--backends edgeflow grabcut]
    python benchmarks/annotate_latency.py --quick     # 5 clicks per backend (a smoke run)
    python benchmarks/annotate_latency.py --plain-beside   # + the learned backends with optimize=false

The backends take turns click by click (HTTP, then direct), so every row sees the same load on a shared machine.
``--plain-beside`` adds ``<backend>_plain`` rows: the same network without the inference fast path
(``InferenceConfig.optimize=False``), served by the same tool.

Target: median HTTP round trip at most 100 ms on 2 CPU cores (issue 16).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
from _support import print_prerequisites, run
from rich.console import Console
from rich.table import Table


def make_image(folder: Path) -> Path:
    """A 480x320 scene from scikit-image's astronaut photo with the person as the object."""
    from skimage import data

    img = cv2.resize(data.astronaut(), (480, 320), interpolation=cv2.INTER_AREA)
    path = folder / "scene.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    return path


def click_points(n: int, seed: int = 0) -> list[tuple[int, int, bool]]:
    """``n`` seeded clicks ``(x, y, positive)`` around the test image's object (every third one negative)."""
    rng = np.random.default_rng(seed)
    pts = [(150 + int(rng.integers(-40, 40)), 160 + int(rng.integers(-60, 60)), bool(i % 3 != 2)) for i in range(n)]
    return pts


def plain_builder(backend: str):
    """A predictor builder for ``backend`` without the inference fast path (``optimize=False``)."""
    from robustvision.segmentation.interactive import create_predictor

    def build(checkpoint=None, device="cpu", **kwargs):
        return create_predictor(backend, checkpoint=checkpoint, device=device, **{**kwargs, "optimize": False})

    return build


def time_http_clicks(client, backends: list[str], points: list[tuple[int, int, bool]]) -> dict[str, list[float]]:
    """Round-trip ms of each click through the server, the backends taking turns (a new object every 5 clicks)."""
    http_ms: dict[str, list[float]] = {b: [] for b in backends}
    for i, (x, y, pos) in enumerate(points):
        for backend in backends:
            cid = f"bench-{backend}"
            if i % 5 == 0:
                client.post("/api/session/reset", json={"client": cid}).raise_for_status()
            t0 = time.perf_counter()
            client.post("/api/session/click", json={"client": cid, "x": x, "y": y, "positive": pos}).raise_for_status()
            http_ms[backend].append((time.perf_counter() - t0) * 1000)
    return http_ms


def time_direct_clicks(backends: list[str], image: np.ndarray, points: list[tuple[int, int, bool]]) -> dict:
    """Milliseconds of the same clicks on the bare predictors (in-process), the backends taking turns."""
    from robustvision.app.annotate.threads import on_torch_thread
    from robustvision.segmentation.interactive import Click, create_predictor

    # The direct calls run on the tool's torch thread too (see robustvision.app.annotate.threads.on_torch_thread):
    # from any other thread they would be slowed by the second OpenMP team, not by HTTP.
    predictors = {b: on_torch_thread(create_predictor, b) for b in backends}
    for predictor in predictors.values():
        on_torch_thread(predictor.set_image, image)
    direct_ms: dict[str, list[float]] = {b: [] for b in backends}
    clicks: list[Click] = []
    for i, (x, y, pos) in enumerate(points):
        if i % 5 == 0:
            clicks = []
            for predictor in predictors.values():
                predictor.reset()
        clicks.append(Click(y, x, pos))
        for backend, predictor in predictors.items():
            t0 = time.perf_counter()
            on_torch_thread(predictor.predict, clicks)
            direct_ms[backend].append((time.perf_counter() - t0) * 1000)
    return direct_ms


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``."""
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    """Run the benchmark and print the latency table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=30, help="clicks per backend (a new object every 5 clicks)")
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--quick", action="store_true", help="5 clicks per backend (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2)")
    parser.add_argument(
        "--plain-beside", action="store_true", help="also serve the learned backends with optimize=false"
    )
    args = parser.parse_args()
    if args.quick:
        args.clicks = 5
    print_prerequisites([])

    import torch
    import uvicorn

    from robustvision.app.annotate.controller import AnnotationProject
    from robustvision.app.annotate.server import create_app
    from robustvision.app.annotate.threads import on_torch_thread
    from robustvision.segmentation.interactive import PREDICTORS, create_predictor

    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    console = Console()
    folder = Path(tempfile.mkdtemp(prefix="rv_annotate_bench_"))
    image_path = make_image(folder)
    image = cv2.imread(str(image_path))[:, :, ::-1].copy()
    project = AnnotationProject(folder)
    backends = list(args.backends or project.backends)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(project)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    points = click_points(args.clicks)
    table = Table(title=f"Per-click latency at 480x320, {args.clicks} clicks, torch threads={args.threads}")
    for col in ("backend", "HTTP median ms", "HTTP p95 ms", "direct median ms", "direct p95 ms", "HTTP overhead ms"):
        table.add_column(col, justify="right" if "ms" in col else "left", no_wrap=col == "backend")
    if args.plain_beside:
        for backend in [b for b in backends if PREDICTORS.meta(b).get("kind") == "learned"]:
            PREDICTORS.add(f"{backend}_plain", plain_builder(backend), kind="learned")
            backends.append(f"{backend}_plain")
    # State-changing calls echo the per-launch token, as the tool's own page does.
    with httpx.Client(base_url=base, timeout=60, headers={"X-RV-Token": app.state.token}) as client:
        ready = []
        for backend in backends:
            try:
                on_torch_thread(create_predictor, backend)
            except (FileNotFoundError, ValueError, RuntimeError) as err:
                console.print(f"[yellow]skip {backend}[/]: {err}")
                continue
            cid = f"bench-{backend}"
            client.post("/api/session/backend", json={"client": cid, "backend": backend}).raise_for_status()
            client.post("/api/session/open", json={"client": cid, "image": image_path.name}).raise_for_status()
            ready.append(backend)
        http_ms = time_http_clicks(client, ready, points)
        direct_ms = time_direct_clicks(ready, image, points)
        for backend in ready:
            hm, dm = statistics.median(http_ms[backend]), statistics.median(direct_ms[backend])
            table.add_row(
                backend,
                f"{hm:.1f}",
                f"{percentile(http_ms[backend], 95):.1f}",
                f"{dm:.1f}",
                f"{percentile(direct_ms[backend], 95):.1f}",
                f"{hm - dm:.1f}",
            )
    server.should_exit = True
    thread.join(timeout=10)
    console.print(table)


if __name__ == "__main__":
    run(main)
