"""Reading a `lift3d segment` output folder (the viewers only read it; DESIGN.md, "Output").

```
OUT/points.ply      x y z red green blue label confidence
OUT/splats.ply      3DGS PLY + label + confidence (optional)
OUT/cameras.json    {"size": [W, H], "frames": [{"name", "K", "T_world_camera", "image"}]}
OUT/instances.json  {"instances": [{"id", "points", "confidence", "frames"}]}
OUT/metrics.json, OUT/run.json
```
Every reader names the file and what is wrong with it, so `lift3d view` and the report fail with
one line a user can act on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.io import read_json

logger = logging.getLogger(__name__)


def check_output(out_dir: str | Path, required: tuple[str, ...]) -> Path:
    """The folder, after checking it exists and holds the `required` files of a lift3d output.

    Raises:
        InputError: the folder is missing, or is not a lift3d output (names what is missing).
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(out, "output folder not found")
    missing = [name for name in required if not (out / name).is_file()]
    if missing:
        raise InputError(
            out,
            f"not a lift3d output: {', '.join(missing)} missing (write one with `lift3d segment --scene S --out {out}`)",
        )
    return out


def read_cameras(path: str | Path) -> tuple[tuple[int, int], list[dict]]:
    """`cameras.json`: (W, H) and the frames, with `K` [3, 3] and `T_world_camera` [4, 4] float64.

    Frames without a pose (`T_world_camera` null, or not finite) get `T_world_camera` None.

    Raises:
        InputError: the file is missing, not JSON, or lacks `size` / `frames` / `K`.
    """
    path = Path(path)
    data = read_json(path, "cameras.json")
    try:
        w, h = (int(x) for x in data["size"])
        frames = []
        for f in data["frames"]:
            T = f.get("T_world_camera")
            T = None if T is None else np.asarray(T, np.float64).reshape(4, 4)
            frames.append(
                {
                    "name": str(f["name"]),
                    "K": np.asarray(f["K"], np.float64).reshape(3, 3),
                    "T_world_camera": T if T is not None and np.all(np.isfinite(T)) else None,
                    "image": f.get("image") or "",
                }
            )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            path,
            "expected {'size': [W, H], 'frames': [{'name', 'K', 'T_world_camera', 'image'}]} "
            f"({e.__class__.__name__}: {e})",
        ) from None
    return (w, h), frames


def frame_image_path(out_dir: Path, entry: str) -> Path | None:
    """The source image of a `cameras.json` frame (relative paths are relative to the output)."""
    if not entry:
        return None
    p = Path(entry)
    return p if p.is_absolute() else Path(out_dir) / p


def read_labeled_points(path: str | Path) -> dict[str, np.ndarray]:
    """`points.ply`: xyz [N, 3] float32, rgb [N, 3] uint8, label [N] int32, confidence [N] float32.

    A cloud without colours is grey; without confidence, all ones.

    Raises:
        InputError: missing or unreadable PLY, or no x, y, z, label.
    """
    from lift3d.io import ply_vertex_fields, read_ply

    path = Path(path)
    v = ply_vertex_fields(
        read_ply(path), path, ("x", "y", "z", "label"), "a lift3d labeled point cloud"
    )
    names = v.dtype.names
    n = len(v)
    rgb = (
        np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.uint8)
        if all(c in names for c in ("red", "green", "blue"))
        else np.full((n, 3), 200, np.uint8)
    )
    return {
        "xyz": np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32),
        "rgb": rgb,
        "label": np.asarray(v["label"], np.int32),
        "confidence": np.asarray(v["confidence"], np.float32)
        if "confidence" in names
        else np.ones(n, np.float32),
    }


def quaternion_to_matrix(wxyz: np.ndarray) -> np.ndarray:  # [N, 3, 3]
    """Rotation matrices of [N, 4] quaternions (w, x, y, z), normalised first (3DGS stores them raw)."""
    q = np.asarray(wxyz, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def read_labeled_splats(path: str | Path) -> dict[str, np.ndarray]:
    """`splats.ply` (3DGS + label + confidence) as what a viewer draws.

    Returns:
        centers [N, 3] float32, covariances [N, 3, 3] float32 (R diag(exp(scale))^2 R^T),
        rgb [N, 3] uint8 (degree-0 SH colour), opacity [N] float32 (sigmoid of the logit),
        label [N] int32, confidence [N] float32.

    Raises:
        InputError: missing or unreadable PLY, or a 3DGS field or `label` missing.
    """
    from lift3d.io import ply_vertex_fields, read_ply
    from lift3d.recon.splats import REQUIRED_FIELDS, SH_C0

    path = Path(path)
    fields = (*REQUIRED_FIELDS[:3], "f_dc_0", "f_dc_1", "f_dc_2", *REQUIRED_FIELDS[3:], "label")
    v = ply_vertex_fields(read_ply(path), path, fields, "labeled 3D Gaussian splats")
    n = len(v)
    R = quaternion_to_matrix(np.stack([v[f"rot_{i}"] for i in range(4)], 1))
    scale = np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1).astype(np.float64))
    cov = np.einsum("nij,nj,nkj->nik", R, scale**2, R)
    dc = np.stack([v[f"f_dc_{i}"] for i in range(3)], 1).astype(np.float64)
    return {
        "centers": np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32),
        "covariances": cov.astype(np.float32),
        "rgb": np.round(np.clip(0.5 + SH_C0 * dc, 0, 1) * 255).astype(np.uint8),
        "opacity": (1 / (1 + np.exp(-np.asarray(v["opacity"], np.float64)))).astype(np.float32),
        "label": np.asarray(v["label"], np.int32),
        "confidence": np.asarray(v["confidence"], np.float32)
        if "confidence" in v.dtype.names
        else np.ones(n, np.float32),
    }


def read_instances(
    out_dir: str | Path, label: np.ndarray | None = None, confidence: np.ndarray | None = None
) -> list[dict]:
    """`instances.json` as a list of {id, points, confidence, frames}, sorted by ID.

    Without the file, the instances are derived from the point labels (with no frames) and a
    warning says so.
    """
    path = Path(out_dir) / "instances.json"
    if not path.is_file():
        if label is None:
            return []
        logger.warning(
            "%s missing: instances taken from the point labels, without the views that saw them",
            path,
        )
        conf = np.ones(len(label), np.float32) if confidence is None else confidence
        return [
            {
                "id": int(k),
                "points": int((label == k).sum()),
                "confidence": float(conf[label == k].mean()),
                "frames": [],
            }
            for k in np.unique(label[label > 0]).tolist()
        ]
    data = read_json(path, "instances.json")
    try:
        out = [
            {
                "id": int(e["id"]),
                "points": int(e.get("points", 0)),
                "confidence": float(e.get("confidence", float("nan"))),
                "frames": [str(f) for f in e.get("frames", [])],
            }
            for e in data["instances"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            path,
            f"expected {{'instances': [{{'id', 'points', 'confidence', 'frames'}}]}} ({e.__class__.__name__}: {e})",
        ) from None
    return sorted(out, key=lambda e: e["id"])
