"""The MASt3R backend: pair graphs, alignment outputs -> Scene, match filtering, install and checkpoint errors.

Everything but the last tests runs without MASt3R. The end-to-end tests run only where `mast3r`
is importable (the user's clone on PYTHONPATH): they build a tiny random-weight model, save it
as MASt3R checkpoints are saved, and run the adapter on three photos of the shared data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lift3d.errors import CheckpointError, InputError, NotInstalledError
from lift3d.recon.geometry import project
from lift3d.recon.mast3r_geometry import (
    Mast3rCrop,
    filter_matches,
    mast3r_crop,
    mast3r_to_working,
    scene_from_alignment,
    working_to_mast3r,
)
from lift3d.recon.mast3r_model import VIT_LARGE_512_CONFIG, model_config, parse_model_string
from lift3d.recon.mast3r_pairs import is_connected, make_pair_graph

KINDS = ("complete", "swin", "logwin", "keyframe", "auto")


# ---------------------------------------------------------------- pair graphs


def _undirected(pairs):
    return {(min(i, j), max(i, j)) for i, j in pairs}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 7, 13, 40])
def test_pair_graph_is_symmetric_connected_and_clean(kind, n):
    pairs = make_pair_graph(n, kind=kind)
    assert len(pairs) == len(set(pairs)), "no duplicate pair"
    assert all(i != j and 0 <= i < n and 0 <= j < n for i, j in pairs)
    assert set(pairs) == {(j, i) for i, j in pairs}, "both directions of every edge"
    assert len(pairs) == 2 * len(_undirected(pairs))
    assert is_connected(n, pairs)


def test_pair_graph_counts():
    assert len(make_pair_graph(5, kind="complete")) == 5 * 4
    # swin-3 on 10 frames: 9 + 8 + 7 edges; cyclic adds the wrap-around ones: 10 * 3
    assert len(make_pair_graph(10, kind="swin", k=3)) == 2 * 24
    assert len(make_pair_graph(10, kind="swin", k=3, cyclic=True)) == 2 * 30
    # logwin-4 on 20 frames: offsets 1, 2, 4, 8 -> 19 + 18 + 16 + 12 edges
    assert len(make_pair_graph(20, kind="logwin", k=4)) == 2 * 65
    assert _undirected(make_pair_graph(4, kind="swin", k=1)) == {(0, 1), (1, 2), (2, 3)}


def test_auto_graph_is_complete_up_to_12_frames_then_logwin():
    assert len(make_pair_graph(12)) == 12 * 11
    assert make_pair_graph(13) == make_pair_graph(13, kind="logwin", k=4)
    for n in (50, 200, 1000):  # linear, not quadratic, beyond 12 frames
        assert len(make_pair_graph(n)) <= 2 * 4 * n


def test_keyframe_graph():
    pairs = _undirected(make_pair_graph(25, kind="keyframe", k=10))
    assert {(i, i + 1) for i in range(24)} <= pairs, "successive frames"
    assert {(0, 10), (0, 20), (10, 20)} <= pairs, "keyframes among themselves"
    assert (13, 10) in {(j, i) for i, j in pairs} and (13, 20) in pairs, (
        "a frame to both neighbouring keyframes"
    )
    assert (3, 13) not in pairs
    assert len(make_pair_graph(2000, kind="keyframe", k=10)) <= 2 * 4 * 2000


def test_pair_graph_small_and_bad_input():
    assert make_pair_graph(0) == [] and make_pair_graph(1) == []
    assert make_pair_graph(2) == [(0, 1), (1, 0)]
    with pytest.raises(InputError, match="unknown pair graph"):
        make_pair_graph(5, kind="retrieval")
    with pytest.raises(InputError, match="positive integer"):
        make_pair_graph(5, kind="swin", k=0)
    with pytest.raises(InputError, match="non-negative"):
        make_pair_graph(-1)


# ---------------------------------------------------------------- crops and coordinates


def test_mast3r_crop_matches_load_images_rules():
    # portrait and landscape photos of the shared set, at the released network size
    assert mast3r_crop((1000, 1334)) == Mast3rCrop(
        resized=(384, 512), offset=(0, 0), size=(384, 512)
    )
    assert mast3r_crop((1334, 1000)) == Mast3rCrop(
        resized=(512, 384), offset=(0, 0), size=(512, 384)
    )
    # 120 is not a multiple of 16: the centre 112 columns are kept
    assert mast3r_crop((120, 160), size=160) == Mast3rCrop(
        resized=(120, 160), offset=(4, 0), size=(112, 160)
    )
    # a square image is cropped to 4:3
    assert mast3r_crop((100, 100), size=64) == Mast3rCrop(
        resized=(64, 64), offset=(0, 8), size=(64, 48)
    )
    # size 224: short side to 224, then a centred square
    assert mast3r_crop((640, 480), size=224) == Mast3rCrop(
        resized=(299, 224), offset=(37, 0), size=(224, 224)
    )
    with pytest.raises(InputError, match="positive"):
        mast3r_crop((0, 10))


def test_coordinates_round_trip_and_crop_offset():
    crop = mast3r_crop((40, 30), size=32)  # resized 32x24, crop rows 4..19
    assert crop == Mast3rCrop(resized=(32, 24), offset=(0, 4), size=(32, 16))
    uv = np.array([[0.0, 0.0], [39.0, 29.0], [12.3, 7.7]])
    np.testing.assert_allclose(
        mast3r_to_working(working_to_mast3r(uv, crop, (40, 30)), crop, (40, 30)), uv, atol=1e-5
    )
    # the network's top-left pixel centre is the resized image's (0, 4): working (0.125, 5.125)
    np.testing.assert_allclose(mast3r_to_working([[0, 0]], crop, (40, 30)), [[0.125, 5.125]])
    assert Mast3rCrop.from_array(crop.as_array()) == crop


# ---------------------------------------------------------------- alignment outputs -> Scene


def _pose(angle: float, t) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = t
    return T


def _backproject_grid(depth, K, T):
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    return (rays * depth[..., None]) @ T[:3, :3].T + T[:3, 3]


def test_scene_from_alignment_fronto_parallel_plane_through_a_crop():
    W, H = 40, 30
    crop = mast3r_crop(
        (W, H), size=32
    )  # network input 32x16 taken from rows 4..19 of a 32x24 resize
    f, pp = 20.0, (15.5, 7.5)
    K_net = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]])
    T = _pose(0.3, [0.5, -0.2, 1.0])
    depth_net = np.full((16, 32), 2.0)
    pts3d = _backproject_grid(depth_net, K_net, T).reshape(-1, 3)
    conf = np.full((16, 32), 3.0)
    image = np.zeros((H, W, 3), np.uint8)
    scene = scene_from_alignment(
        [image], [f], [pp], [T], [pts3d], [conf], crops=[crop], names=["a"]
    )
    assert (
        scene.size == (W, H)
        and len(scene) == 1
        and scene.has_geometry
        and scene.frame_names == ["a"]
    )
    frame = scene[0]
    # scale 40/32 = 30/24 = 1.25 both ways; the principal point moves by the crop offset, then scales
    K_expected = [
        [25.0, 0, (15.5 + 0.5) * 1.25 - 0.5],
        [0, 25.0, (7.5 + 4 + 0.5) * 1.25 - 0.5],
        [0, 0, 1],
    ]
    np.testing.assert_allclose(frame.K, K_expected, atol=1e-5)
    np.testing.assert_allclose(frame.T_world_camera, T, atol=1e-6)
    # rows 5..24 of the working image map inside the 16 network rows (16 / 0.8 = 20 rows)
    assert np.array_equal(np.nonzero(frame.valid.any(axis=1))[0], np.arange(5, 25))
    assert frame.valid[5:25].all()
    np.testing.assert_allclose(frame.depth[frame.valid], 2.0, rtol=1e-6)
    assert np.all(frame.depth[~frame.valid] == 0)
    expected = _backproject_grid(np.full((H, W), 2.0), np.array(K_expected), T)
    np.testing.assert_allclose(frame.pointmap[frame.valid], expected[frame.valid], atol=1e-5)
    assert np.all(frame.pointmap[~frame.valid] == 0)
    np.testing.assert_allclose(frame.conf[frame.valid], 0.75)  # 3 / (1 + 3)
    assert frame.pointmap.dtype == np.float32 and frame.K.dtype == np.float32


def test_scene_from_alignment_tilted_plane_is_exact_and_reprojects_onto_itself():
    W, H = 24, 18
    crop = Mast3rCrop(
        resized=(W, H), offset=(0, 0), size=(W, H)
    )  # the network saw the working image
    f, pp = 30.0, (11.0, 8.5)
    K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]])
    T = _pose(-0.4, [1.0, 0.5, -2.0])
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    depth = 1.5 + 0.05 * u + 0.02 * v  # a tilted plane in the camera frame
    conf = np.full((H, W), 2.0)
    conf[0, :] = 1.2  # below MASt3R's 1.5: invalid
    conf[1, :3] = 0.0  # removed by clean_depth: invalid
    depth[2, 0] = -1.0  # behind the camera: invalid
    pts3d = _backproject_grid(depth, K, T)
    frame = scene_from_alignment(
        [np.zeros((H, W, 3), np.uint8)], [f], [pp], [T], [pts3d], [conf], crops=[crop]
    )[0]
    expected_valid = np.ones((H, W), bool)
    expected_valid[0, :] = False
    expected_valid[1, :3] = False
    expected_valid[2, 0] = False
    assert np.array_equal(frame.valid, expected_valid)
    np.testing.assert_allclose(frame.K, K, atol=1e-5)
    np.testing.assert_allclose(frame.pointmap[expected_valid], pts3d[expected_valid], atol=1e-4)
    np.testing.assert_allclose(frame.depth[expected_valid], depth[expected_valid], atol=1e-5)
    # the contract the lifting's visibility test relies on: a valid pixel's point projects back
    # onto that pixel, at the frame's own depth
    uv, z = project(frame.pointmap[frame.valid], frame.K, frame.T_world_camera)
    vs, us = np.nonzero(frame.valid)
    np.testing.assert_allclose(uv, np.stack([us, vs], axis=-1), atol=1e-3)
    np.testing.assert_allclose(z, frame.depth[frame.valid], atol=1e-5)


def test_scene_from_alignment_anisotropic_working_size():
    # a landscape photo shown in a portrait working frame (the image reader stretches it)
    crop = mast3r_crop((1334, 1000), size=64)  # 64x48 network input, no crop
    assert crop.offset == (0, 0)
    image = np.zeros((64, 48, 3), np.uint8)  # working W=48, H=64
    T = np.eye(4)
    pts = _backproject_grid(
        np.full((48, 64), 3.0), np.array([[50.0, 0, 31.5], [0, 50, 23.5], [0, 0, 1]]), T
    )
    frame = scene_from_alignment(
        [image], [50.0], [(31.5, 23.5)], [T], [pts], [np.full((48, 64), 5.0)], crops=[crop]
    )[0]
    np.testing.assert_allclose(frame.K[0, 0], 50 * 48 / 64, rtol=1e-6)
    np.testing.assert_allclose(frame.K[1, 1], 50 * 64 / 48, rtol=1e-6)
    assert frame.valid.all()
    uv, z = project(frame.pointmap.reshape(-1, 3), frame.K, T)
    np.testing.assert_allclose(z, 3.0, atol=1e-5)


def test_scene_from_alignment_bad_input():
    crop = Mast3rCrop(resized=(8, 6), offset=(0, 0), size=(8, 6))
    img = np.zeros((6, 8, 3), np.uint8)
    T = np.eye(4)
    pts = np.ones((48, 3))
    conf = np.full((6, 8), 2.0)
    with pytest.raises(InputError, match="2 images but 1 focals"):
        scene_from_alignment(
            [img, img], [10.0], [(4, 3)] * 2, [T] * 2, [pts] * 2, [conf] * 2, crops=[crop] * 2
        )
    with pytest.raises(InputError, match="does not fit the network input"):
        scene_from_alignment([img], [10.0], [(4, 3)], [T], [np.ones((47, 3))], [conf], crops=[crop])
    with pytest.raises(InputError, match="one working size"):
        scene_from_alignment(
            [img, np.zeros((7, 8, 3), np.uint8)],
            [10.0] * 2,
            [(4, 3)] * 2,
            [T] * 2,
            [pts] * 2,
            [conf] * 2,
            crops=[crop] * 2,
        )
    with pytest.raises(InputError, match="no frames"):
        scene_from_alignment([], [], [], [], [], [], crops=[])
    bad_T = np.full((4, 4), np.nan)
    scene = scene_from_alignment([img], [10.0], [(4, 3)], [bad_T], [pts], [conf], crops=[crop])
    with pytest.raises(InputError, match="finite 4x4"):
        scene[0]


# ---------------------------------------------------------------- match filtering


def test_filter_matches_exact():
    uv_i = np.array([[5, 5], [0, 4], [5, 5], [5, 5], [9, 7], [4, 3]], np.float64)
    uv_j = np.array([[3, 3], [3, 3], [9, 3], [3, 3], [3, 3], [8, 6]], np.float64)
    conf_i = np.array([4.0, 4.0, 4.0, 0.5, 4.0, 9.0])
    conf_j = np.array([1.0, 4.0, 4.0, 4.0, 4.0, 1.0])
    a, b, c = filter_matches(
        uv_i, uv_j, conf_i, conf_j, min_conf=1.0, size_i=(10, 8), size_j=(10, 8), border=1
    )
    # kept: 0 and 5; 1 touches i's border, 2 touches j's border, 3 has low conf_i, 4 is on i's border
    np.testing.assert_array_equal(a, uv_i[[0, 5]])
    np.testing.assert_array_equal(b, uv_j[[0, 5]])
    # on the shared scale, (c - min_conf) / (1 + c): sqrt(4 * 1) = 2 -> 1/3; sqrt(9 * 1) = 3 -> 1/2
    np.testing.assert_allclose(c, [1 / 3, 1 / 2], rtol=1e-6)
    assert a.dtype == np.float32 and c.dtype == np.float32


def test_match_confidence_is_0_at_the_providers_threshold_as_for_every_provider():
    """`min_match_conf` means the same for MASt3R as for reprojection and flow: 0 at the
    provider's own acceptance limit, 1 for a perfect match."""
    from lift3d.consistency.tracker import MatchTable, TrackerConfig, track_points
    from lift3d.recon.mast3r import DEFAULT_MATCH_MIN_CONF as m

    raw = np.array([m, 1.2, 1.8, 1.9, 1e6])  # MASt3R descriptor confidence, the same on both sides
    uv = np.array([[1.0, 1.0], [3.0, 1.0], [5.0, 1.0], [7.0, 1.0], [9.0, 1.0]])
    a, b, conf = filter_matches(uv, uv, raw, raw, min_conf=m, size_i=(12, 4), size_j=(12, 4))
    assert len(conf) == 5
    np.testing.assert_allclose(conf, (raw - m) / (1 + raw), rtol=1e-6)
    assert conf[0] == 0 and conf[-1] == pytest.approx(1, abs=1e-5) and np.all(np.diff(conf) > 0)
    # with no threshold, the scale is the plain sigmoid c / (1 + c)
    np.testing.assert_allclose(
        filter_matches(uv, uv, raw, raw, min_conf=0, size_i=(12, 4), size_j=(12, 4))[2],
        raw / (1 + raw),
        rtol=1e-6,
    )
    # the tracker's default threshold drops the matches just above MASt3R's own cut (1.2, 1.8:
    # c / (1 + c) would have been 0.55 and 0.64) and keeps those well above it
    table = MatchTable.build(a, b, conf, (12, 4))
    mask = np.ones((4, 12), bool)
    kept, _ = track_points(
        uv.astype(int), mask, table, size=(12, 4), min_conf=TrackerConfig().min_match_conf, radius=0
    )
    np.testing.assert_array_equal(kept, uv[[3, 4]])


def test_filter_matches_shapes_and_bad_input():
    a, b, c = filter_matches(
        np.zeros((0, 2)), np.zeros((0, 2)), [], [], min_conf=1.0, size_i=(4, 4), size_j=(4, 4)
    )
    assert a.shape == (0, 2) and b.shape == (0, 2) and c.shape == (0,)
    with pytest.raises(InputError, match="confidences"):
        filter_matches(
            np.zeros((2, 2)),
            np.zeros((2, 2)),
            [1.0],
            [1.0, 1.0],
            min_conf=1.0,
            size_i=(4, 4),
            size_j=(4, 4),
        )
    with pytest.raises(InputError, match=r"\[M, 2\]"):
        filter_matches(
            np.zeros((2, 3)),
            np.zeros((2, 3)),
            [1, 1],
            [1, 1],
            min_conf=1.0,
            size_i=(4, 4),
            size_j=(4, 4),
        )
    with pytest.raises(InputError, match="min_conf"):
        filter_matches(
            np.zeros((1, 2)), np.zeros((1, 2)), [1], [1], min_conf=-1, size_i=(4, 4), size_j=(4, 4)
        )


# ---------------------------------------------------------------- the alignment call


class _AlignmentSpy:
    """Stands in for MASt3R's `sparse_global_alignment` result to record how it is called (no
    network, no optimisation: the plumbing only; the real one is compared where MASt3R runs)."""

    def __init__(self, sizes):
        import torch

        self.sizes, self.calls, self.torch = sizes, [], torch

    def get_dense_pts3d(self, clean_depth=True, subsample=8):
        self.calls.append({"clean_depth": clean_depth, "subsample": subsample})
        t = self.torch
        n = [w * h for w, h in self.sizes]
        return [t.zeros(k, 3) for k in n], [t.ones(k) for k in n], [t.full((k,), 2.0) for k in n]

    def get_focals(self):
        return self.torch.full((len(self.sizes),), 100.0)

    def get_principal_points(self):
        return self.torch.tensor([[w / 2, h / 2] for w, h in self.sizes])

    def get_im_poses(self):
        return self.torch.eye(4).repeat(len(self.sizes), 1, 1)


@pytest.mark.parametrize("subsample", [4, 8, 16])
def test_dense_depth_is_asked_on_the_alignments_grid(monkeypatch, tmp_path, subsample):
    import types

    pytest.importorskip("torch")
    from lift3d.recon import mast3r as m

    sources = [
        m._Source(name=f"f{i}", path=tmp_path / f"f{i}.png", identity=f"id{i}", size=(40, 30))
        for i in range(2)
    ]
    crops = [m.mast3r_crop(s.size, size=32) for s in sources]
    spy = _AlignmentSpy([c.size for c in crops])
    seen = {}

    def sparse_global_alignment(*args, **kwargs):
        seen.update(kwargs)
        return spy

    fakes = {
        "dust3r.utils.image": {
            "load_images": lambda paths, size, verbose: [
                {"true_shape": np.array([[c.size[1], c.size[0]]])} for c in crops
            ]
        },
        "mast3r.cloud_opt.sparse_ga": {"sparse_global_alignment": sparse_global_alignment},
    }
    for name, attrs in fakes.items():
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            monkeypatch.setitem(
                sys.modules, ".".join(parts[:k]), types.ModuleType(".".join(parts[:k]))
            )
        for key, value in attrs.items():
            setattr(sys.modules[name], key, value)
    opts = m.Mast3rOptions(size=32, subsample=subsample)
    m._run_alignment(
        sources,
        [(0, 1), (1, 0)],
        model=None,
        ga_dir=tmp_path / "ga",
        result_dir=tmp_path / "res",
        opts=opts,
        device="cpu",
    )
    assert seen["subsample"] == subsample
    assert spy.calls == [{"clean_depth": True, "subsample": subsample}]
    assert (tmp_path / "res" / "cameras.npz").is_file()


# ---------------------------------------------------------------- install and checkpoint errors


def _hide_mast3r(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("mast3r", "dust3r")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("mast3r", "dust3r"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import mast3r` raise ImportError


def test_require_mast3r_says_how_to_install_when_absent(monkeypatch):
    from lift3d.recon.mast3r import require_mast3r

    _hide_mast3r(monkeypatch)
    with pytest.raises(NotInstalledError) as err:
        require_mast3r()
    msg = str(err.value)
    assert "git clone --recursive https://github.com/naver/mast3r" in msg
    assert "requirements.txt" in msg and "dust3r/requirements.txt" in msg and "PYTHONPATH" in msg
    assert "\n" not in msg


def test_mast3r_scene_fails_before_any_work(monkeypatch, tmp_path):
    from lift3d.recon.mast3r import mast3r_scene

    def load_frame(i):
        raise AssertionError("no frame may be read")

    from lift3d.recon.scene import Scene

    scene = Scene(
        name="s",
        root=tmp_path,
        frame_names=["a", "b"],
        size=(8, 6),
        load_frame=load_frame,
        kind="images",
    )
    with pytest.raises(CheckpointError, match="not found"):
        mast3r_scene(scene, checkpoint=tmp_path / "missing.pth", cache_dir=tmp_path / "cache")
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"x")
    _hide_mast3r(monkeypatch)
    with pytest.raises(NotInstalledError, match="naver/mast3r"):
        mast3r_scene(scene, checkpoint=ckpt, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


class _NotAllowed:
    pass


def test_load_mast3r_bad_checkpoints(monkeypatch, tmp_path):
    import torch

    from lift3d.recon import mast3r_model

    with pytest.raises(CheckpointError, match="not found"):
        mast3r_model.load_mast3r(tmp_path / "missing.pth")
    monkeypatch.setattr(mast3r_model, "require_mast3r", lambda: None)  # reading needs torch only
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pth: cannot read it as a MASt3R checkpoint"):
        mast3r_model.load_mast3r(corrupt)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "args": _NotAllowed()}, unsafe)
    with pytest.raises(CheckpointError, match="argparse.Namespace only"):
        mast3r_model.load_mast3r(unsafe)
    wrong = tmp_path / "wrong.pth"
    torch.save([1, 2, 3], wrong)
    with pytest.raises(CheckpointError, match="'model' state dict"):
        mast3r_model.load_mast3r(wrong)
    dust3r = tmp_path / "dust3r.pth"
    torch.save(
        {"model": {}, "args": argparse.Namespace(model="AsymmetricCroCo3DStereo(enc_depth=24)")},
        dust3r,
    )
    with pytest.raises(CheckpointError, match="not an AsymmetricMASt3R"):
        mast3r_model.load_mast3r(dust3r)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_with_code_is_refused_as_such(monkeypatch, tmp_path):
    import torch

    from lift3d.recon import mast3r_model

    monkeypatch.setattr(mast3r_model, "require_mast3r", lambda: None)
    for name, obj in (
        ("code", {"model": {}, "args": _RunsCode()}),
        ("object", {"model": {"w": np.zeros(2)}}),
    ):
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="that lift3d refuses to unpickle") as err:
            mast3r_model.load_mast3r(path)
        msg = str(err.value)
        assert (
            str(path) in msg
            and "weights_only" not in msg
            and "truncated" not in msg
            and err.value.__cause__ is None
        )
    assert "(posix.getcwd)" in str(
        pytest.raises(CheckpointError, mast3r_model.load_mast3r, tmp_path / "code.pth").value
    )


def test_only_known_class_names_reach_mast3r():
    for key, known, value in (
        ("patch_embed_cls", "ManyAR_PatchEmbed", "__import__('os').getcwd()"),
        ("head_type", "catmlp+dpt", "catconv:x=__import__('os')"),
    ):
        text = RELEASED_MODEL_STRING.replace(f"{key}={known!r}", f"{key}={value!r}")
        assert text != RELEASED_MODEL_STRING
        with pytest.raises(ValueError, match=f"{key}=.*lift3d builds only"):
            model_config(argparse.Namespace(model=text))
    assert model_config(argparse.Namespace(model=TINY_MODEL_STRING))["head_type"] == "catconv"


# run under python -O, where dust3r's `assert patch_embed_cls in [...]` before its `eval` is gone;
# where MASt3R is not importable, a stand-in for mast3r.model does what dust3r does with the string
_UNDER_O = """
import argparse, sys, types
from pathlib import Path
import torch
from lift3d.errors import CheckpointError, NotInstalledError
from lift3d.recon import mast3r_model

assert sys.flags.optimize == 1
marker, ckpt = Path(sys.argv[1]), Path(sys.argv[2])
try:
    mast3r_model.require_mast3r()
except NotInstalledError:
    class AsymmetricMASt3R(torch.nn.Module):
        def __init__(self, patch_embed_cls, **kwargs):  # dust3r.patch_embed.get_patch_embed
            super().__init__()
            assert patch_embed_cls in ["PatchEmbedDust3R", "ManyAR_PatchEmbed"]
            eval(patch_embed_cls)
    model = types.ModuleType("mast3r.model")
    model.AsymmetricMASt3R = AsymmetricMASt3R
    sys.modules.update({"mast3r": types.ModuleType("mast3r"), "mast3r.model": model})
    mast3r_model.require_mast3r = lambda: None
try:
    mast3r_model.load_mast3r(ckpt)
except CheckpointError as e:
    print("refused:", e)
except Exception as e:
    print("failed:", type(e).__name__)
print("code ran" if marker.exists() else "no code ran")
"""


def test_crafted_checkpoint_runs_no_code_under_python_O(tmp_path):
    import torch

    marker = tmp_path / "marker"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or 'PatchEmbedDust3R'"
    crafted = RELEASED_MODEL_STRING.replace("'ManyAR_PatchEmbed'", repr(payload))
    assert (
        parse_model_string(crafted)[1]["patch_embed_cls"] == payload
    )  # a plain string literal to the parser
    path = tmp_path / "crafted.pth"
    torch.save({"model": {}, "args": argparse.Namespace(model=crafted)}, path)
    out = subprocess.run(
        [sys.executable, "-O", "-c", _UNDER_O, str(marker), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no code ran" in out.stdout and not marker.exists(), out.stdout
    assert (
        "refused:" in out.stdout
        and "patch_embed_cls=" in out.stdout
        and "lift3d builds only" in out.stdout
    )


RELEASED_MODEL_STRING = (
    "AsymmetricMASt3R(enc_depth=24, dec_depth=12, enc_embed_dim=1024, dec_embed_dim=768, enc_num_heads=16, "
    "dec_num_heads=12, pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
    "head_type='catmlp+dpt', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), "
    "conf_mode=('exp', 1, inf), two_confs=True, desc_conf_mode=('exp', 0, inf))"
)


def test_model_string_is_parsed_without_evaluating_it():
    name, kwargs = parse_model_string(RELEASED_MODEL_STRING)
    assert name == "AsymmetricMASt3R" and kwargs == VIT_LARGE_512_CONFIG
    assert model_config(argparse.Namespace(model=RELEASED_MODEL_STRING)) == VIT_LARGE_512_CONFIG
    assert model_config(None) == VIT_LARGE_512_CONFIG  # a bare state dict: the released config
    for evil in (
        "__import__('os').system('true')",
        "AsymmetricMASt3R(x=open('f'))",
        "AsymmetricMASt3R(**k)",
        "AsymmetricMASt3R(1)",
        "AsymmetricMASt3R(x=-'a')",
    ):
        with pytest.raises(ValueError):
            parse_model_string(evil)
    # an unparsable string falls back to the released configuration
    assert model_config(argparse.Namespace(model="AsymmetricMASt3R(x=f())")) == VIT_LARGE_512_CONFIG


def test_import_is_light():
    code = (
        "import sys, lift3d.recon.mast3r, lift3d.recon.mast3r_geometry, lift3d.recon.mast3r_pairs\n"
        "print(' '.join(m for m in ('torch', 'mast3r', 'dust3r', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


# ---------------------------------------------------------------- end to end, where MASt3R is installed

TINY_MODEL_STRING = (
    "AsymmetricMASt3R(enc_depth=1, dec_depth=1, enc_embed_dim=32, dec_embed_dim=32, enc_num_heads=2, "
    "dec_num_heads=2, pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(160, 160), "
    "head_type='catconv', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
    "two_confs=True, desc_conf_mode=('exp', 0, inf))"
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight MASt3R with width 32 and depth 1, saved as the released checkpoints are."""
    pytest.importorskip("mast3r", reason="MASt3R is not importable (put its clone on PYTHONPATH)")
    import torch

    from lift3d.recon.mast3r import require_mast3r

    require_mast3r()
    from mast3r.model import AsymmetricMASt3R

    torch.manual_seed(0)
    _, kwargs = parse_model_string(TINY_MODEL_STRING)
    net = AsymmetricMASt3R(**kwargs)
    for head in (net.downstream_head1, net.downstream_head2):
        last = head.head_pts3d.head[-1]  # channels: x, y, z, confidence
        with torch.no_grad():
            # random heads can predict negative depth, which the alignment rejects: small
            # weights, z bias 1 (depth about e - 1) and confidence bias 1 (exp(1) > 1.5)
            last.weight.mul_(0.05)
            last.bias.zero_()
            last.bias[2] = 1.0
            last.bias[3] = 1.0
    path = tmp_path_factory.mktemp("mast3r") / "tiny_mast3r.pth"
    torch.save(
        {"model": net.state_dict(), "args": argparse.Namespace(model=TINY_MODEL_STRING)}, path
    )
    return path


@pytest.mark.slow
def test_adapter_end_to_end_on_three_photos(tiny_checkpoint, shared_data, tmp_path, monkeypatch):
    from lift3d.recon import mast3r as m

    photos = sorted((shared_data / "photos" / "nle_tower").glob("*.jpg"))[:3]
    if len(photos) < 3:
        pytest.skip("photos/nle_tower not found")
    model = m.load_mast3r(tiny_checkpoint, device="cpu")
    assert type(model).__name__ == "AsymmetricMASt3R" and not model.training
    t0 = time.perf_counter()
    scene = m.reconstruct_mast3r(
        photos,
        checkpoint=tiny_checkpoint,
        cache_dir=tmp_path / "cache",
        size=160,
        niter1=30,
        niter2=30,
        working_size=(120, 160),
    )
    t_align = time.perf_counter() - t0
    frames = list(scene)
    assert len(frames) == 3 and scene.size == (120, 160) and scene.has_geometry
    for f in frames:
        assert f.image.shape == (160, 120, 3) and f.pointmap.shape == (160, 120, 3)
        assert (
            f.valid.mean() > 0.3 and np.all(f.depth[f.valid] > 0) and np.all(f.depth[~f.valid] == 0)
        )
        assert np.all(np.isfinite(f.K)) and f.K[0, 0] > 0 and f.K[1, 1] > 0
        R = f.T_world_camera[:3, :3].astype(np.float64)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-4)
        uv, z = project(f.pointmap[f.valid], f.K, f.T_world_camera)
        vs, us = np.nonzero(f.valid)
        np.testing.assert_allclose(uv, np.stack([us, vs], axis=-1), atol=1e-2)
        np.testing.assert_allclose(z, f.depth[f.valid], rtol=1e-4)
    uv_i, uv_j, conf = scene.matches(0, 1)  # from MASt3R's cache of the alignment's pairs
    assert (
        uv_i.shape == uv_j.shape
        and uv_i.shape[1] == 2
        and conf.shape == (len(uv_i),)
        and len(uv_i) > 0
    )
    assert (
        np.all((conf >= 0) & (conf < 1)) and np.all(uv_j[:, 0] <= 119) and np.all(uv_j[:, 1] <= 159)
    )

    # a rerun reads the cached result and loads no model
    def no_model(*a, **k):
        raise AssertionError("the model was loaded on a cached rerun")

    monkeypatch.setattr(m, "load_mast3r", no_model)
    t0 = time.perf_counter()
    again = m.reconstruct_mast3r(
        photos,
        checkpoint=tiny_checkpoint,
        cache_dir=tmp_path / "cache",
        size=160,
        niter1=30,
        niter2=30,
        working_size=(120, 160),
    )
    np.testing.assert_array_equal(again[2].pointmap, frames[2].pointmap)
    uv2 = again.matches(0, 1)[0]
    t_rerun = time.perf_counter() - t0
    np.testing.assert_array_equal(uv2, uv_i)
    print(
        f"\n[mast3r tiny] 3 photos: align {t_align:.2f} s, cached rerun {t_rerun:.2f} s; "
        f"frames {frames[0].image.shape}, valid {[round(float(f.valid.mean()), 3) for f in frames]}, "
        f"focals {[round(float(f.K[0, 0]), 1) for f in frames]}, matches(0, 1) {len(uv_i)}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("subsample", [4, 8, 16])
def test_dense_depth_is_upstreams_at_any_subsample(
    tiny_checkpoint, shared_data, tmp_path, monkeypatch, subsample
):
    """Our frames' depth is MASt3R's `get_dense_pts3d(subsample=...)` on the alignment's own grid
    (before the fix: 16 crashed with an IndexError, 4 read depth at the wrong pixels)."""
    from mast3r.cloud_opt import sparse_ga

    from lift3d.recon import mast3r as m

    photos = sorted((shared_data / "photos" / "nle_tower").glob("*.jpg"))[:2]
    if len(photos) < 2:
        pytest.skip("photos/nle_tower not found")
    kept = []
    real = sparse_ga.sparse_global_alignment
    monkeypatch.setattr(
        sparse_ga, "sparse_global_alignment", lambda *a, **k: kept.append(real(*a, **k)) or kept[-1]
    )
    scene = m.reconstruct_mast3r(
        photos,
        checkpoint=tiny_checkpoint,
        cache_dir=tmp_path / "cache",
        size=160,
        niter1=10,
        niter2=10,
        working_size=(120, 160),
        options=m.Mast3rOptions(subsample=subsample),
    )
    assert len(list(scene)) == 2 and len(kept) == 1
    _, depthmaps, _ = kept[0].get_dense_pts3d(clean_depth=True, subsample=subsample)
    files = sorted((tmp_path / "cache").rglob("frames/*.npz"))
    assert len(files) == 2
    for f, d in zip(files, depthmaps, strict=True):
        with np.load(f) as data:
            np.testing.assert_array_equal(
                data["depth"].ravel(), d.detach().cpu().numpy().astype(np.float32)
            )


@pytest.mark.slow
def test_matches_prepare_images_like_load_images_and_run_the_model(
    tiny_checkpoint, shared_data, tmp_path
):
    from dust3r.utils.image import load_images

    from lift3d.recon import mast3r as m
    from lift3d.recon.files import read_image
    from lift3d.recon.images import read_image_folder

    photo = sorted((shared_data / "photos" / "nle_tower").glob("*.jpg"))[2]  # the landscape one
    ours, crop = m.prepare_image(read_image(photo), size=160)
    theirs = load_images([str(photo)], size=160, verbose=False)[0]
    assert tuple(theirs["true_shape"][0]) == (crop.size[1], crop.size[0])
    assert float((ours - theirs["img"]).abs().max()) < 1e-6

    scene = read_image_folder(shared_data / "photos" / "nle_tower", size=(60, 80)).subset([0, 1])
    scene = m.attach_mast3r_matches(scene, checkpoint=tiny_checkpoint, size=160, min_conf=0.0)
    uv_i, uv_j, conf = scene.matches(0, 1)
    assert len(uv_i) > 0 and uv_i.dtype == np.float32 and conf.shape == (len(uv_i),)
    assert np.all((uv_i >= 0) & (uv_i <= [59, 79])) and np.all((uv_j >= 0) & (uv_j <= [59, 79]))


def test_checkpoint_of_another_size_is_refused(tiny_checkpoint, tmp_path):
    import torch

    from lift3d.recon.mast3r import load_mast3r

    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    wider = TINY_MODEL_STRING.replace("enc_embed_dim=32", "enc_embed_dim=64")
    path = tmp_path / "mismatch.pth"
    torch.save({"model": state, "args": argparse.Namespace(model=wider)}, path)
    with pytest.raises(CheckpointError, match="do not fit AsymmetricMASt3R"):
        load_mast3r(path)
    partial = tmp_path / "partial.pth"
    torch.save(
        {
            "model": {k: v for k, v in state.items() if "head" not in k},
            "args": argparse.Namespace(model=TINY_MODEL_STRING),
        },
        partial,
    )
    with pytest.raises(CheckpointError, match="missing"):
        load_mast3r(partial)


def test_mast3r_reads_original_photos_and_pngs_of_the_rest(tmp_path):
    from PIL import Image

    from lift3d.recon.images import read_image_folder
    from lift3d.recon.mast3r import _frame_sources

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).save(folder / "a.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: load_images would turn it, lift3d's reader does not
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).save(folder / "b.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).save(
        folder / "c.bmp"
    )  # not read by load_images
    scene = read_image_folder(folder)
    sources = _frame_sources(scene, tmp_path / "cache")
    assert [s.name for s in sources] == ["a", "b", "c"]
    assert sources[0].path == folder / "a.jpg" and sources[0].size == (40, 30)
    for s in sources[1:]:
        assert s.path.parent.parent.parent == tmp_path / "cache" and s.path.suffix == ".png"
        np.testing.assert_array_equal(
            np.asarray(Image.open(s.path)), scene[scene.frame_names.index(s.name)].image
        )
    assert len({s.identity for s in sources}) == 3
    assert [s.identity for s in _frame_sources(scene, tmp_path / "cache")] == [
        s.identity for s in sources
    ]
