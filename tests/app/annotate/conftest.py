"""Fixtures of the annotation tool tests: a folder of test images."""

import cv2
import numpy as np
import pytest


@pytest.fixture
def folder(tmp_path):
    """``tmp_path/images``: two good images (a disc and a square), a corrupt JPEG, a text file and a label list;
    ``tmp_path/secret.png`` lies outside it."""
    folder = tmp_path / "images"
    folder.mkdir()
    img = np.full((96, 128, 3), 30, np.uint8)
    cv2.circle(img, (64, 48), 24, (40, 200, 220), -1)
    cv2.rectangle(img, (5, 5), (30, 30), (200, 60, 60), -1)
    cv2.imwrite(str(folder / "disc.png"), img[:, :, ::-1])
    cv2.imwrite(str(folder / "second.jpg"), img)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    (folder / "labels.txt").write_text("1 disc 0 200 255\n2 square 255 0 0\n")
    return folder


@pytest.fixture
def project(folder):
    """An annotation project over :func:`folder` with the GrabCut backend (no network weights)."""
    from robustvision.app.annotate.controller import AnnotationProject

    return AnnotationProject(folder, backend="grabcut")
