"""A synthetic trained-3DGS scene: COLMAP cameras, their images and splats, with exact GT.

What a 3DGS user has, without the training: the synthetic scan (`lift3d.recon.synthetic`) seen
from its orbit of cameras, written as a COLMAP text model with its colour images, and a
3DGS PLY with one flat splat per mesh vertex that some camera sees unoccluded (a 3DGS holds
splats only where its cameras looked): centred on the vertex, a disc in the surface's tangent plane with a
standard deviation of half the vertex's mean edge length (so neighbouring splats overlap into a
closed surface), 1/20 of that along the normal, opacity 0.95, its colour the vertex's. No depth
is written: it has to come from the splats.

```
<out>/images/<i>.jpg                       colour (the scan's colour resolution)
<out>/sparse/0/{cameras,images,points3D}.txt   COLMAP text model (PINHOLE; no 3D points)
<out>/point_cloud.ply                      3DGS PLY: x y z nx ny nz f_dc_0-2 opacity scale_0-2 rot_0-3
<out>/splat_instances.npy                  [N] int32 GT instance of each splat (0 = floor, walls)
```
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from lift3d.io import atomic_path

SH_C0 = 0.28209479177387814
OPACITY = 0.95


def _vertex_spacing(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [V, 3], [F, 3] -> [V]
    """Mean length of the mesh edges at each vertex."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    total = np.bincount(edges.ravel(), weights=np.repeat(length, 2), minlength=len(verts))
    count = np.bincount(edges.ravel(), minlength=len(verts))
    return total / np.maximum(count, 1)


def _tangent_quats(normals: np.ndarray) -> np.ndarray:  # [V, 3] unit -> [V, 4] wxyz
    """Rotations taking the local z axis to each normal (x, y span the tangent plane)."""
    from scipy.spatial.transform import Rotation

    n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    helper = np.where(np.abs(n[:, [0]]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t1 = np.cross(helper, n)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    xyzw = Rotation.from_matrix(np.stack([t1, t2, n], axis=-1)).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


def _write_colmap_text(
    model_dir: Path, K: np.ndarray, size: tuple[int, int], poses: list[np.ndarray], names: list[str]
) -> None:
    from scipy.spatial.transform import Rotation

    model_dir.mkdir(parents=True, exist_ok=True)
    W, H = size
    # COLMAP puts the upper-left pixel's centre at (0.5, 0.5), lift3d at (0, 0)
    cam = f"1 PINHOLE {W} {H} {K[0, 0]:.9g} {K[1, 1]:.9g} {K[0, 2] + 0.5:.9g} {K[1, 2] + 0.5:.9g}\n"
    lines = []
    for k, (T, name) in enumerate(zip(poses, names, strict=True), start=1):
        T_camera_world = np.linalg.inv(T)
        x, y, z, w = Rotation.from_matrix(T_camera_world[:3, :3]).as_quat()
        t = T_camera_world[:3, 3]
        lines.append(
            f"{k} {w:.12g} {x:.12g} {y:.12g} {z:.12g} {t[0]:.12g} {t[1]:.12g} {t[2]:.12g} 1 {name}\n\n"
        )
    for fname, text in (
        ("cameras.txt", "# Camera list\n" + cam),
        ("images.txt", "# Image list\n" + "".join(lines)),
        ("points3D.txt", "# 3D point list (none)\n"),
    ):
        with atomic_path(model_dir / fname) as tmp:
            tmp.write_text(text)


def _write_splats_ply(path: Path, verts, normals, colors, spacing, quats) -> None:
    from plyfile import PlyData, PlyElement

    names = [
        "x",
        "y",
        "z",
        "nx",
        "ny",
        "nz",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    v = np.empty(len(verts), dtype=[(n, "<f4") for n in names])
    for k, n in enumerate("xyz"):
        v[n] = verts[:, k]
        v[f"n{n}"] = normals[:, k]
    for k in range(3):
        v[f"f_dc_{k}"] = (colors[:, k] / 255.0 - 0.5) / SH_C0
    v["opacity"] = np.log(OPACITY / (1 - OPACITY))
    sigma = 0.5 * spacing
    v["scale_0"] = v["scale_1"] = np.log(sigma)
    v["scale_2"] = np.log(0.05 * sigma)
    for k in range(4):
        v[f"rot_{k}"] = quats[:, k]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(v, "vertex")], text=False).write(str(tmp))


def make_splat_scene(
    out_dir: str | Path, *, n_frames: int = 8, size: tuple[int, int] = (128, 96), seed: int = 0
) -> Path:
    """Write the synthetic scene as COLMAP cameras + images + a 3DGS PLY, with per-splat GT.

    Args:
        out_dir: the scene folder to write.
        n_frames, size, seed: as `make_synthetic_scene` (size is the depth resolution there; the
            images written here are its colour images, twice as large).

    Returns:
        The scene folder.
    """
    import json

    import open3d as o3d
    from PIL import Image
    from plyfile import PlyData

    from lift3d.recon.geometry import project
    from lift3d.recon.scannet import read_scannet_export
    from lift3d.recon.synthetic import make_synthetic_scene

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        scan_dir = make_synthetic_scene(
            Path(tmp) / "scene0998_00", n_frames=n_frames, size=size, seed=seed
        )
        name = scan_dir.name
        scan = read_scannet_export(scan_dir)
        K = np.loadtxt(scan_dir / "intrinsic" / "intrinsic_color.txt")[:3, :3]
        color_size = (size[0] * 2, size[1] * 2)  # make_synthetic_scene's colour_scale
        poses, names, depths = [], [], []
        for frame_name in scan.frame_names:
            shutil.copyfile(
                scan_dir / "color" / f"{frame_name}.jpg", out / "images" / f"{frame_name}.jpg"
            )
            poses.append(np.loadtxt(scan_dir / "pose" / f"{frame_name}.txt"))
            names.append(f"{frame_name}.jpg")
            depths.append(
                np.asarray(Image.open(scan_dir / "depth" / f"{frame_name}.png"), np.float64) / 1000
            )
        K_depth = np.loadtxt(scan_dir / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
        ply = PlyData.read(str(scan_dir / f"{name}_vh_clean_2.ply"))
        vx = ply["vertex"].data
        verts = np.stack([vx["x"], vx["y"], vx["z"]], axis=1).astype(np.float64)
        colors = np.stack([vx["red"], vx["green"], vx["blue"]], axis=1).astype(np.float64)
        faces = np.stack(ply["face"].data["vertex_indices"]).astype(np.int64)
        segs = np.asarray(
            json.loads((scan_dir / f"{name}_vh_clean_2.0.010000.segs.json").read_text())[
                "segIndices"
            ]
        )
        groups = json.loads((scan_dir / f"{name}.aggregation.json").read_text())["segGroups"]
    gt = np.zeros(len(verts), np.int32)
    for g in groups:
        if g["label"] not in ("floor", "wall"):
            gt[np.isin(segs, g["segments"])] = g["objectId"] + 1
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(faces)
    )
    mesh.compute_vertex_normals()
    normals = np.asarray(mesh.vertex_normals)
    # seen: in front of some camera, inside its image, and not hidden (its z within 2 cm of the
    # ray-cast depth there): a trained 3DGS has no splats where no camera looked
    seen = np.zeros(len(verts), bool)
    for T, depth in zip(poses, depths, strict=True):
        uv, z = project(verts, K_depth, T)
        with np.errstate(invalid="ignore"):
            u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            inside = (z > 0) & (u >= 0) & (u < size[0]) & (v >= 0) & (v < size[1])
        d = np.zeros(len(verts))
        d[inside] = depth[v[inside].astype(np.int64), u[inside].astype(np.int64)]
        seen |= inside & (d > 0) & (np.abs(d - z) < 0.02)
    spacing = _vertex_spacing(verts, faces)
    keep = seen & (spacing > 0)
    _write_colmap_text(out / "sparse" / "0", K, color_size, poses, names)
    _write_splats_ply(
        out / "point_cloud.ply",
        verts[keep],
        normals[keep],
        colors[keep],
        spacing[keep],
        _tangent_quats(normals[keep]),
    )
    with atomic_path(out / "splat_instances.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, gt[keep])
    return out
