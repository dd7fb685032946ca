"""Physical-world attack: Dual Attention Suppression (DAS) camouflage on a 3D vehicle.

Wang et al., "Dual Attention Suppression Attack: Generate Adversarial Camouflage in Physical World", CVPR 2021
(arXiv:2103.01050). The mesh is rasterised once per view on the CPU (:mod:`.renderer`), and every optimisation
step is a pure-torch texture lookup, shading and compositing, so the texture gradient is exact and no compiled
renderer is needed. See ``docs/physical-attack.md``.
"""

from robustvision.physical.attack import AttackConfig, AttackResult, optimize_texture
from robustvision.physical.attention import GradCAM, grad_cam
from robustvision.physical.camera import Camera, carla_camera, look_at_camera, sample_cameras, spherical_camera
from robustvision.physical.losses import (
    DASWeights,
    attention_distraction_loss,
    content_loss,
    not_target_loss,
    smooth_loss,
)
from robustvision.physical.mesh import Mesh, load_face_ids, load_mesh, make_procedural_car
from robustvision.physical.renderer import EmptyViewError, ViewCache, build_view, rasterize, render, render_batch
from robustvision.physical.texture import CubeTexture, UVTexture, create_texture

__all__ = [
    "AttackConfig",
    "AttackResult",
    "Camera",
    "CubeTexture",
    "DASWeights",
    "EmptyViewError",
    "GradCAM",
    "Mesh",
    "UVTexture",
    "ViewCache",
    "attention_distraction_loss",
    "build_view",
    "carla_camera",
    "content_loss",
    "create_texture",
    "grad_cam",
    "load_face_ids",
    "load_mesh",
    "look_at_camera",
    "make_procedural_car",
    "not_target_loss",
    "optimize_texture",
    "rasterize",
    "render",
    "render_batch",
    "sample_cameras",
    "smooth_loss",
    "spherical_camera",
]
