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


def test_the_scale_is_red_yellow_green_and_fixed():
    rgb = heatmap_rgb(np.array([-0.5, 0.0, 0.5, 1.0, 2.0]))
    assert [tuple(c) for c in rgb] == [
        (165, 0, 38),
        (165, 0, 38),
        (255, 255, 191),
        (0, 104, 55),
        (0, 104, 55),
    ]
    # another range moves the scale, never a frame's own min and max
    assert tuple(heatmap_rgb(np.array([0.0]), vmin=-1.0)[0]) == (255, 255, 191)
    ramp = heatmap_rgb(np.linspace(0, 1, 101)).astype(int)
    assert (np.diff(ramp[:, 1])[:50] >= 0).all()  # green channel rises from red to yellow
    assert (np.diff(ramp[:, 0])[50:] <= 0).all()  # red channel falls from yellow to green


def test_heatmaps_read_back_exactly_and_overwrite(tmp_path):
    per_pixel = np.random.default_rng(1).random((2, 6, 7)).astype(np.float32)
    per_pixel[0, 0, 0] = np.nan
    write_heatmaps(tmp_path, np.zeros_like(per_pixel), ["f0", "f1"])
    paths = write_heatmaps(tmp_path, per_pixel, ["f0", "f1"])
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(
            np.asarray(Image.open(p).convert("RGB")), heatmap_rgb(per_pixel[i])
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "f1.png"]


def test_heatmaps_of_the_metric(tmp_path):
    from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score

    rng = np.random.default_rng(0)
    pointmaps = rng.random((2, 5, 6, 3)).astype(np.float32)
    valid = rng.random((2, 5, 6)) < 0.8
    labels = rng.integers(0, 3, (2, 5, 6))
    result = consistency_score(
        ArrayFrames(pointmaps, valid, labels), config=MetricConfig(eps=0.3), per_pixel=True
    )
    paths = write_heatmaps(tmp_path, result.per_pixel, ["a", "b"])
    img = np.asarray(Image.open(paths[0]))
    left_out = ~valid[0] | (labels[0] == 0)
    assert (img[left_out] == EXCLUDED_RGB).all() and not (img[~left_out] == EXCLUDED_RGB).all(
        -1
    ).any()


def test_contact_sheet_has_the_frames_and_the_legend(tmp_path):
    from lift3d.viewers.heatmap import write_heatmap_sheet

    per_pixel = np.zeros((20, 30, 40), np.float32)
    per_pixel[:, :, 20:] = 1.0
    per_pixel[3] = np.nan  # a frame without pixels
    path = write_heatmap_sheet(
        tmp_path / "sheet.png", per_pixel, [f"{i:06d}" for i in range(20)], max_frames=6
    )
    img = np.asarray(Image.open(path).convert("RGB"))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert {(165, 0, 38), (0, 104, 55), EXCLUDED_RGB} <= colours
    # 6 frames of 40 px on a 4-column grid: 2 rows of cells, each 30 px of map
    red_rows = np.flatnonzero((img == (165, 0, 38)).all(-1).any(1))
    assert len(red_rows) >= 2 * 30
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(
    "per_pixel,names,match",
    [
        (np.zeros((2, 4), np.float32), ["a", "b"], r"float \[N, H, W\]"),
        (np.zeros((2, 4, 5), np.int32), ["a", "b"], r"float \[N, H, W\]"),
        (np.zeros((2, 4, 5), np.float32), ["a", "a"], "distinct"),
        (None, [], "per_pixel=True"),
    ],
)
def test_bad_maps_are_errors(tmp_path, per_pixel, names, match):
    with pytest.raises(ValueError, match=match):
        write_heatmaps(tmp_path, per_pixel, names)


def test_empty_range_is_an_error():
    with pytest.raises(ValueError, match="vmin < vmax"):
        heatmap_rgb(np.zeros(3), vmin=1.0, vmax=1.0)
