"""Depth rendered from 3D Gaussian splats: the CPU renderer against its reference, simple cases
with known answers, the synthetic scene's ray-cast depth, the frame-fit check, gsplat on CUDA."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lift3d.errors import InputError
from lift3d.recon.splat_depth import (
    _render_depth_numba,
    _render_depth_reference,
    attach_splat_depth,
    render_depth,
    splat_frame_fit,
)

K16 = np.array([[20.0, 0, 8.0], [0, 20.0, 8.0], [0, 0, 1]])  # pixel (8, 8) on the optical axis


def _random_splats(n: int, seed: int, *, z=(2.0, 4.0), scale=(0.02, 0.3)):
    rng = np.random.default_rng(seed)
    means = np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(*z, n)]
    return means, rng.normal(size=(n, 4)), rng.uniform(*scale, (n, 3)), rng.uniform(0.002, 1, n)


def _look_at(eye, target=(0, 0, 3.0)):
    from lift3d.recon.geometry import look_at

    return look_at(eye, target, up=(0, -1.0, 0))


@pytest.mark.parametrize(
    ("n", "size", "seed"), [(1, (16, 16), 0), (40, (48, 32), 1), (120, (37, 29), 2)]
)
def test_cpu_renderer_equals_the_reference(n, size, seed):
    """The tiled numba compositor and the one-splat-at-a-time float64 definition, bit for bit."""
    means, quats, scales, opac = _random_splats(n, seed)
    W, H = size
    K = np.array([[0.9 * W, 0, (W - 1) / 2], [0, 0.9 * W, (H - 1) / 2], [0, 0, 1]])
    for T in (np.eye(4), _look_at((0.8, -0.3, 0.5))):
        d_ref, a_ref = _render_depth_reference(means, quats, scales, opac, K, T, size)
        d, a = _render_depth_numba(means, quats, scales, opac, K, T, size)
        np.testing.assert_allclose(a, a_ref, atol=1e-9)
        covered = a_ref > 1e-6
        np.testing.assert_allclose(d[covered], d_ref[covered], rtol=1e-9)
        assert covered.any()


def test_one_opaque_disc_facing_the_camera_has_its_depth():
    depth, alpha = render_depth(
        [[0, 0, 2.0]], [[1, 0, 0, 0]], [[0.2, 0.2, 0.001]], [0.99], K16, np.eye(4), (16, 16)
    )
    assert depth[8, 8] == pytest.approx(2.0, abs=1e-6) and alpha[8, 8] == pytest.approx(
        0.99, abs=0.01
    )
    assert depth.dtype == np.float32 and depth.shape == (16, 16)


def test_the_front_splat_hides_the_back_one():
    means = [[0, 0, 3.0], [0, 0, 2.0]]  # listed back first: order in the file does not matter
    rest = ([[1, 0, 0, 0]] * 2, [[0.3, 0.3, 0.001]] * 2)
    # opacity 0.9: w_front = 0.9, w_back = 0.1 * 0.9, ED = (0.9 * 2 + 0.09 * 3) / 0.99
    depth, alpha = render_depth(means, *rest, [0.9, 0.9], K16, np.eye(4), (16, 16))
    assert depth[8, 8] == pytest.approx((0.9 * 2 + 0.09 * 3) / 0.99, rel=1e-5)
    assert alpha[8, 8] == pytest.approx(0.99, rel=1e-5)
    # opacity 0.999: the back splat would take T below 1e-4, so gsplat's rule leaves it out
    depth, _ = render_depth(means, *rest, [0.999, 0.999], K16, np.eye(4), (16, 16))
    assert depth[8, 8] == pytest.approx(2.0, abs=1e-6)


def test_faint_pixels_have_no_depth_below_min_alpha():
    args = ([[0, 0, 2.0]], [[1, 0, 0, 0]], [[0.2, 0.2, 0.001]], [0.3], K16, np.eye(4), (16, 16))
    depth, alpha = render_depth(*args)
    assert alpha[8, 8] == pytest.approx(0.3, abs=0.01) and (depth == 0).all()
    depth, _ = render_depth(*args, min_alpha=0.2)
    assert depth[8, 8] == pytest.approx(2.0, abs=1e-6)


def test_splats_behind_the_camera_or_off_image_draw_nothing():
    means = [
        [0, 0, -2.0],
        [50, 0, 2.0],
        [0, 0, 0.005],
    ]  # behind, far off to the side, inside the near plane
    depth, alpha = render_depth(
        means, [[1, 0, 0, 0]] * 3, [[0.2, 0.2, 0.2]] * 3, [0.9] * 3, K16, np.eye(4), (16, 16)
    )
    assert (alpha == 0).all() and (depth == 0).all()


def test_bad_input_is_an_input_error():
    with pytest.raises(InputError, match="quats"):
        render_depth([[0, 0, 2.0]], [[1, 0, 0]], [[0.2, 0.2, 0.2]], [0.9], K16, np.eye(4), (16, 16))
    with pytest.raises(InputError, match="min_alpha"):
        render_depth(
            [[0, 0, 2.0]],
            [[1, 0, 0, 0]],
            [[0.2, 0.2, 0.2]],
            [0.9],
            K16,
            np.eye(4),
            (16, 16),
            min_alpha=2,
        )
    with pytest.raises(InputError, match="backend"):
        render_depth(
            [[0, 0, 2.0]],
            [[1, 0, 0, 0]],
            [[0.2, 0.2, 0.2]],
            [0.9],
            K16,
            np.eye(4),
            (16, 16),
            backend="opengl",
        )
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            render_depth(
                [[0, 0, 2.0]],
                [[1, 0, 0, 0]],
                [[0.2, 0.2, 0.2]],
                [0.9],
                K16,
                np.eye(4),
                (16, 16),
                backend="gsplat",
            )


def _scan_views(splat_scene_dir):
    """The synthetic scan the splat scene was built from (same parameters): K_depth, poses, depths."""
    from PIL import Image

    from lift3d.recon.synthetic import make_synthetic_scene

    scan = make_synthetic_scene(
        splat_scene_dir.parent / "scan" / "scene0999_00", n_frames=8, size=(128, 96)
    )
    K = np.loadtxt(scan / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    for i in range(8):
        yield (
            K,
            np.loadtxt(scan / "pose" / f"{i}.txt"),
            np.asarray(Image.open(scan / "depth" / f"{i}.png")) / 1000.0,
        )


def test_depth_of_the_synthetic_splats_follows_the_ray_cast_surface(splat_scene_dir):
    """Expected depth takes each splat's centre z, so on surfaces seen at an angle the nearer of
    the overlapping splats pull it forward: on this coarse mesh (floor vertices 15 cm apart) about
    1.5% of the depth. Holes and the background stay empty."""
    from lift3d.recon.splats import read_splats

    sp = read_splats(splat_scene_dir / "point_cloud.ply")
    rel, extra = [], []
    for K, T, gt in _scan_views(splat_scene_dir):
        depth, _ = render_depth(
            sp.means, sp.quats, sp.scales, sp.opacities, K, T, (128, 96), backend="numba"
        )
        both = (depth > 0) & (gt > 0)
        assert both.sum() > 0.8 * (gt > 0).sum()
        rel.append(np.abs(depth[both] - gt[both]) / gt[both])
        extra.append(((depth > 0) & (gt == 0)).mean())
    assert np.median(np.concatenate(rel)) < 0.025
    assert max(extra) < 0.01


def test_frame_fit_accepts_own_splats_and_rejects_another_scenes(splat_scene_dir, shared_data):
    from lift3d.recon import load_scene
    from lift3d.recon.splats import read_splats

    own = load_scene(splat_scene_dir)
    assert splat_frame_fit(read_splats(splat_scene_dir / "point_cloud.ply").means, own) > 0.99
    cake = load_scene(shared_data / "colmap" / "cake")
    assert (
        splat_frame_fit(read_splats(shared_data / "splats" / "train-1000.ply").means, cake) < 0.25
    )


def test_attached_depth_gives_pointmaps_and_reprojection(splat_scene_dir):
    from lift3d.recon import load_scene
    from lift3d.recon.splats import read_splats

    scene = load_scene(splat_scene_dir)
    assert not scene.has_depth and scene.match_fn is None
    sp = read_splats(splat_scene_dir / "point_cloud.ply")
    scene = attach_splat_depth(scene, sp.means, sp.quats, sp.scales, sp.opacities, backend="numba")
    assert scene.has_geometry and scene.meta["depth_source"] == "splats"
    f0, f1 = scene[0], scene[1]
    assert f0.valid.mean() > 0.7 and np.isfinite(f0.pointmap[f0.valid]).all()
    uv_i, uv_j, conf = scene.match_frames(f0, f1)
    assert len(uv_i) > 1000 and (conf > 0).all()
    assert scene[0].depth is not None  # cached: the second load does not render again


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat's kernels need CUDA")
def test_gsplat_depth_agrees_with_the_cpu_renderer(splat_scene_dir):
    """Issue 20's bar: median |dz| under 1 mm where both have depth; per-view speed printed."""
    from lift3d.recon.splats import read_splats

    sp = read_splats(splat_scene_dir / "point_cloud.ply")
    errs = []
    for K, T, _ in _scan_views(splat_scene_dir):
        d_cpu, a_cpu = render_depth(
            sp.means, sp.quats, sp.scales, sp.opacities, K, T, (128, 96), backend="numba"
        )
        d_gpu, a_gpu = render_depth(
            sp.means, sp.quats, sp.scales, sp.opacities, K, T, (128, 96), backend="gsplat"
        )
        both = (d_cpu > 0) & (d_gpu > 0)
        assert both.sum() > 0.95 * max((d_cpu > 0).sum(), 1)
        errs.append(np.abs(d_cpu - d_gpu)[both])
        assert np.abs(a_cpu - a_gpu).max() < 1e-2
    assert np.median(np.concatenate(errs)) < 1e-3
    means, quats, scales, opac = _random_splats(200_000, 3, z=(2.0, 8.0), scale=(0.005, 0.03))
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    render_depth(means, quats, scales, opac, K, np.eye(4), (640, 480), backend="gsplat")  # warm-up
    t = time.perf_counter()
    for _ in range(5):
        render_depth(means, quats, scales, opac, K, np.eye(4), (640, 480), backend="gsplat")
    print(
        f"gsplat ED depth, 640x480, 200k splats: {(time.perf_counter() - t) / 5 * 1e3:.1f} ms per view (incl. transfers)"
    )
