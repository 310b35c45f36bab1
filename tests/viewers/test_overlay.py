"""Stable colours, overlays, contact sheets, the baseline strip and the previews of a run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lift3d.errors import InputError
from lift3d.viewers.overlay import (
    _mask_edges_reference,
    contact_sheet,
    evenly_spaced,
    mask_edges,
    overlay,
    side_by_side,
    write_previews,
)
from lift3d.viewers.palette import _label_color_reference, label_colors, scalar_colors

# palette ------------------------------------------------------------------------------------


def test_label_colors_are_stable_across_calls_shapes_and_dtypes():
    a = label_colors(np.array([[3, 7], [0, 12]], np.int32))
    b = label_colors(np.array([12, 3, 7], np.uint16))
    assert a.shape == (2, 2, 3) and a.dtype == np.uint8
    assert (a[0, 0] == b[1]).all() and (a[0, 1] == b[2]).all() and (a[1, 1] == b[0]).all()
    assert (label_colors(np.array([5]))[0] == label_colors(np.array([5.0]))[0]).all()


def test_label_colors_match_the_colorsys_reference():
    ids = np.arange(0, 600)
    ref = np.array([_label_color_reference(int(k)) for k in ids])
    np.testing.assert_array_equal(label_colors(ids), ref)


def test_label_colors_unlabeled_and_spread():
    assert label_colors(np.array([0]))[0].tolist() == [0, 0, 0]
    assert label_colors(np.array([0]), unlabeled=(1, 2, 3))[0].tolist() == [1, 2, 3]
    c = label_colors(np.arange(1, 21)).astype(float)
    d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(20) * 1e9
    assert d.min() > 40  # any two of the first 20 objects are told apart at a glance


def test_label_colors_bad_input():
    with pytest.raises(ValueError, match="integers"):
        label_colors(np.array([1.5]))


def test_scalar_colors_endpoints_and_nan():
    c = scalar_colors(np.array([0.0, 1.0, np.nan, -3.0, 7.0]))
    assert c.shape == (5, 3) and c.dtype == np.uint8
    assert c[0].tolist() == [68, 1, 84] and c[1].tolist() == [253, 231, 37]
    assert c[2].tolist() == [150, 150, 150]
    assert (c[3] == c[0]).all() and (c[4] == c[1]).all()


# overlay ------------------------------------------------------------------------------------


def test_mask_edges_match_reference_and_exact_case():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 4, (7, 9))
        np.testing.assert_array_equal(mask_edges(labels), _mask_edges_reference(labels))
    labels = np.zeros((5, 5), int)
    labels[1:4, 1:4] = 2
    expected = labels > 0
    expected[2, 2] = False  # the one interior pixel
    np.testing.assert_array_equal(mask_edges(labels), expected)


def test_overlay_blends_colours_and_keeps_unlabeled_pixels():
    image = np.full((6, 8, 3), 100, np.uint8)
    labels = np.zeros((6, 8), np.int32)
    labels[:, 4:] = 9
    out = overlay(image, labels, alpha=0.5, edges=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :4], image[:, :4])
    expected = np.round(0.5 * 100 + 0.5 * label_colors(np.array([9]))[0].astype(float))
    assert (out[:, 4:] == expected.astype(np.uint8)).all()
    full = overlay(image, labels, alpha=1.0, edges=False)
    assert (full[0, 5] == label_colors(np.array([9]))[0]).all()


def test_overlay_draws_white_edges_and_ids():
    image = np.zeros((40, 40, 3), np.uint8)
    labels = np.zeros((40, 40), np.int32)
    labels[10:30, 10:30] = 4
    out = overlay(image, labels, edges=True)
    assert out[10, 20].tolist() == [255, 255, 255] and out[20, 20].tolist() != [255, 255, 255]
    with_ids = overlay(image, labels, edges=False, ids=True)
    plain = overlay(image, labels, edges=False)
    changed = np.any(with_ids != plain, axis=2)
    vs, us = np.nonzero(changed)
    assert (
        changed.any() and 12 <= us.mean() <= 28 and 12 <= vs.mean() <= 28
    )  # the number sits inside


@pytest.mark.parametrize(
    "image, labels, kwargs, match",
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), {}, "RGB"),
        (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4)), {}, "uint8"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)), {}, "like the image"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), {"alpha": 1.5}, "alpha"),
    ],
)
def test_overlay_bad_input(image, labels, kwargs, match):
    with pytest.raises(InputError, match=match):
        overlay(image, labels, **kwargs)


def test_contact_sheet_layout():
    ims = [np.full((10, 20, 3), i * 40, np.uint8) for i in range(5)]
    sheet = contact_sheet(ims, cols=2, pad=4)
    assert sheet.shape == (4 + 3 * (10 + 4), 4 + 2 * (20 + 4), 3)
    assert (sheet[4, 4 + 24] == 40).all() and (sheet[4 + 14, 4] == 80).all()  # row-major order
    captioned = contact_sheet(ims, cols=5, labels=[f"f{i}" for i in range(5)], pad=2)
    assert captioned.shape[0] > 2 + 10 + 2 and captioned.shape[1] == 2 + 5 * 22
    mixed = contact_sheet(
        [np.zeros((10, 20, 3), np.uint8), np.zeros((30, 8, 3), np.uint8)], cols=2, pad=0
    )
    assert mixed.shape == (30, 40, 3)


def test_contact_sheet_bad_input():
    with pytest.raises(InputError, match="at least one"):
        contact_sheet([], cols=2)
    with pytest.raises(InputError, match="labels"):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], cols=1, labels=["a", "b"])
    with pytest.raises(InputError, match="cols"):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], cols=0)


def test_side_by_side_shape_and_columns():
    left = [np.full((10, 16, 3), 10, np.uint8)] * 3
    right = [np.full((10, 16, 3), 200, np.uint8)] * 3
    strip = side_by_side(left, right, pad=4)
    title_h = strip.shape[0] - (4 + 3 * 14)
    assert strip.shape[1] == 4 + 2 * 20 and title_h > 0
    assert (strip[title_h + 4, 4] == 10).all() and (strip[title_h + 4, 24] == 200).all()
    with pytest.raises(InputError, match="as many"):
        side_by_side(left, right[:2])


def test_evenly_spaced():
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(3, 12) == [0, 1, 2]
    assert evenly_spaced(0, 5) == []


# previews of a run --------------------------------------------------------------------------


@pytest.fixture
def synthetic_masks(synthetic_scene_dir, tmp_path):
    """The synthetic scene, and its GT instance maps written as a run's label maps and a
    baseline whose IDs change from frame to frame."""
    from lift3d.io import write_label_map
    from lift3d.recon import load_scene

    scene = load_scene(synthetic_scene_dir)
    out = tmp_path / "out"
    for i, name in enumerate(scene.frame_names):
        gt = np.asarray(Image.open(synthetic_scene_dir / "instance" / f"{name}.png")).astype(
            np.int32
        )
        write_label_map(out / "masks" / f"{name}.png", gt)
        write_label_map(
            out / "baseline" / "masks" / f"{name}.png", np.where(gt > 0, (gt + i) % 7 + 1, 0)
        )
    return scene, out


def test_write_previews_writes_overlays_sheet_and_strip(synthetic_masks):
    scene, out = synthetic_masks
    written = write_previews(
        out, scene, out / "masks", baseline_dir=out / "baseline" / "masks", max_sheet=4, max_strip=3
    )
    preview = out / "preview"
    assert sorted(p.stem for p in (preview / "overlays").iterdir()) == sorted(scene.frame_names)
    with Image.open(preview / "overlays" / f"{scene.frame_names[0]}.jpg") as im:
        assert im.size == scene.size
    assert (preview / "contact_sheet.png") in written and (
        preview / "baseline_vs_mastsam.png"
    ) in written
    with (
        Image.open(preview / "contact_sheet.png") as sheet,
        Image.open(preview / "baseline_vs_mastsam.png") as strip,
    ):
        w, h = scene.size
        assert sheet.width == 4 + 4 * (w + 4)  # 4 frames in one row
        assert strip.width == 4 + 2 * (w + 4) and strip.height > 3 * h
    assert not list(preview.rglob(".*.tmp*"))


def test_write_previews_without_baseline(synthetic_masks):
    scene, out = synthetic_masks
    write_previews(out, scene, out / "masks", baseline_dir=out / "missing")
    assert (out / "preview" / "contact_sheet.png").is_file()
    assert not (out / "preview" / "baseline_vs_mastsam.png").exists()


def test_write_previews_bad_input(synthetic_masks):
    from lift3d.io import write_label_map

    scene, out = synthetic_masks
    name = scene.frame_names[2]
    write_label_map(out / "masks" / f"{name}.png", np.zeros((5, 5), np.int32))
    with pytest.raises(InputError, match="5x5"):
        write_previews(out, scene, out / "masks")
    (out / "masks" / f"{name}.png").unlink()
    with pytest.raises(InputError, match="not found"):
        write_previews(out, scene, out / "masks")
