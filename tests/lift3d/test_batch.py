"""`lift3d batch`: three synthetic scenes, one broken; Ray and the local engine agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lift3d.batch import run_batch
from lift3d.cli import Batch
from lift3d.config import SegmentConfig


@pytest.fixture
def three_scenes(synthetic_scene_dir, tmp_path) -> Path:
    root = tmp_path / "scans"
    for name in ("scene0001_00", "scene0002_00", "scene0003_00"):
        dst = root / name
        shutil.copytree(synthetic_scene_dir, dst)
        for p in dst.glob(f"{synthetic_scene_dir.name}*"):
            p.rename(dst / p.name.replace(synthetic_scene_dir.name, name))
    shutil.rmtree(root / "scene0002_00" / "depth")  # broken: a missing depth folder
    return root


def _cmd(root: Path, out: Path, engine: str) -> Batch:
    seg = SegmentConfig.from_options(scene=Path("."), max_frames=3, preview=False)
    return Batch(scenes=str(root / "scene*"), out=out, engine=engine, cpus_per_scene=1, segment=seg)


def test_batch_reports_the_broken_scene_and_retries_only_it(
    three_scenes, synthetic_scene_dir, tmp_path
):
    out = tmp_path / "ray_out"
    run_batch(_cmd(three_scenes, out, "ray"))
    rec = json.loads((out / "batch.json").read_text())["scenes"]
    assert rec["scene0001_00"]["status"] == "done" and rec["scene0003_00"]["status"] == "done"
    assert rec["scene0002_00"]["status"] == "failed"
    assert (
        "depth" in rec["scene0002_00"]["error"] and "scene0002_00" in rec["scene0002_00"]["error"]
    )

    shutil.copytree(synthetic_scene_dir / "depth", three_scenes / "scene0002_00" / "depth")
    run_batch(_cmd(three_scenes, out, "ray"))
    rec = json.loads((out / "batch.json").read_text())["scenes"]
    assert rec["scene0001_00"]["status"] == "skipped" and rec["scene0003_00"]["status"] == "skipped"
    assert rec["scene0002_00"]["status"] == "done"

    # the local engine gives identical outputs
    local = tmp_path / "local_out"
    run_batch(_cmd(three_scenes, local, "local"))
    for name in ("scene0001_00", "scene0002_00", "scene0003_00"):
        for png in sorted((out / name / "masks").glob("*.png")):
            assert png.read_bytes() == (local / name / "masks" / png.name).read_bytes()
        a = json.loads((out / name / "metrics.json").read_text())["H"]
        b = json.loads((local / name / "metrics.json").read_text())["H"]
        assert np.isclose(a, b)


def test_batch_builds_the_default_segmenter_per_scene(synthetic_scene_dir, tmp_path):
    # `auto` is the geometric segmenter of each scan's own points, never one classical one for all
    root = tmp_path / "scans"
    shutil.copytree(synthetic_scene_dir, root / synthetic_scene_dir.name)
    out = tmp_path / "out"
    run_batch(_cmd(root, out, "local"))
    run = json.loads((out / synthetic_scene_dir.name / "run.json").read_text())
    assert run["backends"]["segmenter"] == "geometric"
