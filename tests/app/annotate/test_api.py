"""The annotation tool's controller and HTTP API (FastAPI TestClient; no browser)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from robustvision.app.annotate.controller import AnnotationProject, ClickSession
from robustvision.app.annotate.export import export_project
from robustvision.app.annotate.labels import Label, parse_labels, read_labels


@pytest.fixture
def client(project):
    from robustvision.app.annotate.server import create_app

    app = create_app(project)
    return TestClient(app, base_url="http://127.0.0.1:8765", headers={"X-RV-Token": app.state.token})


def test_listing_marks_corrupt_images_and_ignores_other_files(project):
    records = {r.name: r for r in project.list_images()}
    assert set(records) == {"disc.png", "second.jpg", "corrupt.jpg"}
    assert records["corrupt.jpg"].status == "error" and "cannot read" in records["corrupt.jpg"].error
    assert records["disc.png"].status == "unlabelled"


def test_click_undo_redo_finish_and_reopen(project):
    session = ClickSession(project)
    session.open("disc.png")
    probs = session.click(64, 48, True)
    assert probs.shape == (96, 128) and probs[48, 64] > 0.5 and probs[10, 100] < 0.5
    session.click(15, 15, False)
    assert len(session.clicks) == 2
    session.undo()
    assert len(session.clicks) == 1 and session.can_redo
    session.redo()
    assert len(session.clicks) == 2
    session.undo()
    obj = session.finish(1)
    assert session.clicks == [] and obj["label"] == 1 and len(obj["polygons"][0]) >= 3
    # reopening (a new project object, as after a server restart) restores the object
    again = AnnotationProject(project.root, backend="grabcut")
    data = again.annotation("disc.png")
    assert [o["id"] for o in data["objects"]] == [obj["id"]]
    assert {r.name: r.status for r in again.list_images()}["disc.png"] == "in_progress"


def test_bad_input_is_rejected_clearly(project):
    session = ClickSession(project)
    with pytest.raises(ValueError, match="open an image"):
        session.click(1, 1, True)
    session.open("disc.png")
    with pytest.raises(ValueError, match="outside"):
        session.click(500, 5, True)
    with pytest.raises(ValueError, match="nothing to finish"):
        session.finish(1)
    with pytest.raises(ValueError, match="unknown label"):
        project.save_object("disc.png", [[[1, 1], [10, 1], [10, 10]]], label=7)
    with pytest.raises(ValueError, match="outside"):
        project.save_object("disc.png", [[[1, 1], [1000, 1], [10, 10]]], label=1)
    with pytest.raises(ValueError, match="line 1"):
        parse_labels("one two three\n")


def test_api_round_trip(client, project):
    state = client.get("/api/state").json()
    assert "grabcut" in state["backends"] and [lb["name"] for lb in state["labels"]] == ["disc", "square"]
    opened = client.post("/api/session/open", json={"client": "tab1", "image": "disc.png"}).json()
    assert (opened["width"], opened["height"]) == (128, 96)
    res = client.post("/api/session/click", json={"client": "tab1", "x": 64, "y": 48, "positive": True})
    assert res.status_code == 200 and res.json()["mask"].startswith("data:image/png;base64,")
    fin = client.post("/api/session/finish", json={"client": "tab1", "label": 1}).json()
    oid = fin["object"]["id"]
    poly = [[10, 10], [40, 10], [40, 40], [10, 40]]
    upd = client.put(f"/api/images/disc.png/objects/{oid}", json={"label": 2, "polygons": [poly]})
    assert upd.status_code == 200 and upd.json()["label"] == 2
    ann = client.get("/api/images/disc.png/annotation").json()
    assert ann["objects"][0]["polygons"] == [[[float(x), float(y)] for x, y in poly]]
    assert client.post("/api/images/disc.png/done", json={"done": True}).json()["done"] is True
    assert client.delete(f"/api/images/disc.png/objects/{oid}").status_code == 200
    assert client.delete(f"/api/images/disc.png/objects/{oid}").status_code == 404
    labels = client.put("/api/labels", json={"labels": [{"index": 3, "name": "car", "color": [1, 2, 3]}]})
    assert labels.status_code == 200 and read_labels(project.labels_file) == [Label(3, "car", (1, 2, 3))]
    assert (
        client.put("/api/labels", json={"labels": [{"index": 0, "name": "x", "color": [1, 2, 3]}]}).status_code == 400
    )
    bad_click = client.post("/api/session/click", json={"client": "tab1", "x": 900, "y": 1, "positive": True})
    assert bad_click.status_code == 400 and "outside" in bad_click.json()["detail"]
    assert client.post("/api/session/backend", json={"client": "tab1", "backend": "nope"}).status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/..%2Fsecret.png/file",
        "/api/images/%2E%2E%2Fsecret.png/file",
        "/api/images/../secret.png/file",
        "/api/images/notes.txt/file",
        "/api/images/labels.txt/file",
        "/api/images/annotations/file",
        "/api/images/missing.png/file",
        "/static/../../secret.png",
        "/static/%2E%2E/%2E%2E/secret.png",
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
    ],
)
def test_path_traversal_gets_404(client, url):
    assert client.get(url).status_code == 404


def test_listed_image_is_served(client):
    res = client.get("/api/images/disc.png/file")
    assert res.status_code == 200 and res.content[:4] == b"\x89PNG"


def test_uploads_reject_non_images_and_oversized(client, project, monkeypatch):
    ok = client.post("/api/upload", files={"file": ("new.png", (project.root / "disc.png").read_bytes(), "image/png")})
    assert ok.status_code == 200 and (project.root / "new.png").exists()
    dup = client.post("/api/upload", files={"file": ("new.png", (project.root / "disc.png").read_bytes(), "image/png")})
    assert dup.status_code == 409
    txt = client.post("/api/upload", files={"file": ("evil.sh", b"#!/bin/sh", "text/plain")})
    assert txt.status_code == 400
    fake = client.post("/api/upload", files={"file": ("fake.png", b"not a png at all", "image/png")})
    assert fake.status_code == 400 and not (project.root / "fake.png").exists()
    sneaky = client.post("/api/upload", files={"file": ("../escape.png", (project.root / "disc.png").read_bytes())})
    assert sneaky.status_code == 200 and not (project.root.parent / "escape.png").exists()
    import robustvision.app.annotate.controller as controller

    monkeypatch.setattr(controller, "MAX_UPLOAD_BYTES", 100)
    big = client.post("/api/upload", files={"file": ("big.png", (project.root / "disc.png").read_bytes())})
    assert big.status_code == 413


def test_two_tabs_on_one_image_never_tear_the_file(project):
    """Concurrent writers on one image: every object survives, and the file is valid JSON after every write."""
    polys = [[[float(i), 1.0], [float(i) + 5, 1.0], [float(i) + 5, 6.0]] for i in range(40)]
    errors = []

    def writer(offset):
        try:
            for i in range(offset, 40, 2):
                project.save_object("disc.png", [polys[i]], 1, object_id=f"obj{i}")
                json.loads(project.store.path("disc.png").read_text())
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = project.annotation("disc.png")
    assert sorted(o["id"] for o in data["objects"]) == sorted(f"obj{i}" for i in range(40))
    # last write wins per object
    project.save_object("disc.png", [polys[3]], 2, object_id="obj0")
    assert next(o for o in project.annotation("disc.png")["objects"] if o["id"] == "obj0")["label"] == 2
    assert not list(project.annotations_dir.glob("*.tmp"))


def test_corrupt_annotation_file_is_reported_not_erased(project):
    project.store.path("disc.png").write_text("{ torn")
    records = {r.name: r for r in project.list_images()}
    assert records["disc.png"].status == "error" and "corrupt" in records["disc.png"].error
    with pytest.raises(ValueError, match="corrupt"):
        project.save_object("disc.png", [[[1, 1], [10, 1], [10, 10]]], 1)
    assert project.store.path("disc.png").read_text() == "{ torn"


def test_exports_coco_png_labelme(project):
    from PIL import Image
    from pycocotools.coco import COCO

    session = ClickSession(project)
    session.open("disc.png")
    session.click(64, 48, True)
    session.finish(1)
    project.save_object("second.jpg", [[[5, 5], [30, 5], [30, 30], [5, 30]]], 2)
    for rle in (False, True):
        path = export_project(project, "coco", rle=rle)
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == 2 and {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"disc", "square"}
        disc = coco.loadAnns(
            coco.getAnnIds(imgIds=[i["id"] for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == "disc.png"])
        )[0]
        area = coco.annToMask(disc).sum()
        assert abs(area - np.pi * 24**2) / (np.pi * 24**2) < 0.15
    export_project(project, "png")
    grey = np.asarray(Image.open(project.annotations_dir / "export" / "masks" / "second.png"))
    assert grey.shape == (96, 128) and grey[15, 15] == 2 and grey[60, 100] == 0
    colour = Image.open(project.annotations_dir / "export" / "masks_color" / "second.png")
    assert colour.mode == "P" and colour.getpalette()[6:9] == [255, 0, 0]
    export_project(project, "labelme")
    doc = json.loads((project.annotations_dir / "export" / "labelme" / "disc.json").read_text())
    assert doc["shapes"][0]["label"] == "disc" and doc["shapes"][0]["shape_type"] == "polygon"
    with pytest.raises(ValueError, match="unknown export format"):
        export_project(project, "voc")


def test_cli_export_and_bad_folder(tmp_path, project):
    from typer.testing import CliRunner

    from robustvision.cli import app

    project.save_object("disc.png", [[[5, 5], [30, 5], [30, 30]]], 1)
    runner = CliRunner()
    res = runner.invoke(app, ["annotate", "export", str(project.root), "--format", "labelme"])
    assert res.exit_code == 0, res.output
    assert (project.annotations_dir / "export" / "labelme" / "disc.json").exists()
    from robustvision.cli import main

    with pytest.raises(SystemExit) as exc:
        import sys

        sys.argv = ["robustvision", "annotate", "export", str(tmp_path / "nowhere")]
        main()
    assert exc.value.code == 2
