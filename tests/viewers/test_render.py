"""The numpy point splatter against its per-point reference, and the renders of a run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lift3d.errors import InputError
from lift3d.viewers.palette import label_colors
from lift3d.viewers.render import (
    _render_points_reference,
    birdseye_camera,
    render_points,
    up_direction,
    write_point_renders,
)
from tests.viewers.browser import colour_pixels

K = np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_render_points_matches_reference(radius):
    rng = np.random.default_rng(radius)
    xyz = rng.uniform([-1, -1, -1], [1, 1, 3], (300, 3))  # some behind the camera
    colors = rng.integers(0, 255, (300, 3)).astype(np.uint8)
    T = np.eye(4)
    fast = render_points(xyz, colors, K, T, (32, 24), point_radius_px=radius)
    ref = _render_points_reference(xyz, colors, K, T, (32, 24), point_radius_px=radius)
    assert fast.shape == (24, 32, 3) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, ref)


def test_render_points_nearest_wins_and_pose_is_cam2world():
    # two points on the optical axis of a camera moved to z = -1: the nearer one is drawn
    T = np.eye(4)
    T[2, 3] = -1.0
    xyz = np.array([[0, 0, 2.0], [0, 0, 1.0], [0, 0, -1.5]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    image = render_points(
        xyz,
        colors,
        np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]),
        T,
        (11, 11),
        point_radius_px=0,
    )
    assert image[5, 5].tolist() == [0, 255, 0]
    assert (np.all(image == 255, axis=2)).sum() == 11 * 11 - 1  # the point behind is not drawn


def test_render_points_bad_input():
    xyz, colors = np.zeros((2, 3)), np.zeros((2, 3), np.uint8)
    with pytest.raises(InputError, match="xyz"):
        render_points(np.zeros((2, 2)), colors, K, np.eye(4), (8, 8))
    with pytest.raises(InputError, match="colors"):
        render_points(xyz, np.zeros((2, 3)), K, np.eye(4), (8, 8))
    with pytest.raises(InputError, match="focal"):
        render_points(xyz, colors, np.zeros((3, 3)), np.eye(4), (8, 8))
    with pytest.raises(InputError, match="4x4"):
        render_points(xyz, colors, K, np.eye(3), (8, 8))
    with pytest.raises(InputError, match="size"):
        render_points(xyz, colors, K, np.eye(4), (0, 8))


def test_up_direction_ignores_camera_pitch():
    # cameras round the origin, pitched 30 degrees down, in a z-up world
    poses = []
    for a in np.linspace(0, np.pi, 5):
        position = np.array([2 * np.cos(a), 2 * np.sin(a), 1.2])
        z = -position / np.linalg.norm(position)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        T = np.eye(4)
        T[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
        T[:3, 3] = position
        poses.append(T)
    np.testing.assert_allclose(up_direction(poses), [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(up_direction(poses[:1]), -poses[0][:3, 1])
    np.testing.assert_allclose(up_direction([]), [0, 0, 1])


def test_birdseye_camera_sees_every_point():
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-2, -1, 0], [2, 1, 0.5], (500, 3))
    K, T = birdseye_camera(xyz, np.array([0, 0, 1.0]), (64, 48))
    assert np.allclose(T[:3, 2], [0, 0, -1])  # looking down
    p = (xyz - T[:3, 3]) @ T[:3, :3]
    uv = p[:, :2] / p[:, 2:] * K[0, 0] + K[:2, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 64) & (uv[:, 1] >= 0) & (uv[:, 1] < 48)
    assert inside.mean() > 0.95


def test_write_point_renders(fake_output):
    out = fake_output / "preview" / "renders"
    written = write_point_renders(
        out, fake_output / "points.ply", fake_output / "cameras.json", n_views=4
    )
    assert [p.name for p in written] == ["view_0.png", "view_1.png", "birdseye.png"]
    colours = label_colors(np.array([1, 2, 3]))
    for p in written:
        with Image.open(p) as im:
            assert im.size == (96, 72)
            image = np.asarray(im.convert("RGB"))
        assert (colour_pixels(image, colours, tol=0) > 10).all(), (
            p.name
        )  # every instance, in its colour


def test_write_point_renders_bad_input(fake_output, tmp_path):
    (tmp_path / "bad.ply").write_text("not a ply")
    with pytest.raises(InputError, match="PLY"):
        write_point_renders(tmp_path / "r", tmp_path / "bad.ply", fake_output / "cameras.json")
    (tmp_path / "cameras.json").write_text('{"frames": []}')
    with pytest.raises(InputError, match="size"):
        write_point_renders(tmp_path / "r", fake_output / "points.ply", tmp_path / "cameras.json")
    with pytest.raises(InputError, match="not found"):
        write_point_renders(tmp_path / "r", fake_output / "points.ply", tmp_path / "missing.json")
