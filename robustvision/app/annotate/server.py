"""HTTP routes over the annotation controller (FastAPI). No annotation rule lives here.

Security: the server binds to 127.0.0.1 unless told otherwise, serves images only through the controller (which
accepts only files listed directly in the folder) and the page only from the package's ``static/`` folder.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from robustvision.app.annotate.controller import AnnotationProject, NotFound, SessionPool
from robustvision.app.annotate.export import EXPORT_FORMATS, export_project
from robustvision.app.annotate.geometry import mask_to_png_bytes
from robustvision.app.annotate.labels import Label, check_unique

STATIC_DIR = Path(__file__).resolve().parent / "static"


class ClientRequest(BaseModel):
    client: str = Field(min_length=1, max_length=64)


class OpenRequest(ClientRequest):
    image: str


class ClickRequest(ClientRequest):
    x: int
    y: int
    positive: bool = True


class FinishRequest(ClientRequest):
    label: int
    object_id: str | None = None


class BackendRequest(ClientRequest):
    backend: str


class ObjectUpdate(BaseModel):
    label: int
    polygons: list[list[list[float]]]


class DoneRequest(BaseModel):
    done: bool


class LabelsUpdate(BaseModel):
    labels: list[dict[str, Any]]


class ExportRequest(BaseModel):
    format: str
    rle: bool = False


def mask_payload(session) -> dict[str, Any]:
    probs = session.probs
    mask = None if probs is None else "data:image/png;base64," + base64.b64encode(mask_to_png_bytes(probs)).decode()
    return {
        "clicks": [c.to_dict() for c in session.clicks],
        "can_undo": bool(session.history),
        "can_redo": bool(session.redo_stack),
        "mask": mask,
        "latency_ms": round(session.last_latency_ms, 2),
    }


def create_app(project: AnnotationProject) -> FastAPI:
    """The annotation tool's web app for ``project``."""
    app = FastAPI(title="robustvision annotate", docs_url=None, redoc_url=None)
    sessions = SessionPool(project)
    app.state.project = project
    app.state.sessions = sessions

    @app.exception_handler(NotFound)
    async def not_found(_: Request, err: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, err: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(OverflowError)
    async def too_large(_: Request, err: OverflowError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=413)

    @app.exception_handler(FileExistsError)
    async def exists(_: Request, err: FileExistsError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return {
            "folder": project.root.name,
            "labels": [lb.to_dict() for lb in project.labels],
            "backends": project.backends,
            "default_backend": project.default_backend,
            "images": [r.to_dict() for r in project.list_images()],
            "export_formats": list(EXPORT_FORMATS),
        }

    @app.get("/api/images")
    def images() -> list[dict[str, Any]]:
        return [r.to_dict() for r in project.list_images()]

    @app.get("/api/images/{name}/file")
    def image_file(name: str) -> FileResponse:
        return FileResponse(project.image_path(name))

    @app.get("/api/images/{name}/annotation")
    def annotation(name: str) -> dict[str, Any]:
        project.image_path(name)
        return project.annotation(name)

    @app.put("/api/images/{name}/objects/{object_id}")
    def update_object(name: str, object_id: str, body: ObjectUpdate) -> dict[str, Any]:
        project.image_path(name)
        return project.save_object(name, body.polygons, body.label, object_id=object_id)

    @app.delete("/api/images/{name}/objects/{object_id}")
    def delete_object(name: str, object_id: str) -> dict[str, Any]:
        return project.delete_object(name, object_id)

    @app.post("/api/images/{name}/done")
    def set_done(name: str, body: DoneRequest) -> dict[str, Any]:
        project.image_path(name)
        return project.set_done(name, body.done)

    @app.post("/api/session/open")
    def open_image(body: OpenRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            return {**session.open(body.image), "backend": session.backend, **mask_payload(session)}

    @app.post("/api/session/click")
    def click(body: ClickRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            session.click(body.x, body.y, body.positive)
            return mask_payload(session)

    @app.post("/api/session/undo")
    def undo(body: ClientRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            session.undo()
            return mask_payload(session)

    @app.post("/api/session/redo")
    def redo(body: ClientRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            session.redo()
            return mask_payload(session)

    @app.post("/api/session/reset")
    def reset(body: ClientRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            session.reset()
            return mask_payload(session)

    @app.post("/api/session/finish")
    def finish(body: FinishRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            obj = session.finish(body.label, body.object_id)
            return {"object": obj, **mask_payload(session)}

    @app.post("/api/session/backend")
    def backend(body: BackendRequest) -> dict[str, Any]:
        session = sessions.get(body.client)
        with session.lock:
            session.set_backend(body.backend)
            return {"backend": session.backend, **mask_payload(session)}

    @app.get("/api/labels")
    def labels() -> list[dict[str, Any]]:
        return [lb.to_dict() for lb in project.labels]

    @app.put("/api/labels")
    def put_labels(body: LabelsUpdate) -> list[dict[str, Any]]:
        new = [Label.from_dict(d) for d in body.labels]
        check_unique(new)
        project.set_labels(new)
        return [lb.to_dict() for lb in project.labels]

    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:
        from robustvision.app.annotate.controller import MAX_UPLOAD_BYTES

        data = await file.read(MAX_UPLOAD_BYTES + 1)
        name = project.save_upload(file.filename or "", data)
        return {"image": name}

    @app.post("/api/export")
    def export(body: ExportRequest) -> dict[str, Any]:
        path = export_project(project, body.format, rle=body.rle)
        return {"format": body.format, "path": str(path.relative_to(project.root))}

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status_code)

    return app


def serve(project: AnnotationProject, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run the app with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(project), host=host, port=port, log_level=log_level)
