"""The annotation tool against a hostile or careless user: odd file names, foreign sites, oversized input, exports."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from robustvision.app.annotate.controller import AnnotationProject
from robustvision.app.annotate.export import export_project
from robustvision.app.annotate.labels import Label, read_labels

BASE = "http://127.0.0.1:8765"
SQUARE = [[[5, 5], [30, 5], [30, 30], [5, 30]]]


def make_client(project, **kwargs):
    from robustvision.app.annotate.server import create_app

    app = create_app(project, **kwargs)
    return TestClient(
        app, base_url=BASE, headers={"X-RV-Token": app.state.token}, raise_server_exceptions=False
    ), app.state.token


@pytest.fixture
def client(project):
    return make_client(project)[0]


def add_odd_files(folder):
    """A link leaving the folder, a macOS resource-fork file and a name with a backslash."""
    os.symlink(folder.parent / "secret.png", folder / "outside.png")
    (folder / "._disc.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    shutil.copy(folder / "disc.png", folder / "back\\slash.png")


# ---------------------------------------------------------------- item 2: file names
def test_odd_file_names_are_skipped_or_errors_and_the_rest_keeps_working(folder, project, client):
    add_odd_files(folder)
    project.save_object("disc.png", SQUARE, 1)
    records = {r.name: r for r in project.list_images()}
    assert "._disc.png" not in records
    assert records["outside.png"].status == "error" and "outside the folder" in records["outside.png"].error
    assert records["back\\slash.png"].status == "error" and "separator" in records["back\\slash.png"].error
    assert records["disc.png"].status == "in_progress" and records["second.jpg"].status == "unlabelled"
    assert client.get("/api/images").status_code == 200
    assert client.get("/api/state").status_code == 200
    assert client.get("/api/images/outside.png/file").status_code == 404
    res = client.post("/api/export", json={"format": "coco"})
    assert res.status_code == 200, res.text
    coco = json.loads((project.root / res.json()["path"]).read_text())
    assert [i["file_name"] for i in coco["images"]] == ["disc.png"]


def test_cli_annotate_export_survives_odd_names(folder, project):
    from typer.testing import CliRunner

    from robustvision.cli import app

    add_odd_files(folder)
    project.save_object("disc.png", SQUARE, 1)
    res = CliRunner().invoke(app, ["annotate", "export", str(folder), "--format", "png"])
    assert res.exit_code == 0, res.output
    assert (project.annotations_dir / "export" / "masks" / "disc.png").exists()


@pytest.mark.parametrize(
    "name",
    ["evil\\name.png", "x" * 300 + ".png", "é" * 120 + ".png", ".hidden.png", "del\x7f.png", "", ".png"],
)
def test_uploads_with_unsafe_names_are_refused(client, project, name):
    data = (project.root / "disc.png").read_bytes()
    res = client.post("/api/upload", files={"file": (name, data, "image/png")})
    assert res.status_code in (400, 422), res.text
    assert client.get("/api/images").status_code == 200
    assert sorted(p.name for p in project.root.iterdir() if p.is_file()) == sorted(
        ["disc.png", "second.jpg", "corrupt.jpg", "notes.txt", "labels.txt"]
    )


def test_name_problems():
    from robustvision.app.annotate.controller import name_problem

    for bad in ("a/b.png", "a\\b.png", "a\nb.png", "a\x00b.png", "._x.jpg", "x" * 201, ""):
        assert name_problem(bad), bad
    for good in ("x.png", "a b#c (1).jpg", "é" * 50 + ".png", "x" * 200):
        assert name_problem(good) is None, good


# ---------------------------------------------------------------- item 3: hosts, origins, token
def test_foreign_host_is_refused(client, project):
    assert client.get("/api/state", headers={"Host": "evil.example"}).status_code == 400
    res = client.post("/api/images/disc.png/done", json={"done": True}, headers={"Host": "evil.example:8765"})
    assert res.status_code == 400 and project.annotation("disc.png")["done"] is False
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert client.get("/api/images", headers={"Host": host}).status_code == 200, host


def test_host_names_follow_the_bind_address(project):
    client, _ = make_client(project, host="192.168.7.7", extra_hosts=["box.lan"])
    assert client.get("/api/images", headers={"Host": "192.168.7.7:8765"}).status_code == 200
    assert client.get("/api/images", headers={"Host": "box.lan"}).status_code == 200
    assert client.get("/api/images", headers={"Host": "evil.example"}).status_code == 400


def test_cross_origin_writes_are_refused(client, project):
    evil = {"Origin": "http://evil.example"}
    res = client.post("/api/images/disc.png/done", json={"done": True}, headers=evil)
    assert res.status_code == 403 and "cross-origin" in res.json()["detail"]
    other_port = {"Origin": "http://127.0.0.1:9999"}
    assert client.post("/api/images/disc.png/done", json={"done": True}, headers=other_port).status_code == 403
    null = {"Origin": "null"}
    assert client.post("/api/images/disc.png/done", json={"done": True}, headers=null).status_code == 403
    upload = client.post(
        "/api/upload", files={"file": ("x.png", (project.root / "disc.png").read_bytes())}, headers=evil
    )
    assert upload.status_code == 403 and not (project.root / "x.png").exists()
    assert project.annotation("disc.png")["done"] is False
    same = client.post("/api/images/disc.png/done", json={"done": True}, headers={"Origin": BASE})
    assert same.status_code == 200 and project.annotation("disc.png")["done"] is True


def test_state_changing_requests_need_the_page_token(project):
    client, token = make_client(project)
    page = client.get("/").text
    assert f'<meta name="rv-token" content="{token}">' in page
    for headers in ({"X-RV-Token": ""}, {"X-RV-Token": "guess"}, {"X-RV-Token": token[:-1]}):
        res = client.post("/api/images/disc.png/done", json={"done": True}, headers=headers)
        assert res.status_code == 403 and "X-RV-Token" in res.json()["detail"]
    bare = TestClient(client.app, base_url=BASE)
    assert bare.put("/api/labels", json={"labels": []}).status_code == 403
    assert bare.delete("/api/images/disc.png/objects/x").status_code == 403
    assert (
        bare.post("/api/upload", files={"file": ("x.png", (project.root / "disc.png").read_bytes())}).status_code == 403
    )
    assert read_labels(project.labels_file)[0].name == "disc" and not (project.root / "x.png").exists()
    assert bare.get("/api/images").status_code == 200  # reading needs no token (the Host check guards it)
    assert client.post("/api/images/disc.png/done", json={"done": True}).status_code == 200
    # a second launch has another token
    assert make_client(project)[1] != token


def test_page_script_sends_the_token():
    from robustvision.app.annotate.server import STATIC_DIR

    script = (STATIC_DIR / "app.js").read_text()
    assert 'meta[name="rv-token"]' in script and '"X-RV-Token"' in script


# ---------------------------------------------------------------- item 5: sizes and memory
def test_oversized_json_bodies_are_refused_before_parsing(client, project, monkeypatch):
    import robustvision.app.annotate.server as server

    monkeypatch.setattr(server, "MAX_JSON_BYTES", 2000)
    poly = [[[float(i % 100), float(i % 90)] for i in range(500)]]
    res = client.put("/api/images/disc.png/objects/o1", json={"label": 1, "polygons": poly})
    assert res.status_code == 413 and "2,000-byte limit" in res.json()["detail"]
    body = json.dumps({"label": 1, "polygons": poly}).encode()

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    res = client.put("/api/images/disc.png/objects/o1", content=chunks(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413
    assert project.annotation("disc.png")["objects"] == []
    small = client.put("/api/images/disc.png/objects/o1", json={"label": 1, "polygons": SQUARE})
    assert small.status_code == 200


def test_polygons_with_too_many_points_are_refused(project):
    from robustvision.app.annotate.geometry import MAX_POLYGON_POINTS

    poly = [[float(i % 100), float(i % 90)] for i in range(MAX_POLYGON_POINTS + 1)]
    with pytest.raises(ValueError, match="points"):
        project.save_object("disc.png", [poly], 1)


def test_upload_pixel_limit_is_named_in_the_error(client, project, tmp_path):
    from robustvision.app.annotate.controller import MAX_IMAGE_PIXELS

    bomb = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 100_000
    res = client.post("/api/upload", files={"file": ("bomb.png", bomb.read_bytes(), "image/png")})
    assert res.status_code == 400 and f"{MAX_IMAGE_PIXELS:,}" in res.json()["detail"]
    assert not (project.root / "bomb.png").exists()


def test_images_over_the_pixel_limit_are_listed_as_errors(project, monkeypatch):
    import robustvision.app.annotate.controller as controller

    monkeypatch.setattr(controller, "MAX_IMAGE_PIXELS", 100 * 100)
    records = {r.name: r for r in project.list_images()}
    assert records["disc.png"].status == "error" and "10,000-pixel limit" in records["disc.png"].error


def test_upload_keeps_a_normal_file_mode(client, project):
    res = client.post("/api/upload", files={"file": ("fresh.png", (project.root / "disc.png").read_bytes())})
    assert res.status_code == 200
    assert (project.root / "fresh.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not list(project.root.glob("*.part")) and not list(project.root.glob(".upload-*"))


# ---------------------------------------------------------------- item 4: exports
def test_exports_keep_images_that_share_a_stem(folder):
    shutil.copy(folder / "second.jpg", folder / "disc.jpg")
    project = AnnotationProject(folder, backend="grabcut")
    project.save_object("disc.png", SQUARE, 1)
    project.save_object("disc.jpg", [[[40, 40], [80, 40], [80, 80]]], 2)
    png_dir = export_project(project, "png")
    masks = {p.name: np.asarray(Image.open(p)) for p in png_dir.glob("*.png")}
    assert set(masks) == {"disc.png.png", "disc.jpg.png"}
    assert masks["disc.png.png"][15, 15] == 1 and masks["disc.jpg.png"][60, 70] == 2
    lm_dir = export_project(project, "labelme")
    docs = {p.name: json.loads(p.read_text()) for p in lm_dir.glob("*.json")}
    assert {d["shapes"][0]["label"] for d in docs.values()} == {"disc", "square"} and len(docs) == 2
    for doc in docs.values():
        assert (lm_dir / doc["imagePath"]).resolve().is_file()
    elsewhere = export_project(project, "labelme", out=folder.parent / "out")
    doc = json.loads(next(elsewhere.glob("*.json")).read_text())
    assert (elsewhere / doc["imagePath"]).resolve().parent == folder


def test_output_stems_are_distinct():
    from robustvision.app.annotate.export import output_stems

    names = ["x.jpg", "x.png", "x.jpg.png", "X.PNG", "y.png", "y~2.png"]
    stems = output_stems(names)
    assert len({s.casefold() for s in stems.values()}) == len(names)
    assert stems["y.png"] == "y" and output_stems(["a.png"]) == {"a.png": "a"}


def test_export_refuses_non_finite_or_unlabelled_objects(project, client):
    project.save_object("disc.png", SQUARE, 1)
    path = project.store.path("disc.png")
    data = json.loads(path.read_text())
    data["objects"][0]["polygons"][0][1] = [float("nan"), 5.0]
    path.write_text(json.dumps(data))  # json writes NaN; a hand-edited file can hold it
    with pytest.raises(ValueError, match="finite"):
        export_project(project, "coco")
    res = client.post("/api/export", json={"format": "coco"})
    assert res.status_code == 400 and "disc.png" in res.json()["detail"]
    del data["objects"][0]["label"]
    data["objects"][0]["polygons"] = SQUARE
    path.write_text(json.dumps(data))
    res = client.post("/api/export", json={"format": "labelme"})
    assert res.status_code == 400 and "'label'" in res.json()["detail"]
    data["objects"][0]["label"] = 1
    path.write_text(json.dumps(data))
    out = export_project(project, "coco")
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_cli_export_to_a_file_is_one_line(run_main, tmp_path, project):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, out = run_main(["annotate", "export", str(project.root), "--out", str(target)])
    assert code == 2 and "is a file" in out and "Traceback" not in out


# ---------------------------------------------------------------- item 5: labels
def test_label_names_with_hash_round_trip_and_leading_hash_is_refused(project, client):
    project.set_labels([Label(1, "car#2", (1, 2, 3)), Label(2, "bus", (4, 5, 6))])
    assert read_labels(project.labels_file) == [Label(1, "car#2", (1, 2, 3)), Label(2, "bus", (4, 5, 6))]
    with pytest.raises(ValueError, match="'#'"):
        Label(3, "#car", (1, 2, 3)).validate()
    res = client.put("/api/labels", json={"labels": [{"index": 3, "name": "#car", "color": [1, 2, 3]}]})
    assert res.status_code == 400
    assert len(read_labels(project.labels_file)) == 2
    AnnotationProject(project.root, backend="grabcut")  # the next launch reads labels.txt


# ---------------------------------------------------------------- item 8: file modes, temporary files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_writes_keep_the_file_mode(project):
    os.chmod(project.labels_file, 0o644)
    project.set_labels([Label(1, "a", (1, 2, 3))])
    assert project.labels_file.stat().st_mode & 0o777 == 0o644
    os.chmod(project.labels_file, 0o640)
    project.set_labels([Label(1, "b", (1, 2, 3))])
    assert project.labels_file.stat().st_mode & 0o777 == 0o640
    project.save_object("disc.png", SQUARE, 1)
    assert project.store.path("disc.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_stale_temporary_files_are_removed_at_start(project):
    old = project.annotations_dir / "disc.png.jsonab12.tmp"
    fresh = project.annotations_dir / "second.jpg.jsoncd34.tmp"
    part = project.root / ".upload-xyz.part"
    labels_tmp = project.root / "labels.txtzz.tmp"
    for p in (old, fresh, part, labels_tmp):
        p.write_bytes(b"")
    hour_ago = time.time() - 3600
    for p in (old, part, labels_tmp):
        os.utime(p, (hour_ago, hour_ago))
    AnnotationProject(project.root, backend="grabcut")
    assert not old.exists() and not part.exists() and not labels_tmp.exists()
    assert fresh.exists()  # may belong to a live writer


# ---------------------------------------------------------------- CLI
def test_annotate_port_out_of_range_is_one_line(run_main, project):
    code, out = run_main(["annotate", str(project.root), "--port", "70000"])
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "--port must be in 1..65535, got 70000" in lines[0], out


# ---------------------------------------------------------------- fuzz
def test_fuzz_server_with_bad_names_hosts_origins_and_sizes(project, monkeypatch):
    """Seeded random hostile requests: none may answer 500, change data without the token, or break the listing."""
    import robustvision.app.annotate.controller as controller
    import robustvision.app.annotate.server as server

    monkeypatch.setattr(server, "MAX_JSON_BYTES", 50_000)
    monkeypatch.setattr(controller, "MAX_UPLOAD_BYTES", 60_000)
    client, token = make_client(project)
    kept = project.save_object("disc.png", SQUARE, 1, object_id="keep")
    rng = random.Random(0)
    png = (project.root / "disc.png").read_bytes()
    alphabet = ["a", ".", "/", "\\", "\x00", "\n", "%2F", "..", "#", "?", " ", "é", "\u202e", "*", ":", "<"]
    hosts = ["127.0.0.1:8765", "localhost", "evil.example", "127.0.0.1.evil.example", "", "[::1]", "::1", "a b"]
    origins = [None, BASE, "http://evil.example", "null", "file://", "http://127.0.0.1:1", "https://127.0.0.1:8765"]
    tokens = [token, "", "x", token + "x"]
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) + rng.choice(["", ".png", ".jpg"])
        if rng.random() < 0.05:
            name = "n" * rng.randint(200, 400) + ".png"
        headers = {"Host": rng.choice(hosts), "X-RV-Token": rng.choice(tokens)}
        origin = rng.choice(origins)
        if origin:
            headers["Origin"] = origin
        path_name = quote(name, safe="") if rng.random() < 0.8 else quote(name, safe="/.")
        kind = rng.randrange(6)
        if kind == 0:
            body = png if rng.random() < 0.5 else os.urandom(rng.choice([10, 70_000]))
            res = client.post("/api/upload", files={"file": (name, body, "image/png")}, headers=headers)
        elif kind == 1:
            poly = [[[rng.uniform(-5, 140), rng.uniform(-5, 100)] for _ in range(rng.choice([3, 4000]))]]
            res = client.put(f"/api/images/{path_name}/objects/o", json={"label": 1, "polygons": poly}, headers=headers)
        elif kind == 2:
            res = client.post("/api/session/open", json={"client": "c", "image": name}, headers=headers)
        elif kind == 3:
            res = client.get(f"/api/images/{path_name}/file", headers=headers)
        elif kind == 4:
            labels = [{"index": rng.randint(-1, 300), "name": name, "color": [1, 2, 3]}]
            res = client.put("/api/labels", json={"labels": labels}, headers=headers)
        else:
            res = client.delete(f"/api/images/{path_name}/objects/keep", headers=headers)
        assert res.status_code < 500, (kind, name, headers, res.text)
        trusted = headers["Host"] in ("127.0.0.1:8765", "localhost", "[::1]")
        if res.status_code == 200 and kind != 3:
            assert trusted and headers["X-RV-Token"] == token and origin in (None, BASE), (kind, name, headers)
    listing = client.get("/api/images")
    assert listing.status_code == 200
    assert all(not r["name"].startswith(".") for r in listing.json())
    assert {r["name"]: r["status"] for r in listing.json()}["disc.png"] == "in_progress"
    saved = {o["id"]: o for o in project.annotation("disc.png")["objects"]}
    assert saved["keep"]["polygons"] == kept["polygons"] and saved["keep"]["label"] == 1
    assert client.post("/api/export", json={"format": "png"}).status_code == 200


def test_checkpoints_get_a_normal_file_mode(tmp_path):
    from robustvision.models import create_model
    from robustvision.models.checkpoints import save_checkpoint

    path = save_checkpoint(create_model("lenet5", num_classes=10, image_size=32), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_annotate_serve_starts_with_odd_file_names(run_main, folder, monkeypatch):
    import robustvision.app.annotate.server as server

    add_odd_files(folder)
    started = {}
    monkeypatch.setattr(server, "serve", lambda project, **kw: started.update(kw, images=project.list_images()))
    code, out = run_main(["annotate", str(folder), "--backend", "grabcut", "--port", "8799"])
    assert code is None or code == 0, out
    assert started["port"] == 8799 and {r.name for r in started["images"]} >= {"disc.png", "outside.png"}
