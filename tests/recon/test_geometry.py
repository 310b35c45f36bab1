"""Cameras and pointmaps: resizing conventions, back-projection and projection round trips."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.recon.geometry import align_depth, backproject, project, scale_intrinsics


def _camera(W=32, H=24, f=30.0):
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], np.float32)
    T = np.eye(4, dtype=np.float32)
    a = 0.3
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [0.5, -0.2, 1.0]
    return K, T


def test_backproject_then_project_returns_pixel_centres():
    K, T = _camera()
    depth = np.random.default_rng(0).uniform(0.5, 4.0, (24, 32)).astype(np.float32)
    depth[3, 4] = 0  # missing depth
    pm, valid = backproject(depth, K, T)
    assert pm.shape == (24, 32, 3) and pm.dtype == np.float32
    assert not valid[3, 4] and valid.sum() == 24 * 32 - 1
    uv, z = project(pm, K, T)
    v, u = np.mgrid[:24, :32]
    np.testing.assert_allclose(uv[valid][:, 0], u[valid], atol=1e-3)
    np.testing.assert_allclose(uv[valid][:, 1], v[valid], atol=1e-3)
    np.testing.assert_allclose(z[valid], depth[valid], rtol=1e-5)


def test_points_behind_camera_have_negative_z():
    K, T = _camera()
    behind = T[:3, 3] - 2 * T[:3, 2]
    _, z = project(behind[None], K, T)
    assert z[0] < 0


def test_scale_intrinsics_half_pixel_convention():
    K = np.array([[100, 0, 63.5], [0, 100, 47.5], [0, 0, 1]], np.float32)  # centre of 128x96
    K2 = scale_intrinsics(K, (128, 96), (64, 48))
    assert K2[0, 0] == pytest.approx(50) and K2[1, 1] == pytest.approx(50)
    assert K2[0, 2] == pytest.approx(31.5) and K2[1, 2] == pytest.approx(23.5)  # centre of 64x48


def test_align_depth_identity_and_upsampling():
    K, _ = _camera()
    depth = np.arange(24 * 32, dtype=np.float32).reshape(24, 32)
    np.testing.assert_array_equal(align_depth(depth, K, K, (32, 24)), depth)
    K2 = scale_intrinsics(K, (32, 24), (64, 48))
    up = align_depth(depth, K, K2, (64, 48))
    np.testing.assert_array_equal(up[::2, ::2], depth)  # nearest neighbour: no invented values
    assert set(np.unique(up)) <= set(np.unique(depth))
