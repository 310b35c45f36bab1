"""Bad inputs and hostile conditions, as a careful user meets them (issue 19).

Each case runs the CLI on the tiny synthetic scan (2-3 frames, no previews) and checks the exit
code, that the one-line message names the path or flag and the problem, and that no file of a
complete-looking result (run.json, metrics.json, label maps of another run) is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.cli import entrypoint

SEAL = ("run.json", "metrics.json")


def _segment(scene: Path, out: Path, *extra: str) -> int:
    return entrypoint(["segment", "--scene", str(scene), "--out", str(out), "--no-preview", *extra])


def _masks(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "masks").glob("*.png") if not p.name.startswith("."))


def _no_result(out: Path) -> None:
    """Nothing that looks like a finished run: no seal, no label maps."""
    for name in SEAL:
        assert not (out / name).exists(), name
    assert not _masks(out)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    lines = [line for line in err if line.startswith("lift3d: error: ")]
    assert len(lines) == 1, err  # one line
    return lines[0]


@pytest.fixture
def scan(synthetic_scene_dir, tmp_path) -> Path:
    """A private copy of the synthetic scan (cases break it)."""
    dst = tmp_path / "scans" / synthetic_scene_dir.name
    shutil.copytree(synthetic_scene_dir, dst)
    return dst


@pytest.fixture(scope="module")
def full_run(synthetic_scene_dir, tmp_path_factory) -> Path:
    """A complete 4-frame run (copied by the cases that rerun into it)."""
    out = tmp_path_factory.mktemp("full") / "out"
    assert _segment(synthetic_scene_dir, out, "--max-frames", "4") == 0
    return out


def _copy_run(full_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    return out


# -- 1. a run owns its folder ------------------------------------------------------------


def test_smaller_rerun_removes_the_old_label_maps(full_run, synthetic_scene_dir, tmp_path):
    out = _copy_run(full_run, tmp_path)
    assert len(_masks(out)) == 4
    assert _segment(synthetic_scene_dir, out, "--max-frames", "2") == 0
    assert _masks(out) == ["0", "7"]
    run = json.loads((out / "run.json").read_text())
    assert run["scene"]["frames"] == ["0", "7"] and run["fingerprint"]["frames"] == ["0", "7"]


def test_resume_with_other_settings_is_refused_and_says_what_differs(
    full_run, synthetic_scene_dir, tmp_path, capsys
):
    out = _copy_run(full_run, tmp_path)
    before = {p.name: p.read_bytes() for p in (out / "masks").glob("*.png")}
    rc = _segment(
        synthetic_scene_dir,
        out,
        "--max-frames",
        "4",
        "--resume",
        "--seed",
        "1",
        "--tracker.points-per-mask",
        "3",
    )
    assert rc == 2
    msg = _error(capsys)
    assert (
        str(out) in msg
        and "--resume" in msg
        and "seed: 0 -> 1" in msg
        and "tracker.points_per_mask: 5 -> 3" in msg
    )
    # nothing was touched: the old run stays whole and says what it is
    assert {p.name: p.read_bytes() for p in (out / "masks").glob("*.png")} == before
    assert json.loads((out / "run.json").read_text())["seed"] == 0


def test_resume_without_a_record_of_the_maps_is_refused(
    full_run, synthetic_scene_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    shutil.copytree(full_run / "masks", out / "masks")  # label maps of unknown origin
    assert _segment(synthetic_scene_dir, out, "--max-frames", "4", "--resume") == 2
    msg = _error(capsys)
    assert str(out) in msg and "no record" in msg
    assert not any((out / n).exists() for n in SEAL)


def test_resume_with_the_same_settings_keeps_the_maps(full_run, synthetic_scene_dir, tmp_path):
    out = _copy_run(full_run, tmp_path)
    (out / "masks" / "7.png").unlink()
    assert _segment(synthetic_scene_dir, out, "--max-frames", "4", "--resume") == 0
    assert len(_masks(out)) == 4
    assert (
        json.loads((out / "metrics.json").read_text())["H"]
        == json.loads((full_run / "metrics.json").read_text())["H"]
    )


def test_failed_rerun_leaves_no_old_seal(
    full_run, synthetic_scene_dir, tmp_path, capsys, monkeypatch
):
    import lift3d.points as points
    from lift3d.errors import InputError

    def broken(*a, **k):
        raise InputError(tmp_path / "mesh.ply", "cannot lift")

    out = _copy_run(full_run, tmp_path)
    monkeypatch.setattr(points, "superpoint_view_table", broken)
    assert _segment(synthetic_scene_dir, out, "--max-frames", "2") == 2
    assert "cannot lift" in _error(capsys)
    for name in SEAL:
        assert not (out / name).exists(), f"the previous run's {name} outlived a failed rerun"
    assert _masks(out) == ["0", "7"]  # only this run's maps, never a mix


def test_batch_redoes_a_scene_made_with_other_options(synthetic_scene_dir, tmp_path, capsys):
    root = tmp_path / "scans"
    shutil.copytree(synthetic_scene_dir, root / synthetic_scene_dir.name)
    argv = [
        "batch",
        "--scenes",
        str(root / "scene*"),
        "--out",
        str(tmp_path / "runs"),
        "--engine",
        "local",
        "--segment.max-frames",
        "2",
        "--segment.no-preview",
    ]

    def status(*extra) -> str:
        assert entrypoint(argv + list(extra)) == 0
        rec = json.loads((tmp_path / "runs" / "batch.json").read_text())["scenes"]
        return rec[synthetic_scene_dir.name]["status"]

    assert status() == "done"
    assert status() == "skipped"
    assert status("--segment.seed", "3") == "done"  # another seed: its sealed fingerprint differs
    assert status("--segment.seed", "3") == "skipped"
    assert status("--segment.seed", "3", "--force") == "done"


# -- 2. bad geometry is dropped with one warning -----------------------------------------


def test_depth_frame_of_another_size_is_dropped_with_a_warning(scan, tmp_path, caplog):
    d = Image.open(scan / "depth" / "3.png")
    d.resize((d.width // 2, d.height // 2), Image.NEAREST).save(scan / "depth" / "3.png")
    with caplog.at_level(logging.WARNING):
        assert _segment(scan, tmp_path / "out", "--frames", "2:5") == 0
    msgs = [r.getMessage() for r in caplog.records if "another size" in r.getMessage()]
    assert len(msgs) == 1 and str(scan) in msgs[0] and msgs[0].endswith(": 3")
    assert _masks(tmp_path / "out") == ["2", "4", "5"]  # 2:5 of 0 1 2 4 5 6 7


def test_non_rigid_pose_is_dropped_with_a_warning(scan, tmp_path, caplog):
    (scan / "pose" / "3.txt").write_text("0 0 0 0\n" * 4)
    with caplog.at_level(logging.WARNING):
        assert _segment(scan, tmp_path / "out", "--frames", "2:5") == 0
    msgs = [r.getMessage() for r in caplog.records if "not rigid" in r.getMessage()]
    assert len(msgs) == 1 and str(scan) in msgs[0] and msgs[0].endswith(": 3")
    assert "3" not in _masks(tmp_path / "out")


def test_depth_without_colour_is_reported(scan, caplog):
    from lift3d.recon import load_scene

    shutil.copy(scan / "depth" / "0.png", scan / "depth" / "99.png")
    with caplog.at_level(logging.WARNING):
        assert "99" not in load_scene(scan).frame_names
    assert any("no colour" in r.getMessage() and "99" in r.getMessage() for r in caplog.records)


# -- 3. file modes -----------------------------------------------------------------------


def test_output_files_get_the_umasks_mode(synthetic_scene_dir, tmp_path):
    old = os.umask(0o022)
    try:
        assert (
            entrypoint(
                [
                    "segment",
                    "--scene",
                    str(synthetic_scene_dir),
                    "--out",
                    str(tmp_path / "out"),
                    "--max-frames",
                    "2",
                ]
            )
            == 0
        )  # previews too: every writer
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) > 10
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


# -- 4. every input checked before the first frame ---------------------------------------


def test_missing_splats_fails_before_tracking(synthetic_scene_dir, tmp_path, capsys):
    missing = tmp_path / "missing.ply"
    assert _segment(synthetic_scene_dir, tmp_path / "out", "--splats", str(missing)) == 2
    msg = _error(capsys)
    assert str(missing) in msg and "--splats" in msg and "not found" in msg
    assert not (tmp_path / "out").exists()


def test_splats_that_are_no_3dgs_ply_fail_before_tracking(synthetic_scene_dir, tmp_path, capsys):
    mesh = synthetic_scene_dir / f"{synthetic_scene_dir.name}_vh_clean_2.ply"
    assert _segment(synthetic_scene_dir, tmp_path / "out", "--splats", str(mesh)) == 2
    msg = _error(capsys)
    assert str(mesh) in msg and "--splats" in msg and "opacity" in msg
    assert not (tmp_path / "out").exists()


def test_scene_name_that_cannot_name_an_export_file(scan, tmp_path, capsys):
    bad = scan.parent / "scan (1)"
    scan.rename(bad)
    assert _segment(bad, tmp_path / "out") == 2
    msg = _error(capsys)
    assert str(bad) in msg and "--scene" in msg and "cannot name" in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag,value,named",
    [
        ("--metric.eps", "nan", "--metric.eps"),
        ("--eps", "-1", "--metric.eps"),
        ("--voxel-size", "inf", "--voxel-size"),
        ("--metric-max-points", "0", "--metric.max-points"),
        ("--metric.workers", "0", "--metric.workers"),
    ],
)
def test_bad_numbers_fail_before_the_scene_is_read(
    synthetic_scene_dir, tmp_path, capsys, flag, value, named
):
    # the metric's settings are --metric.*; the spellings from before (--eps ...) still work
    assert _segment(synthetic_scene_dir, tmp_path / "out", flag, value) == 2
    assert named in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_cuda_device_without_cuda(synthetic_scene_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _segment(synthetic_scene_dir, tmp_path / "out", "--device", "cuda") == 2
    msg = _error(capsys)
    assert "--device cuda" in msg and "CUDA is not available" in msg
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_names_the_flag(synthetic_scene_dir, tmp_path, capsys):
    ckpt = tmp_path / "sam_vit_b.pth"
    assert (
        _segment(
            synthetic_scene_dir,
            tmp_path / "out",
            "--segmenter",
            "sam",
            "--sam-checkpoint",
            str(ckpt),
        )
        == 2
    )
    msg = _error(capsys)
    assert str(ckpt) in msg and "--segmenter.sam.checkpoint" in msg
    assert not (tmp_path / "out").exists()


# -- 5. file-system errors are one line, exit 2 ------------------------------------------


def test_out_is_a_file(synthetic_scene_dir, tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("not a folder")
    assert _segment(synthetic_scene_dir, f) == 2
    msg = _error(capsys)
    assert str(f) in msg and "is a file" in msg
    assert f.read_text() == "not a folder"


def test_out_under_a_file(synthetic_scene_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert _segment(synthetic_scene_dir, f / "out") == 2
    msg = _error(capsys)
    assert str(f / "out") in msg and f"{f} is a file" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out(synthetic_scene_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    assert _segment(synthetic_scene_dir, out) == 2
    msg = _error(capsys)
    assert str(out) in msg and "not writable" in msg


def test_over_long_out_name(synthetic_scene_dir, tmp_path, capsys):
    out = tmp_path / ("o" * 300)
    assert _segment(synthetic_scene_dir, out) == 2
    msg = _error(capsys)
    assert str(out) in msg and "too long" in msg


def test_long_scene_name_whose_temporary_names_would_be_too_long(scan, tmp_path):
    # 240 characters: `scannet/<name>.txt` fits in 255, its temporary name (~20 longer) would not
    long = scan.parent / ("s" * 240)
    scan.rename(long)
    out = tmp_path / "out"
    # the mesh keeps its old name (the scan's name + its suffix would not fit in 255): --mesh
    mesh = long / f"{scan.name}_vh_clean_2.ply"
    assert _segment(long, out, "--max-frames", "2", "--mesh", str(mesh)) == 0
    assert (out / "scannet" / f"{long.name}.txt").is_file()


def test_synth_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "scene0001_00"
    f.write_text("x")
    assert entrypoint(["synth", "--out", str(f), "--frames", "2"]) == 2
    msg = _error(capsys)
    assert str(f) in msg and "is a file" in msg


# -- 6. leftovers of a hard kill ---------------------------------------------------------


def test_hidden_temporaries_are_cleaned_and_ignored(full_run, synthetic_scene_dir, tmp_path):
    out = _copy_run(full_run, tmp_path)
    leftover = out / "masks" / ".0.png.k3j2h1ab.tmp.png"
    leftover.write_bytes(b"")  # what a SIGKILL mid-write leaves
    # lift3d metric does not count it ...
    assert (
        entrypoint(
            [
                "metric",
                "--scene",
                str(synthetic_scene_dir),
                "--masks",
                str(out / "masks"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["frames"] == 4
    # ... and the next run into the folder removes it
    assert _segment(synthetic_scene_dir, out, "--max-frames", "4", "--resume") == 0
    assert not leftover.exists() and not list(out.rglob("*.tmp*"))


# -- 7. one run at a time per folder -----------------------------------------------------


def test_two_concurrent_runs_one_succeeds_one_is_refused_at_once(
    synthetic_scene_dir, tmp_path, capsys, monkeypatch
):
    import lift3d.pipeline as pipeline

    out = tmp_path / "out"
    first_is_tracking, second_done = threading.Event(), threading.Event()
    real = pipeline.run_tracking

    def tracking_that_waits(*a, **k):  # the first run holds the folder while the second starts
        first_is_tracking.set()
        assert second_done.wait(120)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "run_tracking", tracking_that_waits)
    rc_first: list[int] = []
    first = threading.Thread(
        target=lambda: rc_first.append(_segment(synthetic_scene_dir, out, "--max-frames", "2"))
    )
    first.start()
    try:
        assert first_is_tracking.wait(120)
        t0 = time.perf_counter()
        rc_second = _segment(synthetic_scene_dir, out, "--max-frames", "3")
        seconds = time.perf_counter() - t0
    finally:
        second_done.set()
        first.join(120)
    assert rc_second == 2 and seconds < 10  # at once: it never waits for the lock
    msg = _error(capsys)
    assert str(out) in msg and "another lift3d run" in msg and f"pid {os.getpid()}" in msg
    assert rc_first == [0]
    assert _masks(out) == ["0", "7"]  # the first run's result, whole
    assert json.loads((out / "run.json").read_text())["scene"]["frames"] == ["0", "7"]


# -- 8. batch exit codes and signals -----------------------------------------------------


def test_batch_with_a_failed_scene_exits_non_zero(synthetic_scene_dir, tmp_path, capsys):
    root = tmp_path / "scans"
    for name in ("scene0001_00", "scene0002_00"):
        shutil.copytree(synthetic_scene_dir, root / name)
    shutil.rmtree(root / "scene0002_00" / "pose")
    rc = entrypoint(
        [
            "batch",
            "--scenes",
            str(root / "scene*"),
            "--out",
            str(tmp_path / "runs"),
            "--engine",
            "local",
            "--segment.max-frames",
            "2",
            "--segment.no-preview",
        ]
    )
    assert rc == 2
    captured = capsys.readouterr()
    assert "done 1, failed 1" in captured.out  # the summary is still printed
    assert (
        "1 of 2 scenes failed (scene0002_00)" in captured.err
        and str(tmp_path / "runs" / "batch.json") in captured.err
    )
    assert not (tmp_path / "runs" / "scene0002_00" / "run.json").exists()


def test_sigterm_during_a_ray_batch_ends_cleanly(
    synthetic_scene_dir, tmp_path, capsys, monkeypatch
):
    import signal

    import psutil
    from ray.util import ActorPool

    root = tmp_path / "scans"
    shutil.copytree(synthetic_scene_dir, root / synthetic_scene_dir.name)
    real = ActorPool.map_unordered

    def terminated_midway(self, fn, values):
        # after ray.init (whose own handler aborts), while the driver blocks in ray.wait: the
        # actors are still importing lift3d half a second in
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        yield from real(self, fn, values)

    monkeypatch.setattr(ActorPool, "map_unordered", terminated_midway)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    rc = entrypoint(
        [
            "batch",
            "--scenes",
            str(root / "scene*"),
            "--out",
            str(tmp_path / "runs"),
            "--cpus-per-scene",
            "1",
            "--segment.max-frames",
            "2",
            "--segment.no-preview",
        ]
    )
    assert rc == 143
    assert "interrupted" in capsys.readouterr().err
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    gone, alive = psutil.wait_procs(left, timeout=30)
    assert not alive, [p.name() for p in alive]


# -- 9. the metric of a subset run -------------------------------------------------------


def test_metric_scores_a_subset_run_from_its_run_json(full_run, synthetic_scene_dir, tmp_path):
    assert (
        entrypoint(
            [
                "metric",
                "--scene",
                str(synthetic_scene_dir),
                "--masks",
                str(full_run / "masks"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["frames"] == 4 and m["H"] == json.loads((full_run / "metrics.json").read_text())["H"]


def test_metric_takes_the_frame_selection_of_segment(full_run, synthetic_scene_dir, tmp_path):
    masks = tmp_path / "masks"  # a bare copy: no run.json beside it
    shutil.copytree(full_run / "masks", masks)
    assert (
        entrypoint(
            [
                "metric",
                "--scene",
                str(synthetic_scene_dir),
                "--masks",
                str(masks),
                "--max-frames",
                "4",
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "m.json").read_text())["H"]
        == json.loads((full_run / "metrics.json").read_text())["H"]
    )


def test_metric_of_a_subset_without_a_selection_says_how(
    full_run, synthetic_scene_dir, tmp_path, capsys
):
    masks = tmp_path / "masks"
    shutil.copytree(full_run / "masks", masks)
    assert (
        entrypoint(
            [
                "metric",
                "--scene",
                str(synthetic_scene_dir),
                "--masks",
                str(masks),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 2
    )
    msg = _error(capsys)
    assert str(masks) in msg and "no label map" in msg and "--max-frames" in msg
    assert not (tmp_path / "m.json").exists()


def test_pose_problem_reference():
    from lift3d.recon.files import pose_problem

    T = np.eye(4)
    T[:3, 3] = (1, 2, 3)
    assert pose_problem(T) is None
    assert "non-finite" in pose_problem(np.full((4, 4), -np.inf))
    assert "not rigid" in pose_problem(np.zeros((4, 4)))
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])
    assert "not rigid" in pose_problem(mirror)
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    assert "not rigid" in pose_problem(scaled)


def test_a_folder_of_the_users_own_is_not_emptied(synthetic_scene_dir, tmp_path, capsys):
    out = tmp_path / "project"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "mine.png").write_bytes(b"png")
    (out / "scannet").mkdir()
    (out / "scannet" / "notes.txt").write_text("keep")
    assert _segment(synthetic_scene_dir, out, "--max-frames", "2") == 2
    msg = _error(capsys)
    assert str(out / "masks") in msg and "no recorded lift3d run" in msg
    assert (out / "masks" / "mine.png").is_file() and (out / "scannet" / "notes.txt").is_file()


def test_batch_checks_the_options_once_before_any_scene(synthetic_scene_dir, tmp_path, capsys):
    root = tmp_path / "scans"
    shutil.copytree(synthetic_scene_dir, root / synthetic_scene_dir.name)
    rc = entrypoint(
        [
            "batch",
            "--scenes",
            str(root / "scene*"),
            "--out",
            str(tmp_path / "runs"),
            "--engine",
            "local",
            "--segment.eps",
            "nan",
        ]
    )
    assert rc == 2 and "--metric.eps" in _error(capsys)
    assert not (tmp_path / "runs" / synthetic_scene_dir.name).exists()
