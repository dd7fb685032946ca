"""HTTP routes over the annotation controller (FastAPI). No annotation rule lives here.

Security: the server binds to 127.0.0.1 unless told otherwise, serves images only through the controller (which
accepts only files listed directly in the folder) and the page only from the package's ``static/`` folder. Because
any web page the user visits can send requests to 127.0.0.1, and can point a host name it owns at 127.0.0.1 (DNS
rebinding), every request must also pass three checks (:class:`RequestGuard`):

- its ``Host`` is one the server was started for (127.0.0.1, localhost, ::1, ``--host``, ``--allow-host``);
- a state-changing request (POST, PUT, PATCH, DELETE) carrying an ``Origin`` comes from the tool's own origin;
- a state-changing request echoes the per-launch token that only the tool's own page holds (header ``X-RV-Token``).

Request bodies are limited in size (:data:`MAX_JSON_BYTES`; uploads :data:`controller.MAX_UPLOAD_BYTES` plus
multipart overhead) before any of them is parsed.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from robustvision.app.annotate import controller as _controller
from robustvision.app.annotate.controller import AnnotationProject, NotFound, SessionPool
from robustvision.app.annotate.export import EXPORT_FORMATS, export_project
from robustvision.app.annotate.geometry import mask_to_png_bytes
from robustvision.app.annotate.labels import Label, check_unique

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "X-RV-Token"
TOKEN_META = "rv-token"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JSON_BYTES = 4 * 1024 * 1024  # a polygon of 100,000 points is about 3 MB of JSON
MULTIPART_OVERHEAD = 64 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def allowed_hosts(host: str = "127.0.0.1", extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names the server answers: the local names, the bound ``host`` and ``extra``.

    A server bound to every interface (``0.0.0.0`` or ``::``) also answers this machine's host name.
    """
    names = [*LOCAL_HOSTS, host, *extra]
    if host in WILDCARD_BINDS:
        names += [socket.gethostname(), socket.getfqdn()]
    out: list[str] = []
    for name in names:
        name = name.strip().strip("[]").lower()
        if ":" in name:  # an IPv6 address arrives in Host as [addr]
            name = f"[{name}]"
        if name and name not in out:  # a wildcard bind address is a name browsers can use too (0.0.0.0)
            out.append(name)
    return out


class RequestGuard:
    """ASGI middleware: same-origin and token checks on state-changing requests, and a request body size limit.

    Args:
        app: the wrapped ASGI app.
        token: the per-launch token a state-changing request must send in ``X-RV-Token``.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    @staticmethod
    def body_limit(path: str) -> int:
        if path == "/api/upload":
            return _controller.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
        return MAX_JSON_BYTES

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """Why a request is refused (status, message), or None."""
        headers = Headers(scope=scope)
        if scope["method"] in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None:
                parts = urlsplit(origin)
                if parts.scheme not in ("http", "https") or parts.netloc.lower() != headers.get("host", "").lower():
                    return 403, f"cross-origin request from {origin[:100]!r} refused"
            sent = headers.get(TOKEN_HEADER.lower(), "")
            if not secrets.compare_digest(sent.encode(), self.token.encode()):
                return 403, f"missing or wrong {TOKEN_HEADER} header: reload the annotation page"
        length = headers.get("content-length")
        limit = self.body_limit(scope["path"])
        if length is not None:
            if not length.isdigit():
                return 400, "invalid Content-Length"
            if int(length) > limit:
                return 413, f"request body of {int(length):,} bytes exceeds the {limit:,}-byte limit"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem:
            await self._refuse(send, *problem)
            return
        limit = self.body_limit(scope["path"])
        if Headers(scope=scope).get("content-length") is not None:
            await self.app(scope, receive, send)  # the server stops a body at its declared length
            return
        # A body without a length (chunked): read it here, up to the limit, before the app parses any of it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._refuse(send, 413, f"request body exceeds the {limit:,}-byte limit")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


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
        "can_undo": session.can_undo,
        "can_redo": session.can_redo,
        "mask": mask,
        "latency_ms": round(session.last_latency_ms, 2),
    }


def create_app(
    project: AnnotationProject,
    host: str = "127.0.0.1",
    extra_hosts: Sequence[str] = (),
    token: str | None = None,
) -> FastAPI:
    """The annotation tool's web app for ``project``.

    Args:
        project: the folder being annotated.
        host: the interface the server binds (its name is accepted in ``Host`` headers).
        extra_hosts: more host names to accept (the names users reach a shared server by).
        token: the per-launch token state-changing requests must echo (a random one when None).

    Returns:
        The app; ``app.state.token`` holds the token and ``app.state.allowed_hosts`` the accepted names.
    """
    app = FastAPI(title="robustvision annotate", docs_url=None, redoc_url=None)
    sessions = SessionPool(project)
    app.state.project = project
    app.state.sessions = sessions
    app.state.token = token or secrets.token_urlsafe(32)
    app.state.allowed_hosts = allowed_hosts(host, extra_hosts)
    # added last = outermost: the Host check runs first
    app.add_middleware(RequestGuard, token=app.state.token)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=app.state.allowed_hosts)
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    page = page.replace("<head>", f'<head>\n  <meta name="{TOKEN_META}" content="{app.state.token}">', 1)

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
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

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
        data = await file.read(_controller.MAX_UPLOAD_BYTES + 1)
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


def serve(
    project: AnnotationProject,
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "warning",
    extra_hosts: Sequence[str] = (),
) -> None:
    """Run the app with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(project, host=host, extra_hosts=extra_hosts), host=host, port=port, log_level=log_level)
