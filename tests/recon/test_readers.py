"""The scene readers besides the ScanNet export: `.sens`, images and video, COLMAP,
`transforms.json`, Redwood; their format detection through `load_scene`, and bad input."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.errors import InputError
from lift3d.recon import load_scene
from lift3d.recon.correspondence import reprojection_matches
from lift3d.recon.files import read_matrix
from lift3d.recon.geometry import project, scale_intrinsics


def _warnings(caplog, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


# ---------------------------------------------------------------------------------------------
# ScanNet .sens


@pytest.fixture(scope="module")
def scene0707(shared_data):
    """The 3 frames of scene0707_00 as arrays: (colour, depth mm, pose), K_color, K_depth."""
    root = shared_data / "scannet" / "scene0707_00"
    frames = [
        (
            np.asarray(Image.open(root / "color" / f"{i}.jpg").convert("RGB")),
            np.asarray(Image.open(root / "depth" / f"{i}.png")).astype(np.uint16),
            read_matrix(root / "pose" / f"{i}.txt"),
        )
        for i in range(3)
    ]
    return (
        root,
        frames,
        read_matrix(root / "intrinsic/intrinsic_color.txt"),
        read_matrix(root / "intrinsic/intrinsic_depth.txt"),
    )


@pytest.fixture(scope="module")
def sens_file(scene0707, tmp_path_factory) -> Path:
    from tests.recon.sens_writer import write_sens

    _, frames, K_color, K_depth = scene0707
    return write_sens(
        tmp_path_factory.mktemp("sens") / "scene0707_00.sens", frames, K_color, K_depth
    )


def test_sens_round_trip_keeps_poses_depth_and_intrinsics_exactly(scene0707, sens_file):
    from lift3d.recon.scannet.sens import SensFile

    _, frames, K_color, K_depth = scene0707
    sens = SensFile.open(sens_file)
    assert sens.sensor_name == "lift3d" and len(sens.frames) == 3
    assert (
        sens.color_size == (1296, 968)
        and sens.depth_size == (640, 480)
        and sens.depth_shift == 1000.0
    )
    np.testing.assert_array_equal(sens.K_color, K_color.astype(np.float32))
    np.testing.assert_array_equal(sens.K_depth, K_depth.astype(np.float32))
    for i, (image, depth_mm, pose) in enumerate(frames):
        raw = sens.raw_frame(i)
        np.testing.assert_array_equal(raw.T_world_camera, pose.astype(np.float32))
        np.testing.assert_array_equal(sens.read_depth_raw(i), depth_mm)
        np.testing.assert_array_equal(raw.depth, depth_mm.astype(np.float32) / 1000.0)
        assert raw.image.shape == image.shape
        assert np.abs(raw.image.astype(int) - image).mean() < 3.0  # JPEG re-encoding only


def test_read_sens_matches_the_export_reader(scene0707, sens_file):
    root = scene0707[0]
    scene = load_scene(sens_file)
    export = load_scene(root)
    assert scene.kind == "sens" and scene.frame_names == ["0", "1", "2"]
    assert scene.size == (640, 480) and scene.has_geometry and scene.match_fn is not None
    f, g = scene[2], export[2]
    assert f.image.shape == (480, 640, 3) and f.pointmap.shape == (480, 640, 3)
    np.testing.assert_allclose(f.K, g.K, rtol=1e-6)
    np.testing.assert_array_equal(f.T_world_camera, g.T_world_camera)
    both = f.valid & g.valid
    assert both.sum() > 0.99 * g.valid.sum()
    np.testing.assert_allclose(f.pointmap[both], g.pointmap[both], atol=1e-4)
    assert np.abs(f.image.astype(int) - g.image).mean() < 3.0
    uv_i, uv_j, conf = scene.matches(0, 1)
    assert len(uv_i) > 0.5 * scene[0].valid.sum()


def test_sens_in_a_folder_is_detected(sens_file, tmp_path):
    (tmp_path / "scan").mkdir()
    os.symlink(sens_file, tmp_path / "scan" / "x.sens")
    scene = load_scene(tmp_path / "scan")
    assert scene.kind == "sens" and len(scene) == 3


def test_truncated_sens_gives_a_clear_error(sens_file, tmp_path):
    data = sens_file.read_bytes()
    cut = tmp_path / "cut.sens"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        InputError, match=r"cut\.sens.*truncated.*announces 3 frames, it holds [0-2] complete"
    ):
        load_scene(cut)
    cut.write_bytes(data[:100])
    with pytest.raises(InputError, match=r"cut\.sens.*truncated.*header"):
        load_scene(cut)
    cut.write_bytes(struct.pack("<I", 7) + data[4:])
    with pytest.raises(InputError, match="version 4"):
        load_scene(cut)


def test_sens_frames_with_non_finite_pose_are_dropped_with_one_warning(tmp_path, caplog):
    from tests.recon.sens_writer import write_sens

    rng = np.random.default_rng(0)
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    frames = []
    for i in range(4):
        T = np.eye(4)
        T[0, 3] = 0.1 * i
        if i in (1, 2):
            T[:] = -np.inf
        frames.append(
            (rng.integers(0, 255, (48, 64, 3), np.uint8), np.full((48, 64), 1500, np.uint16), T)
        )
    path = write_sens(tmp_path / "a.sens", frames, K, K)
    scene = load_scene(path)
    assert scene.frame_names == ["0", "3"]
    msgs = _warnings(caplog, "non-finite pose")
    assert len(msgs) == 1 and "1, 2" in msgs[0]
    f = scene[1]
    np.testing.assert_allclose(f.depth, 1.5)
    np.testing.assert_allclose(
        f.pointmap[23, 31], [0.3 + 1.5 * (31 - 31.5) / 60, 1.5 * (23 - 23.5) / 60, 1.5], atol=1e-6
    )


def test_write_sens_rejects_inconsistent_frames(tmp_path):
    from tests.recon.sens_writer import write_sens

    K = np.eye(3) * 50
    good = (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint16), np.eye(4))
    with pytest.raises(InputError, match="frame 1: depth must be"):
        write_sens(
            tmp_path / "b.sens", [good, (good[0], np.zeros((8, 8), np.float32), np.eye(4))], K, K
        )
    assert not (tmp_path / "b.sens").exists()
    path = write_sens(tmp_path / "zeros.sens", [good], np.zeros((3, 3)), K)
    with pytest.raises(InputError, match=r"zeros\.sens.*focal"):
        load_scene(path)


# ---------------------------------------------------------------------------------------------
# image folders and video


def test_capped_size_keeps_aspect_and_caps_the_long_side():
    from lift3d.recon.images import capped_size

    assert capped_size((854, 480)) == (640, 360)
    assert capped_size((1296, 968)) == (640, 478)
    assert capped_size((480, 854)) == (360, 640)
    assert capped_size((320, 240)) == (320, 240)


def test_davis_folder_reads_as_an_image_scene_without_geometry(shared_data):
    scene = load_scene(shared_data / "davis" / "JPEGImages" / "480p" / "blackswan")
    assert scene.kind == "images" and len(scene) == 50 and scene.size == (640, 360)
    assert scene.frame_names[:3] == ["00000", "00001", "00002"] and scene.match_fn is None
    assert not scene.has_depth and not scene.has_poses
    for i in range(3):
        f = scene[i]
        assert f.name == f"{i:05d}" and f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8
        assert f.T_world_camera is None and f.pointmap is None and f.depth is None
    # the placeholder: focal 1.2 * long side, principal point at the centre (integer pixel centres)
    np.testing.assert_allclose(f.K, [[768, 0, 319.5], [0, 768, 179.5], [0, 0, 1]], rtol=2e-3)
    with pytest.raises(InputError, match="no correspondence provider"):
        scene.matches(0, 1)


def test_image_folder_sorts_numerically_and_finds_images_subfolder(tmp_path):
    for n in (10, 2, 1):
        Image.fromarray(np.full((12, 16, 3), n, np.uint8)).save(tmp_path / f"{n}.png")
    scene = load_scene(tmp_path)
    assert scene.frame_names == ["1", "2", "10"] and scene.size == (16, 12)
    assert scene[2].image[0, 0, 0] == 10
    wrapped = tmp_path / "wrapped"
    shutil.copytree(tmp_path, wrapped / "images", ignore=shutil.ignore_patterns("wrapped"))
    assert load_scene(wrapped).frame_names == ["1", "2", "10"]


def test_photos_of_another_orientation_are_warned_once(shared_data, caplog):
    scene = load_scene(shared_data / "photos" / "nle_tower")
    assert len(scene) == 7 and scene.size == (480, 640)
    msgs = _warnings(caplog, "differ in aspect ratio")
    assert len(msgs) == 1 and "1 image(s)" in msgs[0] and "2679C386" in msgs[0]


def test_unreadable_image_in_a_folder_is_named(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (12, 16, 3), np.uint8)
    for i in range(2):
        Image.fromarray(noise).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes(
        (tmp_path / "1.png").read_bytes()[:300]
    )  # header, half the pixels
    scene = load_scene(tmp_path)
    scene[1]
    with pytest.raises(InputError, match=r"2\.png.*cannot decode"):
        scene[2]
    (tmp_path / "3.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"3\.png.*cannot decode"):
        load_scene(tmp_path)


def test_folder_without_images_is_an_error(tmp_path):
    from lift3d.recon.images import read_image_folder

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no images found"):
        read_image_folder(tmp_path)
    with pytest.raises(InputError, match="cannot tell the scene format"):
        load_scene(tmp_path)


def _brightness(i: int) -> int:
    return 30 + 45 * i


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    import imageio.v2 as iio

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = []
    for i in range(5):
        f = np.full((48, 64, 3), _brightness(i), np.uint8)
        f[8:24, 8 + 8 * i : 24 + 8 * i] = 255  # a square moving right
        frames.append(f)
    iio.mimwrite(path, frames, fps=5, macro_block_size=16)
    return path


def test_video_reads_every_frame_in_order_and_out_of_order(video_file):
    scene = load_scene(video_file)
    assert scene.kind == "video" and scene.size == (64, 48) and scene.match_fn is None
    assert scene.frame_names == ["000000", "000001", "000002", "000003", "000004"]
    for i in (0, 1, 2, 3, 4, 2, 0, 4):  # sequential reads, then seeks back and forth
        f = scene[i]
        assert f.image.shape == (48, 64, 3)
        assert abs(float(np.median(f.image[30:])) - _brightness(i)) < 8, i
        cols = np.nonzero(f.image[16, :, 0] > 220)[0]
        assert abs(cols.mean() - (15.5 + 8 * i)) < 2, i
    with pytest.raises(IndexError):
        scene[5]


def test_video_in_a_folder_is_detected_and_a_broken_video_is_named(video_file, tmp_path):
    (tmp_path / "clip").mkdir()
    os.symlink(video_file, tmp_path / "clip" / "clip.mp4")
    assert load_scene(tmp_path / "clip").kind == "video"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"bad\.mp4"):
        load_scene(bad)


# ---------------------------------------------------------------------------------------------
# COLMAP


def test_colmap_cake_poses_project_the_sparse_points_onto_their_observations(shared_data):
    """The poses and intrinsics we read project each 3D point onto its 2D observations.

    The cake model's keypoints (from VGGSfM) are in VGGSfM's 1024x1024 padded frame, not in
    the 683x384 images: the long side is scaled to 1024 and the short side centred. So one
    scale and offset for all 8 images (3 numbers, 17,925 observations) must map our
    projections onto them; a wrong pose convention cannot be absorbed by it.
    """
    import pycolmap

    cake = shared_data / "colmap" / "cake"
    scene = load_scene(cake, size=(683, 384))
    assert scene.kind == "colmap" and len(scene) == 8 and scene.has_poses and not scene.has_depth
    assert scene.match_fn is None and scene.meta["num_points3D"] == 4535
    rec = pycolmap.Reconstruction(str(cake / "sparse"))
    by_name = {Path(im.name).stem: im for im in rec.images.values()}
    ours, ours_wrong, obs = [], [], []
    for i, name in enumerate(scene.frame_names):
        f = scene[i]
        assert f.image.shape == (384, 683, 3)
        im = by_name[name]
        pairs = [(p.xy, rec.points3D[p.point3D_id].xyz) for p in im.points2D if p.has_point3D()]
        xyz = np.array([q[1] for q in pairs])
        uv, z = project(xyz, f.K, f.T_world_camera)
        assert (z > 0).all()
        ours.append(uv)
        ours_wrong.append(project(xyz, f.K, np.linalg.inv(f.T_world_camera))[0])
        obs.append(np.array([q[0] for q in pairs]))
    obs = np.concatenate(obs)

    def fit(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = np.zeros((2 * len(uv), 3))
        A[0::2, 0], A[0::2, 1] = uv[:, 0], 1
        A[1::2, 0], A[1::2, 2] = uv[:, 1], 1
        ok = np.isfinite(A).all(1)
        x = np.linalg.lstsq(A[ok], obs.reshape(-1)[ok], rcond=None)[0]
        return x, np.linalg.norm((A @ x - obs.reshape(-1)).reshape(-1, 2), axis=1)

    (s, _, _), res = fit(np.concatenate(ours))
    assert len(obs) == 17925
    assert s == pytest.approx(1024 / 683, rel=1e-3)
    assert np.median(res) < 1.0 and np.percentile(res, 99) < 2.5
    _, res_wrong = fit(np.concatenate(ours_wrong))
    assert not np.nanmedian(res_wrong) < 20


def test_colmap_points_are_read(shared_data):
    from lift3d.recon.colmap import read_colmap_points

    xyz, rgb = read_colmap_points(shared_data / "colmap" / "cake")
    assert (
        xyz.shape == (4535, 3)
        and xyz.dtype == np.float32
        and rgb.shape == (4535, 3)
        and rgb.dtype == np.uint8
    )
    assert np.isfinite(xyz).all()


def test_inconsistent_colmap_model_is_named(shared_data):
    with pytest.raises(InputError, match=r"sparse_raw.*pycolmap cannot read"):
        load_scene(shared_data / "colmap" / "cake" / "sparse_raw", format="colmap")


def _write_text_model(
    root: Path, poses: list[np.ndarray], *, model="PINHOLE", params=(50.0, 52.0, 32.0, 24.0)
):
    """A COLMAP text model of 64x48 images `<i>.png` with the given cam2world poses."""
    from scipy.spatial.transform import Rotation

    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "sparse/0/cameras.txt").write_text(f"1 {model} 64 48 {' '.join(map(str, params))}\n")
    lines = []
    for i, T in enumerate(poses):
        Tcw = np.linalg.inv(T)
        qx, qy, qz, qw = Rotation.from_matrix(Tcw[:3, :3]).as_quat()
        t = Tcw[:3, 3]
        numbers = " ".join(repr(float(v)) for v in (qw, qx, qy, qz, *t))
        lines += [f"{i + 1} {numbers} 1 {i}.png", ""]
        Image.fromarray(np.full((48, 64, 3), 10 * i, np.uint8)).save(root / "images" / f"{i}.png")
    (root / "sparse/0/images.txt").write_text("\n".join(lines) + "\n")
    (root / "sparse/0/points3D.txt").write_text("1 0.5 -0.25 2.0 255 128 0 0.0\n")


def _poses(n: int) -> list[np.ndarray]:
    from scipy.spatial.transform import Rotation

    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("xyz", [0.1 * i, -0.2 + 0.15 * i, 0.05]).as_matrix()
        T[:3, 3] = [0.3 * i, -0.1, 0.2 * i]
        out.append(T)
    return out


def test_colmap_text_model_round_trips_poses_and_intrinsics(tmp_path):
    from lift3d.recon.colmap import read_colmap_points

    poses = _poses(3)
    _write_text_model(tmp_path, poses)
    scene = load_scene(tmp_path)
    assert (
        scene.kind == "colmap" and scene.frame_names == ["0", "1", "2"] and scene.size == (64, 48)
    )
    for i, T in enumerate(poses):
        f = scene[i]
        np.testing.assert_allclose(f.T_world_camera, T, atol=1e-6)
        # COLMAP's (0.5, 0.5) pixel centre -> ours at (0, 0)
        np.testing.assert_allclose(f.K, [[50, 0, 31.5], [0, 52, 23.5], [0, 0, 1]], atol=1e-6)
        assert f.image[0, 0, 0] == 10 * i
    xyz, rgb = read_colmap_points(tmp_path / "sparse" / "0")
    np.testing.assert_allclose(xyz, [[0.5, -0.25, 2.0]])
    np.testing.assert_array_equal(rgb, [[255, 128, 0]])
    small = load_scene(tmp_path, size=(32, 24))[0]
    np.testing.assert_allclose(small.K, scale_intrinsics(scene[0].K, (64, 48), (32, 24)), atol=1e-6)


def test_colmap_distortion_and_missing_images_are_warned_once(tmp_path, caplog):
    _write_text_model(tmp_path, _poses(3), model="OPENCV", params=(50, 52, 32, 24, 0.1, 0, 0, 0))
    (tmp_path / "images" / "1.png").unlink()
    scene = load_scene(tmp_path)
    assert scene.frame_names == ["0", "2"]
    assert len(_warnings(caplog, "distortion parameters")) == 1
    missing = _warnings(caplog, "image file is missing")
    assert len(missing) == 1 and "1.png" in missing[0]


def test_colmap_folder_without_model_is_named(tmp_path):
    (tmp_path / "sparse").mkdir()
    with pytest.raises(InputError, match="no COLMAP model"):
        load_scene(tmp_path)


# ---------------------------------------------------------------------------------------------
# nerfstudio / instant-ngp transforms.json


def _transforms_from(
    scene_dir: Path, out: Path, *, depth: bool, angle: bool = False
) -> tuple[list, np.ndarray]:
    """transforms.json in `out` for the synthetic scan's colour frames (OpenGL poses)."""
    K = read_matrix(scene_dir / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    W, H = Image.open(scene_dir / "color" / "0.jpg").size
    poses = [read_matrix(scene_dir / "pose" / f"{i}.txt") for i in range(4)]
    frames = []
    for i, T in enumerate(poses):
        fr = {
            "file_path": os.path.relpath(scene_dir / "color" / f"{i}.jpg", out),
            # OpenCV camera axes -> OpenGL's (y up, z back), written out independently of the reader
            "transform_matrix": (T @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist(),
        }
        if depth:
            fr["depth_file_path"] = os.path.relpath(scene_dir / "depth" / f"{i}.png", out)
        frames.append(fr)
    if angle:  # Blender / original NeRF style: horizontal field of view, centred principal point
        meta = {"camera_angle_x": 2 * math.atan(W / (2 * K[0, 0]))}
    else:  # nerfstudio puts the upper-left pixel centre at (0.5, 0.5)
        meta = {
            "fl_x": K[0, 0],
            "fl_y": K[1, 1],
            "cx": K[0, 2] + 0.5,
            "cy": K[1, 2] + 0.5,
            "w": W,
            "h": H,
        }
    meta["frames"] = frames[::-1]  # out of order: the reader sorts by name
    out.mkdir(parents=True, exist_ok=True)
    (out / "transforms.json").write_text(json.dumps(meta))
    return poses, K


def test_transforms_json_rgbd_matches_the_scannet_reader(synthetic_scene_dir, tmp_path):
    poses, _ = _transforms_from(synthetic_scene_dir, tmp_path / "ns", depth=True)
    scene = load_scene(tmp_path / "ns")
    ref = load_scene(synthetic_scene_dir)
    assert scene.kind == "nerfstudio" and scene.frame_names == ["0", "1", "2", "3"]
    assert scene.size == ref.size and scene.has_geometry and scene.match_fn is not None
    for i in (0, 3):
        f, g = scene[i], ref[i]
        np.testing.assert_allclose(f.T_world_camera, poses[i], atol=1e-6)
        np.testing.assert_allclose(f.K, g.K, atol=1e-4)
        both = f.valid & g.valid
        assert both.sum() > 0.99 * g.valid.sum()
        np.testing.assert_allclose(f.pointmap[both], g.pointmap[both], atol=1e-4)
    # a pixel back-projected in one view lands on the same 3D point seen from the other
    f0, f1 = scene[0], scene[1]
    uv0, uv1, _ = scene.match_frames(f0, f1)
    assert len(uv0) > 0.5 * f0.valid.sum()
    p0 = f0.pointmap[uv0[:, 1].astype(int), uv0[:, 0].astype(int)]
    p1 = f1.pointmap[uv1[:, 1].astype(int), uv1[:, 0].astype(int)]
    assert np.median(np.linalg.norm(p0 - p1, axis=1)) < 0.02


def test_transforms_json_camera_angle_x_and_no_depth(synthetic_scene_dir, tmp_path):
    poses, K = _transforms_from(synthetic_scene_dir, tmp_path / "ngp", depth=False, angle=True)
    scene = load_scene(tmp_path / "ngp" / "transforms.json")
    W, H = Image.open(synthetic_scene_dir / "color" / "0.jpg").size
    assert (
        scene.size == (W, H) and scene.has_poses and not scene.has_depth and scene.match_fn is None
    )
    f = scene[2]
    assert f.pointmap is None
    np.testing.assert_allclose(f.T_world_camera, poses[2], atol=1e-6)
    np.testing.assert_allclose(
        f.K, [[K[0, 0], 0, (W - 1) / 2], [0, K[0, 0], (H - 1) / 2], [0, 0, 1]], rtol=1e-5
    )


def test_transforms_json_bad_input_is_named(synthetic_scene_dir, tmp_path, caplog):
    out = tmp_path / "ns"
    _transforms_from(synthetic_scene_dir, out, depth=True)
    path = out / "transforms.json"
    meta = json.loads(path.read_text())

    path.write_text("{ not json")
    with pytest.raises(InputError, match=r"transforms\.json.*malformed JSON"):
        load_scene(out)

    bad = json.loads(json.dumps(meta))
    bad["frames"][1]["transform_matrix"] = bad["frames"][1]["transform_matrix"][:3]
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"transforms\.json.*must be 4x4, found shape \(3, 4\)"):
        load_scene(out)

    bad = json.loads(json.dumps(meta))
    del bad["frames"][0]["depth_file_path"]
    path.write_text(json.dumps(bad))
    with pytest.raises(
        InputError, match="depth_file_path is given for some frames only; missing for 3"
    ):
        load_scene(out)

    bad = json.loads(json.dumps(meta))
    bad["frames"][0]["file_path"] = "nowhere/3.jpg"
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"nowhere/3\.jpg.*not found"):
        load_scene(out)

    bad = json.loads(json.dumps(meta))
    bad["fl_x"] = 0
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="focal"):
        load_scene(out)

    bad = json.loads(json.dumps(meta))
    for k in (0, 2):  # frames are listed in reverse: these are frames 3 and 1
        bad["frames"][k]["transform_matrix"][0][3] = float("nan")
    path.write_text(json.dumps(bad))
    assert load_scene(out).frame_names == ["0", "2"]
    msgs = _warnings(caplog, "non-finite transform_matrix")
    assert len(msgs) == 1 and "1, 3" in msgs[0]


# ---------------------------------------------------------------------------------------------
# Redwood .log RGB-D


def test_icl_livingroom_reprojects_between_consecutive_frames(shared_data):
    scene = load_scene(shared_data / "icl_livingroom1")
    assert (
        scene.kind == "redwood"
        and len(scene) == 211
        and scene.size == (640, 480)
        and scene.has_geometry
    )
    assert scene.meta["trajectory"].endswith("test_scene/trajectory.log")
    f0, f1 = scene[0], scene[1]
    np.testing.assert_allclose(f0.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    assert f0.valid.mean() > 0.8
    uv0, uv1, conf = reprojection_matches(f0, f1)
    # most pixels of frame 0 land in frame 1 where frame 1 measured the same depth (+-2 cm + 2 %)
    assert len(uv0) >= 0.8 * f0.valid.sum()
    assert np.median(conf) > 0.5


@pytest.fixture
def mini_redwood(shared_data, tmp_path) -> Path:
    """4 ICL frames (quarter size) with a 3-pose trajectory at the root."""
    src = shared_data / "icl_livingroom1"
    root = tmp_path / "mini"
    (root / "image").mkdir(parents=True)
    (root / "depth").mkdir()
    for i in range(4):
        Image.open(src / "image" / f"{i:05d}.jpg").resize((160, 120)).save(
            root / "image" / f"{i:05d}.jpg"
        )
        d = np.asarray(Image.open(src / "depth" / f"{i:05d}.png"))[::4, ::4]
        Image.fromarray(d).save(root / "depth" / f"{i:05d}.png")
    log = (src / "test_scene" / "trajectory.log").read_text().splitlines()
    (root / "traj.log").write_text("\n".join(log[:15]) + "\n")
    return root


def test_redwood_pose_image_mismatch_and_intrinsics_json(mini_redwood, caplog):
    scene = load_scene(mini_redwood)
    assert scene.frame_names == ["00000", "00001", "00002"] and scene.size == (160, 120)
    msgs = _warnings(caplog, "with no pose in traj.log")
    assert len(msgs) == 1 and "00003" in msgs[0]
    np.testing.assert_allclose(
        scene[0].K,
        scale_intrinsics(
            np.array([[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]]), (640, 480), (160, 120)
        ),
    )
    (mini_redwood / "camera_intrinsic.json").write_text(
        json.dumps(
            {"width": 160, "height": 120, "intrinsic_matrix": [130, 0, 0, 0, 131, 0, 79.5, 59.5, 1]}
        )
    )
    f = load_scene(mini_redwood)[1]
    np.testing.assert_allclose(f.K, [[130, 0, 79.5], [0, 131, 59.5], [0, 0, 1]])
    uv, z = project(f.pointmap[f.valid], f.K, f.T_world_camera)
    np.testing.assert_allclose(uv, np.stack(np.nonzero(f.valid)[::-1], -1), atol=1e-3)


def test_redwood_bad_input_is_named(mini_redwood):
    log = mini_redwood / "traj.log"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:5] + ["1 1", *lines[6:]]) + "\n")
    with pytest.raises(InputError, match=r"traj\.log.*line 6"):
        load_scene(mini_redwood)
    log.write_text("\n".join(lines[:14]) + "\n")
    with pytest.raises(InputError, match=r"traj\.log.*5 lines per frame"):
        load_scene(mini_redwood)
    log.write_text("\n".join(lines) + "\n")
    (mini_redwood / "depth" / "00002.png").unlink()
    with pytest.raises(InputError, match=r"00002\.png.*colour .* but no depth"):
        load_scene(mini_redwood)
    (mini_redwood / "depth" / "00002.png").symlink_to(mini_redwood / "depth" / "00001.png")
    (mini_redwood / "camera_intrinsic.json").write_text(
        json.dumps({"width": 160, "height": 120, "intrinsic_matrix": [0] * 9})
    )
    with pytest.raises(InputError, match=r"camera_intrinsic\.json.*focal"):
        load_scene(mini_redwood)


@pytest.mark.parametrize(
    "module, function",
    [
        ("scannet.sens", "read_sens"),
        ("images", "read_image_folder"),
        ("images", "read_video"),
        ("colmap", "read_colmap"),
        ("nerfstudio", "read_transforms_json"),
        ("redwood", "read_redwood"),
    ],
)
def test_every_reader_names_a_missing_path(module, function, tmp_path):
    import importlib

    read = getattr(importlib.import_module(f"lift3d.recon.{module}"), function)
    with pytest.raises(InputError, match=r"nope.*not found"):
        read(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# format detection


def test_every_format_is_detected_from_the_folder(
    shared_data, sens_file, video_file, synthetic_scene_dir, tmp_path
):
    from lift3d.recon.detect import detect_format

    _transforms_from(synthetic_scene_dir, tmp_path / "ns", depth=False)
    assert detect_format(sens_file) == "sens"
    assert detect_format(video_file) == "video"
    assert detect_format(shared_data / "davis" / "JPEGImages" / "480p" / "blackswan") == "images"
    assert detect_format(shared_data / "colmap" / "cake") == "colmap"
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    assert detect_format(tmp_path / "ns" / "transforms.json") == "nerfstudio"
    assert detect_format(shared_data / "icl_livingroom1") == "redwood"
    assert detect_format(shared_data / "photos" / "nle_tower") == "images"
    assert load_scene(tmp_path / "ns" / "transforms.json").kind == "nerfstudio"


def test_colmap_model_folder_is_detected_directly(shared_data):
    """Users often point at the model folder itself (sparse/0), not at the scene above it."""
    from lift3d.recon import load_scene
    from lift3d.recon.detect import detect_format

    model = shared_data / "colmap" / "cake" / "sparse"
    if (model / "0").is_dir():
        model = model / "0"
    assert detect_format(model) == "colmap"
    scene = load_scene(model)
    assert scene.kind == "colmap" and len(scene) == 8


def test_frame_range_is_a_slice_or_one_index():
    from lift3d.errors import InputError
    from lift3d.recon.scene import parse_frame_range

    assert parse_frame_range("1:8:2", 10) == [1, 3, 5, 7]
    assert parse_frame_range("::4", 10) == [0, 4, 8]
    assert parse_frame_range("3", 10) == [3]  # one frame, not frames 3..9
    assert parse_frame_range("-1", 10) == [9]
    for bad, why in (("10", "0..9"), ("a", "integers"), ("1:2:0", "positive"), ("1:2:3:4", "e.g.")):
        with pytest.raises(InputError, match=why):
            parse_frame_range(bad, 10)
