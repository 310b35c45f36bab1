"""The points a run labels: mesh vertices read from a PLY, and pointmaps fused on a voxel grid."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.recon.geometry import backproject
from lift3d.recon.scene import Frame
from lift3d.recon.scene_points import _fuse_pointmaps_reference, fuse_pointmaps, read_mesh_vertices

# --- mesh vertices ---------------------------------------------------------------------------------


def _write_vertex_ply(path, fields: dict[str, tuple[str, np.ndarray]]):
    from plyfile import PlyData, PlyElement

    n = len(next(iter(fields.values()))[1])
    data = np.empty(n, dtype=[(k, t) for k, (t, _) in fields.items()])
    for k, (_, v) in fields.items():
        data[k] = v
    PlyData([PlyElement.describe(data, "vertex")], text=False).write(str(path))


def test_read_mesh_vertices_with_and_without_colours(tmp_path):
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    rgb = np.arange(12, dtype=np.uint8).reshape(4, 3) * 20
    _write_vertex_ply(
        tmp_path / "m.ply",
        {
            "x": ("<f4", xyz[:, 0]),
            "y": ("<f4", xyz[:, 1]),
            "z": ("<f4", xyz[:, 2]),
            "red": ("u1", rgb[:, 0]),
            "green": ("u1", rgb[:, 1]),
            "blue": ("u1", rgb[:, 2]),
            "alpha": ("u1", rgb[:, 0]),
        },
    )
    got_xyz, got_rgb = read_mesh_vertices(tmp_path / "m.ply")
    np.testing.assert_array_equal(got_xyz, xyz)
    np.testing.assert_array_equal(got_rgb, rgb)
    assert got_xyz.dtype == np.float32 and got_rgb.dtype == np.uint8
    _write_vertex_ply(
        tmp_path / "plain.ply",
        {"x": ("<f8", xyz[:, 0]), "y": ("<f8", xyz[:, 1]), "z": ("<f8", xyz[:, 2])},
    )
    got_xyz, got_rgb = read_mesh_vertices(tmp_path / "plain.ply")
    assert got_xyz.dtype == np.float32 and (got_rgb == 128).all() and got_rgb.shape == (4, 3)


def test_read_mesh_vertices_bad_files(tmp_path):
    (tmp_path / "text.ply").write_text("solid cube\nfacet normal 0 0 1\n")
    with pytest.raises(InputError, match="not a readable PLY") as err:
        read_mesh_vertices(tmp_path / "text.ply")
    assert err.value.path == tmp_path / "text.ply"
    with pytest.raises(InputError, match="not found"):
        read_mesh_vertices(tmp_path / "missing.ply")
    _write_vertex_ply(tmp_path / "flat.ply", {"x": ("<f4", np.zeros(3)), "y": ("<f4", np.zeros(3))})
    with pytest.raises(InputError, match="missing: z"):
        read_mesh_vertices(tmp_path / "flat.ply")


def test_read_scannet_mesh(shared_data):
    xyz, rgb = read_mesh_vertices(shared_data / "scannet/scene0000_00/scene0000_00_vh_clean_2.ply")
    assert xyz.shape == (81369, 3) and rgb.shape == (81369, 3)
    assert np.isfinite(xyz).all() and rgb.std() > 10


# --- fused pointmaps -------------------------------------------------------------------------------


def _pointmap_frames(n: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        T = np.eye(4, dtype=np.float32)
        T[:3, 3] = rng.uniform(-0.3, 0.3, 3)
        depth = rng.uniform(1, 2, (6, 8)).astype(np.float32)
        depth[rng.random((6, 8)) < 0.2] = 0
        K = np.array([[6.0, 0, 3.5], [0, 6.0, 2.5], [0, 0, 1]], np.float32)
        pointmap, valid = backproject(depth, K, T)
        frames.append(
            Frame(
                name=str(i),
                index=i,
                image=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
                K=K,
                T_world_camera=T,
                depth=depth,
                pointmap=pointmap,
                valid=valid,
            )
        )
    return frames


def test_fuse_pointmaps_matches_reference_whatever_the_chunking():
    frames = _pointmap_frames(5)
    ref_xyz, ref_rgb = _fuse_pointmaps_reference(frames, voxel_size=0.1)
    for chunk in (1, 2, 16):
        xyz, rgb = fuse_pointmaps(iter(frames), voxel_size=0.1, chunk_frames=chunk)
        assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and xyz.shape == ref_xyz.shape
        np.testing.assert_allclose(xyz, ref_xyz, atol=1e-6)
        assert np.abs(rgb.astype(int) - ref_rgb).max() <= 1  # .5 colours may round either way
    n_valid = sum(int(f.valid.sum()) for f in frames)
    assert 0 < len(ref_xyz) < n_valid


def test_fuse_pointmaps_one_point_per_voxel():
    xyz, _ = fuse_pointmaps(_pointmap_frames(3), voxel_size=0.05)
    cells = np.floor(xyz / 0.05).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(xyz)


def test_fuse_pointmaps_bad_inputs():
    frames = _pointmap_frames(1)
    with pytest.raises(InputError, match="voxel_size"):
        fuse_pointmaps(frames, voxel_size=0)
    bare = Frame(name="b", index=0, image=np.zeros((6, 8, 3), np.uint8), K=frames[0].K)
    with pytest.raises(InputError, match="no pointmap"):
        fuse_pointmaps([bare])
    frames[0].valid[:] = False
    with pytest.raises(InputError, match="no valid pointmap point"):
        fuse_pointmaps(frames)
