"""3DGS PLY round trips, splat-label weights (reference, gradient trick, gsplat) and splat voting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lift3d.errors import InputError
from lift3d.recon.scene import Frame
from lift3d.recon.splats import REQUIRED_FIELDS, Splats, read_splats
from lift3d.splats import (
    _splat_label_weights_reference,
    lift_to_splats,
    splat_label_weights,
    write_splats,
)


@pytest.fixture(scope="module")
def train_ply(shared_data):
    path = shared_data / "splats/train-1000.ply"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


# --- PLY -------------------------------------------------------------------------------------------


def test_read_standard_3dgs_ply(train_ply):
    splats = read_splats(train_ply)
    assert len(splats) == 1000
    assert splats.means.shape == (1000, 3) and splats.means.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(splats.quats, axis=1), 1, rtol=1e-5)
    assert (splats.scales > 0).all() and splats.scales.shape == (1000, 3)
    assert ((splats.opacities > 0) & (splats.opacities < 1)).all()
    assert (
        splats.colors.shape == (1000, 3) and 0 <= splats.colors.min() and splats.colors.max() <= 1
    )
    assert (
        len(splats.vertex.dtype.names) == 62
    )  # x y z, normals, 3 f_dc, 45 f_rest, opacity, 3 scales, 4 rots
    np.testing.assert_allclose(splats.scales[:, 0], np.exp(splats.vertex["scale_0"]), rtol=1e-6)
    np.testing.assert_allclose(
        splats.opacities, 1 / (1 + np.exp(-splats.vertex["opacity"].astype(np.float64))), rtol=1e-6
    )


def test_round_trip_keeps_every_property_bit_exactly(train_ply, tmp_path):
    from plyfile import PlyData

    splats = read_splats(train_ply)
    original = PlyData.read(str(train_ply))["vertex"]
    label = np.arange(1000, dtype=np.int32) % 7
    conf = np.linspace(0, 1, 1000, dtype=np.float32)
    write_splats(tmp_path / "splats.ply", splats, label, conf)
    written = PlyData.read(str(tmp_path / "splats.ply"))["vertex"]
    names = [p.name for p in original.properties]
    assert [p.name for p in written.properties] == [*names, "label", "confidence"]
    for prop in original.properties:
        assert written.ply_property(prop.name).val_dtype == prop.val_dtype
        assert written.data[prop.name].tobytes() == original.data[prop.name].tobytes(), prop.name
    np.testing.assert_array_equal(written.data["label"], label)
    np.testing.assert_array_equal(written.data["confidence"], conf)
    # labeling a labeled file replaces the two properties instead of adding a second pair
    again = read_splats(tmp_path / "splats.ply")
    write_splats(tmp_path / "again.ply", again, label + 1, conf)
    rewritten = PlyData.read(str(tmp_path / "again.ply"))["vertex"]
    assert [p.name for p in rewritten.properties] == [*names, "label", "confidence"]
    np.testing.assert_array_equal(rewritten.data["label"], label + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.ply", "splats.ply"]


def _write_ply(path, names, n=3):
    from plyfile import PlyData, PlyElement

    data = np.zeros(n, dtype=[(k, "<f4") for k in names])
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


def test_read_splats_bad_files(tmp_path):
    _write_ply(tmp_path / "points.ply", ["x", "y", "z", "opacity"])
    with pytest.raises(
        InputError, match="scale_0, scale_1, scale_2, rot_0, rot_1, rot_2, rot_3"
    ) as err:
        read_splats(tmp_path / "points.ply")
    assert err.value.path == tmp_path / "points.ply"
    (tmp_path / "junk.ply").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(InputError, match="not a readable PLY") as err:
        read_splats(tmp_path / "junk.ply")
    assert err.value.path == tmp_path / "junk.ply"
    with pytest.raises(InputError, match="not found"):
        read_splats(tmp_path / "missing.ply")


def test_minimal_splats_without_colours(tmp_path):
    _write_ply(tmp_path / "min.ply", REQUIRED_FIELDS, n=2)
    splats = read_splats(tmp_path / "min.ply")
    assert splats.sh0 is None and splats.colors is None
    np.testing.assert_array_equal(splats.quats, [[1, 0, 0, 0]] * 2)  # zero quaternions -> identity
    np.testing.assert_allclose(splats.opacities, 0.5)
    with pytest.raises(InputError, match="one value per splat"):
        write_splats(tmp_path / "out.ply", splats, np.zeros(3, np.int32), np.zeros(2, np.float32))
    assert not (tmp_path / "out.ply").exists()


# --- weights ---------------------------------------------------------------------------------------

K = np.array(
    [[20.0, 0, 11.5], [0, 20.0, 8.5], [0, 0, 1]], np.float32
)  # 24x18, centre at (11.5, 8.5)
SIZE = (24, 18)


def _random_scene(n: int, seed: int, *, dense: bool = False):
    """n random splats 2-4 m in front of a camera near the origin; dense: opaque and wide, so
    most pixels run out of transmittance (gsplat's early stop)."""
    rng = np.random.default_rng(seed)
    means = np.c_[rng.uniform(-0.8, 0.8, (n, 2)), rng.uniform(2, 4, n)].astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    scales = rng.uniform(0.03, 0.3, (n, 3)).astype(np.float32) * (3 if dense else 1)
    opacities = rng.uniform(0.8 if dense else 0.1, 1.0, n).astype(np.float32)
    T = np.eye(4, dtype=np.float32)
    T[:3, 3] = rng.uniform(-0.1, 0.1, 3)
    return means, quats, scales, opacities, T


def _per_pixel_labels():
    """Label = pixel index: W[i, p] is then splat i's weight on pixel p alone."""
    return np.arange(SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])


def _ewa_alpha(mean, scale, opacity, u, v):
    """Hand EWA for an isotropic splat at (0, 0, z): 2D variance (f s / z)^2 + gsplat's 0.3 blur."""
    var = (K[0, 0] * scale / mean[2]) ** 2 + 0.3
    cu, cv = K[0, 2] + K[0, 0] * mean[0] / mean[2], K[1, 2] + K[1, 1] * mean[1] / mean[2]
    alpha = np.minimum(0.999, opacity * np.exp(-0.5 * ((u - cu) ** 2 + (v - cv) ** 2) / var))
    return np.where(alpha >= 1 / 255, alpha, 0)


def test_reference_weights_by_hand_front_and_back():
    means = np.array([[0, 0, 2.0], [0, 0, 3.0]], np.float32)
    scales = np.array([[0.1] * 3, [0.2] * 3], np.float32)
    opac = np.array([0.6, 0.9], np.float32)
    quats = np.array([[1, 0, 0, 0]] * 2, np.float32)
    W = _splat_label_weights_reference(
        means, quats, scales, opac, K, np.eye(4), SIZE, _per_pixel_labels(), SIZE[0] * SIZE[1]
    )
    v, u = np.mgrid[0 : SIZE[1], 0 : SIZE[0]].astype(np.float64)
    front = _ewa_alpha(means[0], 0.1, 0.6, u, v)
    back = _ewa_alpha(means[1], 0.2, 0.9, u, v) * (1 - front)
    np.testing.assert_allclose(W[0].numpy().reshape(SIZE[1], SIZE[0]), front, atol=1e-6)
    np.testing.assert_allclose(W[1].numpy().reshape(SIZE[1], SIZE[0]), back, atol=1e-6)
    # the splat listed first but lying behind still composites second
    W_swapped = _splat_label_weights_reference(
        means[::-1].copy(),
        quats,
        scales[::-1].copy(),
        opac[::-1].copy(),
        K,
        np.eye(4),
        SIZE,
        _per_pixel_labels(),
        SIZE[0] * SIZE[1],
    )
    np.testing.assert_allclose(W_swapped.numpy()[::-1], W.numpy(), atol=1e-12)


def test_reference_stops_where_transmittance_runs_out():
    means = np.array([[0, 0, 2.0], [0, 0, 3.0]], np.float32)
    quats = np.array([[1, 0, 0, 0]] * 2, np.float32)
    scales = np.full((2, 3), 5.0, np.float32)  # wide: nearly flat over the image
    W = _splat_label_weights_reference(
        means,
        quats,
        scales,
        np.array([1.0, 0.95], np.float32),
        K,
        np.eye(4),
        SIZE,
        _per_pixel_labels(),
        SIZE[0] * SIZE[1],
    )
    centre = 8 * SIZE[0] + 11  # pixel (11, 8), next to the optical centre
    # front: alpha clamped to 0.999, T left 1e-3; back: would take T to 5e-5 <= 1e-4, so it is left out
    assert W[0, centre] == pytest.approx(0.999, abs=1e-4)
    assert W[1, centre] == 0


@pytest.mark.parametrize(
    ("n", "num_labels", "seed", "dense"),
    [(20, 3, 0, False), (20, 3, 1, False), (50, 5, 2, False), (1, 2, 3, False), (40, 3, 4, True)],
)
def test_gradient_trick_equals_reference(n, num_labels, seed, dense):
    means, quats, scales, opacities, T = _random_scene(n, seed, dense=dense)
    labels = np.random.default_rng(seed).integers(0, num_labels, (SIZE[1], SIZE[0]))
    ref = _splat_label_weights_reference(
        means, quats, scales, opacities, K, T, SIZE, labels, num_labels
    )
    fast = splat_label_weights(
        means, quats, scales, opacities, K, T, SIZE, labels, num_labels, backend="torch"
    )
    assert fast.shape == (n, num_labels) and fast.dtype == torch.float32
    assert ref.sum() > 1.0  # the scene is in view
    torch.testing.assert_close(fast, ref.float(), rtol=1e-5, atol=1e-5)


def test_weights_sum_to_the_rendered_alpha():
    means, quats, scales, opacities, T = _random_scene(30, 4)
    W = _splat_label_weights_reference(
        means, quats, scales, opacities, K, T, SIZE, _per_pixel_labels(), SIZE[0] * SIZE[1]
    )
    coverage = W.sum(0)
    assert float(coverage.max()) <= 1 and float(coverage.max()) > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat's kernels need CUDA")
@pytest.mark.parametrize(("seed", "dense"), [(0, False), (1, False), (2, True)])
def test_gsplat_kernels_equal_reference(seed, dense):
    # float32 kernels against the float64 reference: per-pixel weights agree to ~1e-6; summed over
    # up to 432 pixels, and with a rare pixel near the 1/255 cut flipping, 2e-3 absolute covers it
    means, quats, scales, opacities, T = _random_scene(200, seed, dense=dense)
    labels = np.random.default_rng(seed).integers(0, 4, (SIZE[1], SIZE[0]))
    ref = _splat_label_weights_reference(means, quats, scales, opacities, K, T, SIZE, labels, 4)
    fast = splat_label_weights(
        means, quats, scales, opacities, K, T, SIZE, labels, 4, backend="gsplat"
    )
    torch.testing.assert_close(fast.cpu(), ref.float(), rtol=1e-3, atol=2e-3)


def test_weights_bad_inputs():
    means, quats, scales, opacities, T = _random_scene(3, 0)
    labels = np.zeros((SIZE[1], SIZE[0]), np.int64)
    with pytest.raises(InputError, match="label map is"):
        splat_label_weights(means, quats, scales, opacities, K, T, SIZE, labels.T, 2)
    with pytest.raises(InputError, match="outside"):
        splat_label_weights(means, quats, scales, opacities, K, T, SIZE, labels + 2, 2)
    with pytest.raises(InputError, match="backend"):
        splat_label_weights(
            means, quats, scales, opacities, K, T, SIZE, labels, 2, backend="opengl"
        )
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            splat_label_weights(
                means, quats, scales, opacities, K, T, SIZE, labels, 2, backend="gsplat"
            )


# --- voting onto splats ----------------------------------------------------------------------------


def _splats(means, quats, scales, opacities) -> Splats:
    n = len(means)
    vertex = np.zeros(n, dtype=[(k, "<f4") for k in REQUIRED_FIELDS])
    for k, axis in enumerate("xyz"):
        vertex[axis] = means[:, k]
    for k in range(4):
        vertex[f"rot_{k}"] = quats[:, k]
    for k in range(3):
        vertex[f"scale_{k}"] = np.log(scales[:, k])
    vertex["opacity"] = np.log(opacities / (1 - opacities))
    return Splats(vertex=vertex)


def _view(T, depth: float = 3.0, name: str = "v"):
    return Frame(
        name=name,
        index=0,
        image=np.zeros((SIZE[1], SIZE[0], 3), np.uint8),
        K=K,
        T_world_camera=T,
        depth=np.full((SIZE[1], SIZE[0]), depth, np.float32),
    )


def test_lift_to_splats_exact_weights_follow_the_reference():
    means, quats, scales, opacities, T = _random_scene(25, 5)
    splats = _splats(means, quats, scales, opacities)
    rng = np.random.default_rng(5)
    maps = [rng.integers(0, 4, (SIZE[1], SIZE[0])) for _ in range(2)]
    out = lift_to_splats(
        splats, [_view(T), _view(np.eye(4, dtype=np.float32))], maps, method="torch", device="cpu"
    )
    total = sum(
        _splat_label_weights_reference(
            splats.means, splats.quats, splats.scales, splats.opacities, K, T_, SIZE, m, 4
        ).numpy()
        for T_, m in zip([T, np.eye(4)], maps)
    )[:, 1:]  # unlabeled pixels (column 0) cast no vote
    seen = total.sum(1) > 0
    assert seen.sum() > 10
    np.testing.assert_array_equal(out.label[seen], total[seen].argmax(1) + 1)
    np.testing.assert_allclose(
        out.confidence[seen], total[seen].max(1) / total[seen].sum(1), rtol=1e-4
    )
    assert (out.label[~seen] == 0).all() and out.votes.max() == 2


def test_lift_to_splats_centers_on_cpu():
    # two splats on the optical axis: the front one on the depth surface, the one behind occluded
    means = np.array([[0, 0, 3.0], [0, 0, 5.0]], np.float32)
    splats = _splats(
        means,
        np.array([[1, 0, 0, 0]] * 2, np.float32),
        np.full((2, 3), 0.1, np.float32),
        np.full(2, 0.5, np.float32),
    )
    labels = np.full((SIZE[1], SIZE[0]), 6)
    out = lift_to_splats(splats, [_view(np.eye(4, dtype=np.float32))], [labels], method="centers")
    assert out.label.tolist() == [6, 0] and out.votes.tolist() == [1, 0]
    auto = lift_to_splats(splats, [_view(np.eye(4, dtype=np.float32))], [labels], device="cpu")
    assert auto.label.tolist() == [6, 0]


def test_lift_to_splats_bad_inputs():
    splats = _splats(*_random_scene(2, 0)[:4])
    view = _view(np.eye(4, dtype=np.float32))
    with pytest.raises(InputError, match="method"):
        lift_to_splats(splats, [view], [np.zeros((18, 24), int)], method="nearest")
    with pytest.raises(InputError, match="CUDA"):
        lift_to_splats(splats, [view], [np.zeros((18, 24), int)], method="gsplat", device="cpu")
    with pytest.raises(InputError, match="differ in number"):
        lift_to_splats(
            splats, [view, view], [np.zeros((18, 24), int)], method="torch", device="cpu"
        )
    with pytest.raises(InputError, match="must match"):
        lift_to_splats(splats, [view], [np.zeros((24, 18), int)], method="torch", device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat's kernels need CUDA")
def test_lift_to_splats_gsplat_agrees_with_the_torch_compositor():
    means, quats, scales, opacities, T = _random_scene(60, 6)
    splats = _splats(means, quats, scales, opacities)
    rng = np.random.default_rng(6)
    maps = [rng.integers(0, 5, (SIZE[1], SIZE[0])) for _ in range(2)]
    views = [_view(T), _view(np.eye(4, dtype=np.float32))]
    exact = lift_to_splats(splats, views, maps, method="torch", device="cpu")
    fast = lift_to_splats(splats, views, maps, method="gsplat", device="cuda")
    clear = exact.confidence > 0.6  # near-ties may flip under float32 kernels
    assert clear.sum() > 10
    np.testing.assert_array_equal(fast.label[clear], exact.label[clear])
    np.testing.assert_allclose(fast.confidence, exact.confidence, atol=5e-3)
