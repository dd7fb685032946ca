"""Pinhole cameras for the physical attack: look-at poses, spherical pose sampling and CARLA's pose format.

World frame: Z up, X along the car (the NMR-normalised mesh frame of :mod:`robustvision.physical.mesh`).
Image frame: row 0 at the top, column 0 at the left; ``fov`` is the full field of view (CARLA's default 90
degrees equals NMR's ``viewing_angle=45``, a half-angle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Camera", "look_at_camera", "spherical_camera", "sample_cameras", "carla_camera", "CARLA_SCALE"]

# one unit of the NMR-normalised Audi is ~2.45 m, so metres -> model units is 0.41 (DAS nmr_test.get_params)
CARLA_SCALE = 0.41


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: position, unit forward/up vectors, full field of view in degrees."""

    eye: tuple[float, float, float]
    forward: tuple[float, float, float]
    up: tuple[float, float, float]
    fov: float = 90.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.fov < 179.0:
            raise ValueError(f"camera fov must be in [1, 179) degrees, got {self.fov}")

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Right, up and forward unit vectors (a right-handed camera looking along +forward)."""
        f = np.asarray(self.forward, dtype=np.float64)
        f = f / np.linalg.norm(f)
        r = np.cross(f, np.asarray(self.up, dtype=np.float64))
        if np.linalg.norm(r) < 1e-9:
            raise ValueError("camera up vector is parallel to its viewing direction")
        r = r / np.linalg.norm(r)
        u = np.cross(r, f)
        return r, u, f

    def project(self, points: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points to pixel coordinates.

        Args:
            points: ``(N, 3)`` world positions.
            height, width: image size in pixels.

        Returns:
            ``(xy, depth)``: ``(N, 2)`` continuous pixel coordinates (column, row; pixel centres at ``i + 0.5``)
            and ``(N,)`` view-space depth along the forward axis.
        """
        r, u, f = (torch.as_tensor(a, dtype=points.dtype) for a in self.basis())
        rel = points - torch.as_tensor(self.eye, dtype=points.dtype)
        x, y, z = rel @ r, rel @ u, rel @ f
        t = math.tan(math.radians(self.fov) / 2)
        safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        # square pixels: the fov spans the larger image side
        s = max(height, width) / 2
        col = width / 2 + x / (safe * t) * s
        row = height / 2 - y / (safe * t) * s
        return torch.stack([col, row], 1), z


def look_at_camera(eye, at=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), fov: float = 90.0) -> Camera:
    """A camera at ``eye`` looking at ``at``."""
    eye_a = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(at, dtype=np.float64) - eye_a
    if np.linalg.norm(fwd) < 1e-9:
        raise ValueError("camera eye and target coincide")
    return Camera(tuple(eye_a.tolist()), tuple((fwd / np.linalg.norm(fwd)).tolist()), tuple(map(float, up)), fov)


def spherical_camera(
    distance: float, elevation: float, azimuth: float, *, at=(0.0, 0.0, 0.0), fov: float = 90.0
) -> Camera:
    """A camera on a sphere around ``at``: elevation above the ground plane and azimuth from +X, in degrees."""
    if distance <= 0:
        raise ValueError(f"camera distance must be positive, got {distance}")
    el, az = math.radians(elevation), math.radians(azimuth)
    offset = (distance * math.cos(el) * math.cos(az), distance * math.cos(el) * math.sin(az), distance * math.sin(el))
    eye = tuple(a + o for a, o in zip(at, offset, strict=False))
    return look_at_camera(eye, at, (0.0, 0.0, 1.0), fov)


def sample_cameras(
    n: int,
    *,
    distance: tuple[float, float] = (2.0, 3.2),
    elevation: tuple[float, float] = (5.0, 40.0),
    azimuth: tuple[float, float] = (0.0, 360.0),
    jitter: float = 0.15,
    fov: float = 60.0,
    generator: torch.Generator | None = None,
) -> list[Camera]:
    """``n`` random cameras with uniform distance, elevation and azimuth and a jittered look-at target.

    Args:
        n: number of cameras.
        distance, elevation, azimuth: closed ranges (model units, degrees, degrees).
        jitter: the target is moved by up to this much in X/Y so the car is not always centred.
        fov: full field of view in degrees.
        generator: seeds the draw.
    """
    if n < 0:
        raise ValueError(f"number of cameras must be >= 0, got {n}")
    for name, (lo, hi) in (("distance", distance), ("elevation", elevation), ("azimuth", azimuth)):
        if hi < lo:
            raise ValueError(f"camera {name} range must be (low, high), got ({lo}, {hi})")
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64).numpy()
    cams = []
    for row in u:
        d = distance[0] + row[0] * (distance[1] - distance[0])
        el = elevation[0] + row[1] * (elevation[1] - elevation[0])
        az = azimuth[0] + row[2] * (azimuth[1] - azimuth[0])
        at = ((row[3] * 2 - 1) * jitter, (row[4] * 2 - 1) * jitter, 0.0)
        cams.append(spherical_camera(d, el, az, at=at, fov=fov))
    return cams


def carla_camera(veh_trans, cam_trans, *, scale: float = CARLA_SCALE, fov: float = 90.0) -> Camera:
    """The camera of a CARLA sample (DAS/FCA ``.npz``: ``veh_trans``, ``cam_trans``) in the mesh frame.

    ``veh_trans``/``cam_trans`` are ``[[x, y, z], [pitch, yaw, roll]]`` in metres and degrees; the camera
    location is relative to the vehicle. Following DAS: the vehicle origin is raised by 0.2 m, metres are
    scaled by ``scale``, and the pose is rotated about Z by minus the vehicle yaw. CARLA (Unreal) is
    left-handed (Y to the right); the Y axis is negated here so the right-handed mesh frame is kept.
    """
    veh = np.asarray(veh_trans, dtype=np.float64)
    cam = np.asarray(cam_trans, dtype=np.float64)
    if veh.shape != (2, 3) or cam.shape != (2, 3):
        raise ValueError(f"CARLA transforms must be 2x3 arrays, got {veh.shape} and {cam.shape}")
    eye = (cam[0] - np.array([0.0, 0.0, 0.2])) * scale
    pitch, yaw = math.radians(cam[1, 0]), math.radians(cam[1, 1])
    direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    up_p = pitch + math.pi / 2
    up = np.array([math.cos(up_p) * math.cos(yaw), math.cos(up_p) * math.sin(yaw), math.sin(up_p)])
    a = -math.radians(veh[1, 1])
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([1.0, -1.0, 1.0])
    eye, direction, up = (flip @ rot @ v for v in (eye, direction, up))
    return Camera(tuple(eye.tolist()), tuple(direction.tolist()), tuple(up.tolist()), fov)
