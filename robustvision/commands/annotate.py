"""``robustvision annotate DIR`` (the browser tool) and ``robustvision annotate export DIR --format ...``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from robustvision.commands import default_command_group, user_errors

app = typer.Typer(
    cls=default_command_group("serve"),
    no_args_is_help=True,
    help="The browser annotation tool: `robustvision annotate DIR` serves DIR at http://127.0.0.1:8765.",
)
console = Console()


@app.command("serve")
def serve(
    folder: Path = typer.Argument(..., help="Folder of images to annotate; annotations go to FOLDER/annotations/."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1 keeps it private to this machine)."),
    port: int = typer.Option(8765, help="Port (1-65535)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Another host name browsers reach the server by (repeatable); others are refused."
    ),
    labels: Path | None = typer.Option(None, help="Labels file (`index name r g b` lines); default FOLDER/labels.txt."),
    backend: str | None = typer.Option(None, help="Default segmentation backend (edgeflow, edgeflow_noedge, grabcut)."),
    device: str = typer.Option("cpu", help="Device for the networks: cpu, cuda, auto."),
) -> None:
    """Start the annotation server and print its URL."""
    with user_errors():
        from robustvision.runtime import require_extra

        for module in ("fastapi", "uvicorn"):
            require_extra(module, "app")  # the server's dependencies: one clear line when the extra is missing
        from robustvision.app.annotate.controller import AnnotationProject
        from robustvision.app.annotate.server import serve as run_server

        if not 1 <= port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        from robustvision.runtime import resolve_device

        project = AnnotationProject(folder, labels_file=labels, backend=backend, device=str(resolve_device(device)))
        records = project.list_images()
        console.print(
            f"[bold]robustvision annotate[/]: {len(records)} image(s) in {project.root} "
            f"(backend [cyan]{project.default_backend}[/])"
        )
        if host not in ("127.0.0.1", "localhost", "::1"):
            from robustvision.app.annotate.server import allowed_hosts

            names = ", ".join(allowed_hosts(host, allow_host))
            console.print(
                f"[yellow]warning[/]: listening on {host}: anyone who can reach it and open the page can edit "
                f"annotations; it answers the host names {names} (add more with --allow-host)"
            )
        console.print(f"open [link=http://{host}:{port}/]http://{host}:{port}/[/link]  (Ctrl+C stops; all is saved)")
    run_server(project, host=host, port=port, extra_hosts=allow_host)


@app.command("export")
def export(
    folder: Path = typer.Argument(..., help="The annotated folder."),
    format: str = typer.Option("coco", "--format", "-f", help="coco, png or labelme."),
    out: Path | None = typer.Option(None, help="Output folder (default FOLDER/annotations/export)."),
    rle: bool = typer.Option(False, help="COCO only: masks as compressed RLE instead of polygons."),
) -> None:
    """Export the annotations of FOLDER."""
    with user_errors():
        from robustvision.app.annotate.controller import AnnotationProject
        from robustvision.app.annotate.export import export_project

        project = AnnotationProject(folder, backend="grabcut")
        path = export_project(project, format, out, rle=rle)
        console.print(f"[green]exported[/] {format} -> {path}")
