"""A tiny `lift3d segment` output folder built from arrays, for the viewer, report and render tests.

Three labeled boxes on an unlabeled floor, seen by two cameras; images and label maps are the
points rendered from those cameras, so every file agrees with every other, exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.recon.geometry import look_at

SIZE = (96, 72)  # (W, H) of the fake frames
#: instance ID -> (centre of its box, RGB of its points)
BOXES = {
    1: ((-0.5, 0.0, 0.15), (200, 40, 40)),
    2: ((0.0, 0.35, 0.15), (40, 160, 60)),
    3: ((0.5, 0.0, 0.15), (50, 70, 210)),
}


def make_fake_points(seed: int = 0, per_box: int = 150, floor: int = 200):
    """xyz [N, 3] float32, rgb [N, 3] uint8, label [N] int32, confidence [N] float32."""
    rng = np.random.default_rng(seed)
    xyz, rgb, label = [], [], []
    for k, (centre, colour) in BOXES.items():
        xyz.append(rng.uniform(-0.15, 0.15, (per_box, 3)) + centre)
        rgb.append(np.clip(np.asarray(colour) + rng.integers(-15, 15, (per_box, 3)), 0, 255))
        label.append(np.full(per_box, k))
    f = rng.uniform(-1, 1, (floor, 3))
    f[:, 2] = 0.0
    xyz.append(f)
    rgb.append(np.full((floor, 3), 128))
    label.append(np.zeros(floor, int))
    xyz, rgb, label = np.concatenate(xyz), np.concatenate(rgb), np.concatenate(label)
    confidence = np.where(label > 0, rng.uniform(0.5, 1.0, len(label)), 0.0)
    return (
        xyz.astype(np.float32),
        rgb.astype(np.uint8),
        label.astype(np.int32),
        confidence.astype(np.float32),
    )


def make_fake_output(out: Path, *, with_splats: bool = False) -> Path:
    """Write points.ply, cameras.json, instances.json, masks/, images/, metrics.json, run.json."""
    from lift3d.export import write_points_ply
    from lift3d.io import write_label_map
    from lift3d.viewers.render import render_points

    out.mkdir(parents=True, exist_ok=True)
    xyz, rgb, label, confidence = make_fake_points()
    write_points_ply(out / "points.ply", xyz, rgb, label, confidence)
    w, h = SIZE
    K = np.array([[70.0, 0, (w - 1) / 2], [0, 70.0, (h - 1) / 2], [0, 0, 1]])
    frames, seen = [], {}
    for name, position in (("0", (-1.0, -1.6, 1.1)), ("1", (1.2, -1.4, 0.9))):
        T = look_at(position, (0.0, 0.1, 0.1))
        image = render_points(xyz, rgb, K, T, SIZE, point_radius_px=2, background=(235, 235, 235))
        (out / "images").mkdir(exist_ok=True)
        Image.fromarray(image).save(out / "images" / f"{name}.png")
        ids = np.stack([label & 255, np.zeros_like(label), np.zeros_like(label)], 1).astype(
            np.uint8
        )
        labels = render_points(xyz, ids, K, T, SIZE, point_radius_px=2, background=(0, 0, 0))[
            ..., 0
        ]
        write_label_map(out / "masks" / f"{name}.png", labels)
        for k in np.unique(labels[labels > 0]).tolist():
            seen.setdefault(int(k), []).append(name)
        frames.append(
            {
                "name": name,
                "K": K.tolist(),
                "T_world_camera": T.tolist(),
                "image": f"images/{name}.png",
            }
        )
    (out / "cameras.json").write_text(json.dumps({"size": list(SIZE), "frames": frames}))
    instances = [
        {
            "id": k,
            "points": int((label == k).sum()),
            "confidence": float(confidence[label == k].mean()),
            "frames": seen.get(k, []),
        }
        for k in BOXES
    ]
    (out / "instances.json").write_text(json.dumps({"instances": instances}))
    metrics = {
        "H": 0.8731,
        "pairwise": 0.9412,
        "eps": 0.02,
        "pixels": 7421,
        "masks_per_frame": [3, 3],
        "timings": {"tracking": 1.25, "metric": 0.5, "total": 2.0},
        "lifting": {"num_points": len(xyz)},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    run = {
        "command": "lift3d segment --scene fake --out out",
        "config": {"eps": 0.02, "segmenter": "classical", "seed": 0},
        "backends": {"geometry": "depth+poses", "segmenter": "classical"},
        "versions": {"python": "3.11"},
        "seed": 0,
    }
    (out / "run.json").write_text(json.dumps(run))
    if with_splats:
        write_fake_splats(out / "splats.ply", xyz, rgb, label, confidence)
    return out


def write_fake_splats(path: Path, xyz, rgb, label, confidence) -> None:
    """A 3DGS PLY (degree 0) with one small isotropic splat per point."""
    from lift3d.io import write_ply

    n = len(xyz)
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
    vertex = np.zeros(
        n, dtype=[(f, "<f4") for f in names] + [("label", "<i4"), ("confidence", "<f4")]
    )
    for i, a in enumerate("xyz"):
        vertex[a] = xyz[:, i]
    for i in range(3):
        vertex[f"f_dc_{i}"] = (rgb[:, i] / 255.0 - 0.5) / 0.28209479177387814
        vertex[f"scale_{i}"] = np.log(0.02)
    vertex["opacity"] = 3.0
    vertex["rot_0"] = 1.0
    vertex["label"] = label
    vertex["confidence"] = confidence
    write_ply(path, vertex)


@pytest.fixture
def fake_output(tmp_path) -> Path:
    """A tiny lift3d output folder (3 instances, 2 cameras) in tmp_path/out."""
    return make_fake_output(tmp_path / "out")


@pytest.fixture
def fake_output_with_splats(tmp_path) -> Path:
    """`fake_output` plus a splats.ply of one 2 cm splat per point."""
    return make_fake_output(tmp_path / "out", with_splats=True)
