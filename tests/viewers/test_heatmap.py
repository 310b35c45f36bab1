import numpy as np
import pytest
from PIL import Image

from lift3d.viewers.heatmap import EXCLUDED_RGB, heatmap_rgb, write_heatmaps


def test_colours_follow_the_fixed_scale_and_excluded_pixels_are_grey():
    h = np.array([[0.0, 1.0], [0.5, np.nan]], np.float32)
    rgb = heatmap_rgb(h)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == EXCLUDED_RGB
    low, high = rgb[0, 0].astype(int), rgb[0, 1].astype(int)
    assert low[0] > low[1]  # inconsistent: red
    assert high[1] > high[0]  # consistent: green
    # the same value gives the same colour in any map
    assert (heatmap_rgb(np.full((3, 3), 0.5, np.float32)) == rgb[1, 0]).all()


def test_one_png_per_frame(tmp_path):
    per_pixel = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    per_pixel[1, :2] = np.nan
    paths = write_heatmaps(tmp_path / "hm", per_pixel, ["a", "b", "c"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    img = np.asarray(Image.open(paths[1]))
    assert img.shape == (4, 5, 3) and (img[:2] == EXCLUDED_RGB).all()
    assert not list((tmp_path / "hm").glob(".*tmp*"))


def test_frame_count_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="N = 2 frames"):
        write_heatmaps(tmp_path, np.zeros((3, 4, 5), np.float32), ["a", "b"])
