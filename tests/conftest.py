"""Shared fixtures: the synthetic scene with exact ground truth, and the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_scene_dir(tmp_path_factory) -> Path:
    """An 8-view synthetic ScanNet-layout scan at 128x96 (colour 256x192) with GT instances."""
    from lift3d.recon.synthetic import make_synthetic_scene

    return make_synthetic_scene(
        tmp_path_factory.mktemp("synthetic") / "scene0999_00", n_frames=8, size=(128, 96)
    )


def read_gt_instances(scene_dir: Path, frame_names: list[str]) -> np.ndarray:
    """[N, H, W] int32 GT instance maps of the synthetic scene."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(scene_dir / "instance" / f"{n}.png")).astype(np.int32)
            for n in frame_names
        ]
    )


@pytest.fixture(scope="session")
def synthetic_gt(synthetic_scene_dir) -> np.ndarray:
    """[N, H, W] GT instance IDs of `synthetic_scene_dir` (0 = floor, walls, nothing)."""
    from lift3d.recon import load_scene

    return read_gt_instances(synthetic_scene_dir, load_scene(synthetic_scene_dir).frame_names)


@pytest.fixture(scope="session")
def splat_scene_dir(tmp_path_factory) -> Path:
    """The synthetic scene as COLMAP cameras + images + point_cloud.ply (one splat per seen vertex),
    no depth, with `splat_instances.npy` the GT instance of each splat."""
    from lift3d.recon.synthetic_splats import make_splat_scene

    return make_splat_scene(
        tmp_path_factory.mktemp("splat_scene") / "S", n_frames=8, size=(128, 96)
    )


def mean_matched_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean over GT objects of the IoU with their best-matching predicted instance (one-to-one)."""
    from scipy.optimize import linear_sum_assignment

    gt_ids = [g for g in np.unique(gt) if g > 0]
    pred_ids = [p for p in np.unique(pred) if p > 0]
    iou = np.zeros((len(gt_ids), max(len(pred_ids), 1)))
    for a, g in enumerate(gt_ids):
        for b, p in enumerate(pred_ids):
            inter = np.sum((gt == g) & (pred == p))
            iou[a, b] = inter / np.sum((gt == g) | (pred == p))
    rows, cols = linear_sum_assignment(-iou)
    matched = np.zeros(len(gt_ids))
    matched[rows] = iou[rows, cols]
    return float(matched.mean())
