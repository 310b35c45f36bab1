"""`write_heatmap_frames`: the heat-maps of `write_heatmaps`, from maps given a frame at a time."""

import numpy as np
import pytest
from PIL import Image

from lift3d.viewers.heatmap import write_heatmap_frames, write_heatmaps


def test_frames_one_at_a_time_give_the_same_pngs(tmp_path):
    per_pixel = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    per_pixel[2, 1:] = np.nan
    names = ["a", "b", "c"]
    whole = write_heatmaps(tmp_path / "whole", per_pixel, names)
    streamed = write_heatmap_frames(tmp_path / "stream", (m for m in per_pixel), names)
    assert [p.name for p in streamed] == ["a.png", "b.png", "c.png"]
    for p, q in zip(whole, streamed):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))


def test_frame_count_and_shape_must_match_the_names(tmp_path):
    maps = np.zeros((2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="2 maps for 3 frame names"):
        write_heatmap_frames(tmp_path, iter(maps), ["a", "b", "c"])
    with pytest.raises(ValueError, match="more maps than the 1 frame names"):
        write_heatmap_frames(tmp_path, iter(maps), ["a"])
    with pytest.raises(ValueError, match="float \\[H, W\\]"):
        write_heatmap_frames(tmp_path, iter([np.zeros((2, 2), np.int32)]), ["a"])
