"""The Python API: `lift3d.segment(...)` and the README's Python examples, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lift3d
from lift3d.errors import InputError

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_the_one_call_and_the_three_steps():
    blocks = _python_blocks()
    assert len(blocks) == 2
    assert "lift3d.segment(" in blocks[0]
    assert all(step in blocks[1] for step in ("load_scene(", "tracker.step(", "lift_to_points("))


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    from lift3d.recon.synthetic import make_synthetic_scene

    monkeypatch.chdir(tmp_path)
    make_synthetic_scene(
        Path("outputs/demo/scene"), n_frames=4, size=(128, 96)
    )  # what `make demo` writes, smaller
    for block in _python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert (
        printed[0].startswith("H = 0.")
        and "outputs/api/points.ply" in printed[0]
        and "mesh.ply" in printed[0]
    )
    n = int(printed[1].split()[0])
    assert n >= 5 and printed[1].endswith("vertices")
    for name in ("points.ply", "mesh.ply", "report.html", "metrics.json"):
        assert (tmp_path / "outputs" / "api" / name).is_file(), name


def test_segment_returns_the_paths_and_metrics(synthetic_scene_dir, tmp_path):
    from lift3d.consistency.classical import ClassicalSegmenter

    result = lift3d.segment(
        synthetic_scene_dir,
        out=tmp_path / "o",
        segmenter=ClassicalSegmenter(),
        max_frames=2,
        preview=False,
    )
    assert result.out == tmp_path / "o" and result.points.is_file() and result.mesh.is_file()
    assert result.report is None and result.splats is None and result.scannet.is_dir()
    assert 0 < result.H <= 1 and result.metrics["frames"] == 2
    assert sorted(p.name for p in result.masks.iterdir()) == ["0.png", "7.png"]
    with pytest.raises(InputError, match="unknown option.*max_frame\\b"):
        lift3d.segment(synthetic_scene_dir, out=tmp_path / "x", max_frame=2)


def test_import_lift3d_names_the_api_lazily():
    assert callable(lift3d.segment) and lift3d.SegmentResult.__name__ == "SegmentResult"
    with pytest.raises(AttributeError):
        lift3d.no_such_name  # noqa: B018
