"""Renderer, mesh, camera and texture tests for the DAS physical attack (generated meshes; Audi when present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustvision.physical.camera import carla_camera, look_at_camera, sample_cameras, spherical_camera
from robustvision.physical.mesh import Mesh, load_face_ids, load_mesh, make_procedural_car
from robustvision.physical.renderer import EmptyViewError, build_view, rasterize, render
from robustvision.physical.texture import CubeTexture, UVTexture, create_texture, cube_from_image


@pytest.fixture(scope="module")
def car() -> Mesh:
    return make_procedural_car(subdiv=1)


def _tiny_mesh() -> Mesh:
    v = torch.tensor([[0, -0.5, -0.5], [0, 0.5, -0.5], [0, 0.5, 0.5], [0, -0.5, 0.5]], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.float32)[f]
    m = Mesh(v, f, uv, torch.zeros(2, dtype=torch.int64), torch.tensor([[0.5, 0.5, 0.5]]), ["m"])
    return m.with_paintable([0, 1])


def test_rasterize_matches_trimesh_ray_casting(car):
    trimesh = pytest.importorskip("trimesh")
    cam = spherical_camera(2.5, 25, 40, fov=60)
    h = w = 24
    frags = rasterize(car, cam, h, w)
    tm = car.to_trimesh()
    r, u, f = cam.basis()
    t = np.tan(np.radians(cam.fov) / 2)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xs = ((cols + 0.5) - w / 2) / (w / 2) * t
    ys = (h / 2 - (rows + 0.5)) / (h / 2) * t
    dirs = f[None] + xs.reshape(-1, 1) * r[None] + ys.reshape(-1, 1) * u[None]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.repeat(np.asarray(cam.eye)[None], len(dirs), 0)
    intersector = trimesh.ray.ray_triangle.RayMeshIntersector(tm)
    locs, ray_idx, tri_idx = intersector.intersects_location(origins, dirs, multiple_hits=True)
    ref_face = np.full(h * w, -1)
    best = np.full(h * w, np.inf)
    dist = np.linalg.norm(locs - origins[ray_idx], axis=1)
    for d, ri, ti in zip(dist, ray_idx, tri_idx, strict=False):
        if d < best[ri]:
            best[ri], ref_face[ri] = d, ti
    ours = np.full(h * w, -1)
    ours[frags.pix.numpy()] = frags.face.numpy()
    hit_pts = (frags.bary.double()[:, :, None] * car.vertices.double()[car.faces[frags.face]]).sum(1).numpy()
    our_dist = np.full(h * w, np.inf)
    our_dist[frags.pix.numpy()] = np.linalg.norm(hit_pts - np.asarray(cam.eye)[None], axis=1)
    hit = (ref_face >= 0) | (ours >= 0)
    assert hit.sum() > 50
    # silhouettes agree except at most a few edge pixels; visible faces agree where both hit (coplanar ties aside)
    assert ((ref_face >= 0) != (ours >= 0)).sum() <= 3
    both = (ref_face >= 0) & (ours >= 0)
    same = ref_face[both] == ours[both]
    # where the face ids differ (shared edges, coplanar faces) the hit distance must still agree
    assert same.mean() > 0.95
    assert np.allclose(our_dist[both], best[both], atol=1e-4)


def test_barycentrics_reconstruct_hit_points(car):
    cam = spherical_camera(2.2, 15, 120, fov=60)
    frags = rasterize(car, cam, 20, 20)
    tri = car.vertices[car.faces[frags.face]]
    pts = (frags.bary[:, :, None] * tri).sum(1)
    xy, z = cam.project(pts.double(), 20, 20)
    col = (frags.pix % 20).double() + 0.5
    row = torch.div(frags.pix, 20, rounding_mode="floor").double() + 0.5
    assert torch.allclose(xy[:, 0], col, atol=1e-3) and torch.allclose(xy[:, 1], row, atol=1e-3)
    assert torch.allclose(z.float(), frags.depth, atol=1e-4)
    assert (frags.bary >= -1e-5).all() and torch.allclose(frags.bary.sum(1), torch.ones(len(frags.bary)), atol=1e-5)


class _WithParam:
    """A texture evaluated at an explicit parameter, so gradcheck can differentiate with respect to it."""

    def __init__(self, tex, param):
        self.tex, self.param = tex, param

    def sample(self, slot, bary):
        return torch.func.functional_call(self.tex, {"param": self.param}, (slot, bary), strict=False)


@pytest.mark.parametrize("kind", ["cube", "uv"])
def test_render_gradcheck(kind):
    mesh = _tiny_mesh()
    view = build_view(mesh, look_at_camera((2, 0.1, 0.2), (0, 0, 0)), 6, supersample=2)
    g = torch.Generator().manual_seed(0)
    if kind == "cube":
        tex = CubeTexture(torch.rand(2, 3, 3, 3, 3, generator=g))
    else:
        tex = UVTexture(torch.rand(3, 4, 4, generator=g), mesh.paint_uv())
    tex = tex.double()
    bg = torch.rand(3, 6, 6, dtype=torch.float64, generator=g) * 0.5
    p = tex.param.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: render(view, _WithParam(tex, q), bg), (p,), eps=1e-6, atol=1e-5)


def test_gradient_only_reaches_visible_painted_faces(car):
    view = build_view(car, spherical_camera(2.5, 20, 30, fov=60), 32)
    tex = create_texture("cube", car, torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    render(view, tex, torch.zeros(3, 32, 32)).sum().backward()
    grad_faces = (tex.param.grad.abs().flatten(1).sum(1) > 0).nonzero().flatten()
    assert grad_faces.numel() > 0
    assert set(grad_faces.tolist()) <= set(view.paint_slot.unique().tolist())


def test_view_cache_is_deterministic(car):
    cam = sample_cameras(1, generator=torch.Generator().manual_seed(3))[0]
    a, b = build_view(car, cam, 24), build_view(car, cam, 24)
    for k in ("static", "alpha", "paint_pix", "paint_slot", "paint_bary", "paint_shade", "box"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    tex = create_texture("uv", car, torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
    bg = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    assert torch.equal(render(a, tex, bg), render(b, tex, bg))


def test_render_contract_and_background_outside_car(car):
    view = build_view(car, spherical_camera(3.0, 10, 90, fov=60), 32)
    bg = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    img = render(view, create_texture("cube", car, torch.rand(3, 8, 8)), bg)
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    outside = view.alpha[0] == 0
    assert outside.any() and torch.equal(img[:, outside], bg[:, outside])
    with pytest.raises(ValueError, match="background"):
        render(view, None, torch.zeros(3, 16, 16))


def test_cube_sampling_hits_corner_texels():
    cols = torch.rand(1, 4, 4, 4, 3, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    tex = CubeTexture(cols)
    bary = torch.eye(3)
    got = tex.sample(torch.zeros(3, dtype=torch.int64), bary)
    want = torch.stack([cols[0, 3, 0, 0], cols[0, 0, 3, 0], cols[0, 0, 0, 3]])
    assert torch.allclose(got, want, atol=1e-4)


def test_cube_from_constant_image_is_constant(car):
    img = torch.full((3, 8, 8), 0.3)
    cube = cube_from_image(img, car.paint_uv(), 6)
    assert cube.shape == (car.paintable_ids.numel(), 6, 6, 6, 3) and torch.allclose(cube, torch.full_like(cube, 0.3))


def test_camera_that_sees_nothing_is_a_clear_error(car):
    with pytest.raises(EmptyViewError, match="sees nothing"):
        build_view(car, look_at_camera((5, 0, 0), (10, 0, 0)), 16)
    with pytest.raises(ValueError, match="parallel"):
        look_at_camera((0, 0, 3), (0, 0, 0), up=(0, 0, 1)).basis()


def test_bad_face_lists_and_meshes(tmp_path, car):
    bad = tmp_path / "faces.txt"
    bad.write_text("1\n2\n999999\n")
    with pytest.raises(ValueError, match="out of range"):
        load_face_ids(bad, car.num_faces)
    with pytest.raises(ValueError, match="out of range"):
        car.with_paintable([car.num_faces])
    obj = tmp_path / "nouv.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="no UV"):
        load_mesh(obj, require_uv=True)
    mesh = load_mesh(obj)
    with pytest.raises(ValueError, match="no UV"):
        mesh.with_paintable([0]).paint_uv()


def test_obj_reader_keeps_file_order_and_materials(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl blue\nKd 0 0 1\n")
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\n"
        "usemtl blue\nf 1/1 2/2 3/3\nusemtl red\nf 2/2 4/4 3/3\nf 1/1 2/2 4/4 3/3\n"
    )
    m = load_mesh(tmp_path / "m.obj", normalize=False)
    assert m.faces.tolist() == [[0, 1, 2], [1, 3, 2], [0, 1, 3], [0, 3, 2]]
    assert m.face_colors().tolist() == [[0, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert torch.allclose(m.face_uv[1], torch.tensor([[1.0, 0], [1, 1], [0, 1]]))


@pytest.mark.shared_data
def test_audi_asset_and_carla_poses_match_masks(shared_data):
    from PIL import Image

    root = shared_data / "das_car"
    mesh = load_mesh(root / "audi_et_te.obj")
    assert mesh.num_faces == 23145 and mesh.face_uv is not None
    ids = load_face_ids(root / "all_faces.txt", mesh.num_faces)
    assert ids.numel() == 309 and int(ids.min()) == 3164
    mesh = mesh.with_paintable(ids)
    npz = np.load(root / "carla_samples" / "test" / "data12502.npz")
    mask = np.asarray(Image.open(root / "carla_samples" / "masks" / "data12502.png")) > 127
    view = build_view(mesh, carla_camera(npz["veh_trans"], npz["cam_trans"]), 152, supersample=2)
    sil = torch.nn.functional.interpolate(view.alpha[None], size=mask.shape)[0, 0].numpy() > 0.5
    iou = (sil & mask).sum() / (sil | mask).sum()
    assert iou > 0.9  # the released masks are the whole-car silhouette
