"""A synthetic RGB-D scene with exact instance ground truth, written as a ScanNet scan.

A floor, two walls and a few objects of distinct shapes and colours, ray-cast with open3d's
`RaycastingScene` (CPU) from a camera orbiting the objects. Written in the ScanNet SensReader
export layout so the ScanNet reader loads it, with ScanNet's own GT files beside it:

```
<out>/color/<i>.jpg            colour, `color_scale` times the depth size (as ScanNet: 1296 vs 640)
<out>/depth/<i>.png            uint16 millimetres
<out>/pose/<i>.txt             4x4 cam2world
<out>/intrinsic/{intrinsic,extrinsic}_{color,depth}.txt
<out>/instance/<i>.png         uint16 GT instance ID per depth pixel (0 = floor, walls, nothing)
<out>/<name>_vh_clean_2.ply                 the mesh (vertex colours)
<out>/<name>_vh_clean_2.0.010000.segs.json  per-vertex segment IDs
<out>/<name>.aggregation.json               segments grouped into objects (objectId, label)
<out>/<name>_vh_clean_2.labels.ply          per-vertex NYU40 label (`label`)
<out>/<name>.txt                            scan metadata (sizes, intrinsics)
```
Object k (1-based) has `objectId` k - 1 in the aggregation and instance ID k in the PNGs. The
floor and walls carry NYU40 labels 2 and 1, which the ScanNet instance benchmark treats as void.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lift3d.io import atomic_path
from lift3d.recon.geometry import look_at

# name, NYU40 id, shape, RGB, centre (x, y) on the floor, size parameter (metres)
_OBJECTS = (
    ("cabinet", 3, "box", (200, 40, 40), (-0.55, 0.35), (0.45, 0.35, 0.55)),
    ("chair", 5, "cylinder", (40, 160, 60), (0.45, 0.45), (0.22, 0.5)),
    ("table", 7, "box", (50, 70, 210), (0.05, -0.35), (0.7, 0.4, 0.35)),
    ("toilet", 33, "sphere", (230, 200, 30), (0.7, -0.4), (0.22,)),
    ("sofa", 6, "cone", (170, 60, 190), (-0.6, -0.45), (0.25, 0.5)),
)


#: segment id offset of an object's upper half (its lower half has the part's index)
_UPPER = 100


@dataclass
class SyntheticObject:
    """One object of the synthetic scene and its ground truth."""

    instance_id: int
    label: str
    nyu40: int
    color: tuple[int, int, int]


def _object_mesh(shape: str, size: tuple, centre_xy: tuple[float, float]):
    import open3d as o3d

    if shape == "box":
        sx, sy, sz = size
        mesh = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
        mesh.translate((-sx / 2, -sy / 2, 0))
        mesh = mesh.subdivide_midpoint(3)
    elif shape == "cylinder":
        r, h = size
        mesh = o3d.geometry.TriangleMesh.create_cylinder(r, h, resolution=24, split=6)
        mesh.translate((0, 0, h / 2))
    elif shape == "sphere":
        (r,) = size
        mesh = o3d.geometry.TriangleMesh.create_sphere(r, resolution=16)
        mesh.translate((0, 0, r))
    elif shape == "cone":
        r, h = size
        mesh = o3d.geometry.TriangleMesh.create_cone(r, h, resolution=24, split=6)
    else:
        raise ValueError(shape)
    mesh.translate((centre_xy[0], centre_xy[1], 0))
    return mesh


def _plane_mesh(corner, u_vec, v_vec, n: int):
    """A subdivided rectangle (so the floor and walls have vertices to score, as ScanNet's do)."""
    import open3d as o3d

    corner, u_vec, v_vec = (np.asarray(a, np.float64) for a in (corner, u_vec, v_vec))
    s = np.linspace(0, 1, n + 1)
    uu, vv = np.meshgrid(s, s, indexing="ij")
    verts = corner + uu.reshape(-1, 1) * u_vec + vv.reshape(-1, 1) * v_vec
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = (
        idx[:-1, :-1].ravel(),
        idx[1:, :-1].ravel(),
        idx[1:, 1:].ravel(),
        idx[:-1, 1:].ravel(),
    )
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(tris)
    )


def _write_ply_mesh(path: Path, verts, colors, faces, extra: dict[str, np.ndarray] | None = None):
    from plyfile import PlyData, PlyElement

    fields = [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("alpha", "u1"),
    ]
    extra = extra or {}
    fields += [(k, v.dtype.str) for k, v in extra.items()]
    v = np.empty(len(verts), dtype=fields)
    v["x"], v["y"], v["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    v["red"], v["green"], v["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    v["alpha"] = 255
    for k, arr in extra.items():
        v[k] = arr
    f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    f["vertex_indices"] = faces
    with atomic_path(path) as tmp:
        PlyData(
            [PlyElement.describe(v, "vertex"), PlyElement.describe(f, "face")], text=False
        ).write(str(tmp))


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _matrix_text(M: np.ndarray) -> str:
    return "\n".join(" ".join(f"{x:.6f}" for x in row) for row in M) + "\n"


def make_synthetic_scene(
    out_dir: str | Path,
    *,
    n_frames: int = 8,
    size: tuple[int, int] = (128, 96),
    color_scale: int = 2,
    arc_degrees: float = 150.0,
    seed: int = 0,
) -> Path:
    """Render the synthetic scene and write it, with its GT, in ScanNet's layout.

    Args:
        out_dir: the scan folder to write (its name is the scene name).
        n_frames: number of views along the orbit.
        size: depth (and GT) resolution (W, H).
        color_scale: colour images are this many times larger than depth.
        arc_degrees: the orbit's extent; views overlap heavily, objects occlude each other.
        seed: texture noise seed (the geometry is fixed).

    Returns:
        The scan folder.
    """
    import open3d as o3d

    out = Path(out_dir)
    name = out.name
    rng = np.random.default_rng(seed)
    W, H = size
    Wc, Hc = W * color_scale, H * color_scale

    # geometry: id 0 floor, 1-2 walls, then the objects; mesh vertices carry their segment
    parts = [
        ("floor", 2, (150, 150, 150), _plane_mesh((-3.0, -3.0, 0), (6.0, 0, 0), (0, 4.6, 0), 40)),
        ("wall", 1, (225, 222, 214), _plane_mesh((-3.0, 1.6, 0), (6.0, 0, 0), (0, 0, 2.2), 30)),
        ("wall", 1, (205, 215, 228), _plane_mesh((-3.0, -3.0, 0), (0, 4.6, 0), (0, 0, 2.2), 30)),
    ]
    objects = []
    for k, (label, nyu, shape, color, xy, sz) in enumerate(_OBJECTS, start=1):
        parts.append((label, nyu, color, _object_mesh(shape, sz, xy)))
        objects.append(SyntheticObject(k, label, nyu, color))
    n_bg = 3

    rc = o3d.t.geometry.RaycastingScene()
    geom_instance = []  # raycasting geometry id -> instance id (0 for background)
    all_v, all_c, all_f, all_seg, all_nyu = [], [], [], [], []
    offset = 0
    for gi, (_label, nyu, color, mesh) in enumerate(parts):
        mesh.compute_vertex_normals()
        gid = rc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        inst = gi - n_bg + 1 if gi >= n_bg else 0
        geom_instance.append((gid, inst))
        v = np.asarray(mesh.vertices)
        f = np.asarray(mesh.triangles)
        all_v.append(v)
        all_c.append(np.tile(np.asarray(color, np.uint8), (len(v), 1)))
        all_f.append(f + offset)
        seg_v = np.full(len(v), gi, np.int32)
        if gi >= n_bg:  # objects have two mesh segments, lower and upper half (a part to split off)
            seg_v[v[:, 2] > 0.5 * (v[:, 2].min() + v[:, 2].max())] = _UPPER + gi
        all_seg.append(seg_v)
        all_nyu.append(np.full(len(v), nyu, np.int32))
        offset += len(v)
    lut = np.zeros(max(g for g, _ in geom_instance) + 2, np.int32)
    for gid, inst in geom_instance:
        lut[gid] = inst
    part_colors = np.array([p[2] for p in parts], np.float32)

    # cameras: intrinsics ~ ScanNet's field of view; colour shares the optical centre
    fx = 0.9 * W
    K_depth = np.array([[fx, 0, (W - 1) / 2], [0, fx, (H - 1) / 2], [0, 0, 1]], np.float64)
    K_color = K_depth.copy()
    K_color[:2] *= color_scale
    K_color[0, 2] = (K_depth[0, 2] + 0.5) * color_scale - 0.5
    K_color[1, 2] = (K_depth[1, 2] + 0.5) * color_scale - 0.5
    light = np.array([0.4, -0.3, 0.85])
    light /= np.linalg.norm(light)

    for sub in ("color", "depth", "pose", "intrinsic", "instance"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for fname, M in (("intrinsic_color", K_color), ("intrinsic_depth", K_depth)):
        K4 = np.eye(4)
        K4[:3, :3] = M
        _write_text(out / "intrinsic" / f"{fname}.txt", _matrix_text(K4))
    for fname in ("extrinsic_color", "extrinsic_depth"):
        _write_text(out / "intrinsic" / f"{fname}.txt", _matrix_text(np.eye(4)))

    target = np.array([0.0, 0.0, 0.25])
    angles = np.deg2rad(np.linspace(-90 - arc_degrees / 2, -90 + arc_degrees / 2, n_frames))
    for i, a in enumerate(angles):
        radius = 2.3 + 0.15 * np.sin(3 * a)
        eye = np.array([radius * np.cos(a), radius * np.sin(a), 1.35 + 0.1 * np.cos(2 * a)])
        T = look_at(eye, target)
        depth, inst, _ = _cast(rc, lut, part_colors, light, K_depth, T, (W, H), rng=None)
        _, _, rgb = _cast(rc, lut, part_colors, light, K_color, T, (Wc, Hc), rng=rng)
        with atomic_path(out / "color" / f"{i}.jpg") as tmp:
            Image.fromarray(rgb).save(tmp, format="JPEG", quality=95)
        with atomic_path(out / "depth" / f"{i}.png") as tmp:
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(tmp, format="PNG")
        with atomic_path(out / "instance" / f"{i}.png") as tmp:
            Image.fromarray(inst.astype(np.uint16)).save(tmp, format="PNG")
        _write_text(out / "pose" / f"{i}.txt", _matrix_text(T))

    verts = np.concatenate(all_v).astype(np.float32)
    colors = np.concatenate(all_c)
    faces = np.concatenate(all_f).astype(np.int32)
    seg = np.concatenate(all_seg)
    _write_ply_mesh(out / f"{name}_vh_clean_2.ply", verts, colors, faces)
    _write_ply_mesh(
        out / f"{name}_vh_clean_2.labels.ply",
        verts,
        colors,
        faces,
        {"label": np.concatenate(all_nyu).astype(np.uint16)},
    )
    _write_text(
        out / f"{name}_vh_clean_2.0.010000.segs.json",
        json.dumps(
            {
                "sceneId": name,
                "params": {"kThresh": "0.0001", "segMinVerts": "20"},
                "segIndices": seg.tolist(),
            }
        ),
    )
    groups = [
        {
            "id": k - 1,
            "objectId": k - 1,
            "segments": [n_bg + k - 1, _UPPER + n_bg + k - 1],
            "label": obj.label,
        }
        for k, obj in enumerate(objects, start=1)
    ]
    groups += [{"id": len(groups), "objectId": len(groups), "segments": [0], "label": "floor"}]
    _write_text(
        out / f"{name}.aggregation.json",
        json.dumps({"sceneId": name, "segGroups": groups}, indent=1),
    )
    _write_text(
        out / f"{name}.txt",
        f"colorHeight = {Hc}\ncolorWidth = {Wc}\ndepthHeight = {H}\ndepthWidth = {W}\n"
        f"fx_color = {K_color[0, 0]}\nfx_depth = {K_depth[0, 0]}\nfy_color = {K_color[1, 1]}\n"
        f"fy_depth = {K_depth[1, 1]}\nmx_color = {K_color[0, 2]}\nmx_depth = {K_depth[0, 2]}\n"
        f"my_color = {K_color[1, 2]}\nmy_depth = {K_depth[1, 2]}\nnumColorFrames = {n_frames}\n"
        f"numDepthFrames = {n_frames}\nsceneType = Synthetic\n",
    )
    _write_text(
        out / "objects.json",
        json.dumps([obj.__dict__ for obj in objects], indent=1),
    )
    return out


def _cast(rc, lut, part_colors, light, K, T, size, *, rng):
    """Ray-cast one view: z-depth [H, W], instance IDs [H, W], shaded colour [H, W, 3]."""
    import open3d as o3d

    W, H = size
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    # unnormalised rays with camera-z = 1, so the hit distance t is the z-depth
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d_world = d_cam @ T[:3, :3].T
    origins = np.broadcast_to(T[:3, 3], d_world.shape)
    rays = np.concatenate([origins, d_world], -1).astype(np.float32)
    ans = rc.cast_rays(o3d.core.Tensor(rays))
    t = ans["t_hit"].numpy()
    gid = ans["geometry_ids"].numpy().astype(np.int64)
    hit = np.isfinite(t)
    depth = np.where(hit, t, 0).astype(np.float32)
    gid_safe = np.where(hit, gid, len(lut) - 1)
    inst = lut[np.clip(gid_safe, 0, len(lut) - 1)]
    inst[~hit] = 0
    normals = ans["primitive_normals"].numpy()
    shade = 0.45 + 0.55 * np.abs(normals @ light)
    base = part_colors[np.clip(gid_safe, 0, len(part_colors) - 1)]
    rgb = base * shade[..., None]
    if rng is not None:
        rgb = rgb + rng.normal(0, 4.0, rgb.shape)
    rgb[~hit] = 0
    return depth, inst, np.clip(rgb, 0, 255).astype(np.uint8)
