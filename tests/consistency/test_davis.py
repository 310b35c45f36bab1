"""DAVIS protocols: J, F (the boundary definition), the paper's protocol, the sequence variant, consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.consistency.davis import (
    _davis_f_reference,
    _paper_protocol_reference,
    _seg2bmap,
    consecutive_consistency,
    davis_f,
    davis_j,
    db_statistics,
    list_davis_sequences,
    paper_protocol,
    read_davis_sequence,
    sequence_protocol,
)
from lift3d.errors import InputError

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis"


def _square(size: int, top: int, left: int, k: int, shape=(20, 20)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + k, left : left + k] = True
    return m


def test_j_hand_values():
    a = _square(20, 2, 2, 10)
    b = _square(20, 2, 7, 10)  # 5 columns overlap: 50 / 150
    assert davis_j(a, b) == pytest.approx(1 / 3)
    assert davis_j(a, a) == 1.0
    assert davis_j(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0  # both empty, as DAVIS
    assert davis_j(a, np.zeros_like(a)) == 0.0


def test_boundary_map_is_a_ring_of_4k_pixels():
    # seg2bmap: k x k square -> last row and column inside (2k - 1) + the row above and the
    # column left of it, outside (2k + 1): boundaries sit half a pixel towards the origin
    b = _seg2bmap(_square(20, 5, 6, 4))
    assert b.sum() == 16
    assert b[4, 5:10].all() and b[5:9, 5].all() and b[8, 6:10].all() and b[5:9, 9].all()


def test_f_follows_the_boundary_definition():
    a = _square(20, 4, 4, 10)
    # 20 x 20: bound_pix = ceil(0.008 * 28.3) = 1, so a one-pixel shift is within tolerance
    assert davis_f(a, np.roll(a, 1, axis=1)) == 1.0
    assert davis_f(a, np.roll(a, 1, axis=0)) == 1.0
    # two pixels away: no boundary pixel of the one lies within 1 pixel of the other's on the
    # shifted sides, but the rings still touch on the top and bottom rows
    two = davis_f(a, np.roll(a, 2, axis=1))
    assert 0 < two < 1
    # far apart: F = 0
    assert davis_f(_square(20, 0, 0, 4), _square(20, 12, 12, 4)) == 0.0
    # the prediction misses a distant blob of the GT: precision 1, recall 40 / (40 + 16)
    gt = _square(20, 1, 1, 10) | _square(20, 14, 14, 4)
    assert davis_f(_square(20, 1, 1, 10), gt) == pytest.approx(5 / 6)
    # empty boundaries: both empty 1, one empty 0
    empty = np.zeros((20, 20), bool)
    assert davis_f(empty, empty) == 1.0 and davis_f(a, empty) == 0.0 and davis_f(empty, a) == 0.0


def test_f_tolerance_grows_with_the_image_diagonal():
    # 300 x 400: diagonal 500, bound_pix = ceil(4.0) = 4: a 4-pixel shift still scores 1, 6 does not
    a = _square(0, 100, 100, 80, shape=(300, 400))
    assert davis_f(a, np.roll(a, 4, axis=1)) == 1.0
    assert davis_f(a, np.roll(a, 6, axis=1)) < 1.0
    assert davis_f(a, np.roll(a, 6, axis=1), bound_th=6) == 1.0  # >= 1: pixels


@pytest.mark.parametrize("seed", range(4))
def test_f_matches_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import binary_opening

    a = binary_opening(rng.random((40, 56)) < 0.5)
    b = binary_opening(rng.random((40, 56)) < 0.5)
    for th in (0.008, 0.05, 3):
        assert davis_f(a, b, bound_th=th) == pytest.approx(_davis_f_reference(a, b, bound_th=th))


def test_db_statistics_hand_values():
    mean, recall, decay = db_statistics(np.array([1.0, 1.0, 0.0, 0.0]))
    # bins of 4 frames: [0:2], [1:3], [2:3], [2:4] -> decay = mean(1, 1) - mean(0, 0)
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)


def test_paper_protocol_hand_values():
    gt = np.zeros((1, 20, 20), bool)
    gt[0, 2:12, 2:7] = True  # 50 pixels
    labels = np.zeros((1, 20, 20), np.int32)
    labels[0, 2:12, 2:12] = 3  # 100 pixels holding the GT: IoU 0.5, P 0.5, R 1, F1 2/3
    labels[0, 15:18, 15:18] = 7  # disjoint: IoU 0
    out = paper_protocol(labels, gt)
    assert out["ids"] == [3]
    assert out["iou"] == pytest.approx(0.5) and out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(1.0) and out["f1"] == pytest.approx(2 / 3)


def test_paper_protocol_no_prediction_and_empty_gt():
    gt = np.zeros((2, 8, 8), bool)
    gt[0, 2:4, 2:4] = True
    out = paper_protocol(np.zeros((2, 8, 8), np.int32), gt)
    # frame 0: nothing predicted -> 0; frame 1: both empty -> 1
    assert out["per_frame_iou"] == [0.0, 1.0] and out["iou"] == 0.5 and out["ids"] == [0, 0]


def test_paper_protocol_matches_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (4, 24, 32))
    gt = rng.random((4, 24, 32)) < 0.3
    fast = paper_protocol(labels, gt)
    ref = _paper_protocol_reference(labels, gt)
    for key in ("iou", "f1", "precision", "recall"):
        assert fast[key] == pytest.approx(ref[key])


def _moving_sequence():
    """3 frames; the object moves right. ID 1 follows it (IoU 0.8 each frame), ID 2 is the exact
    object on frame 0 only, ID 5 is background."""
    gt = np.zeros((3, 20, 30), bool)
    labels = np.zeros((3, 20, 30), np.int32)
    labels[:, 15:, :] = 5
    for t in range(3):
        gt[t, 4:14, 4 + 5 * t : 14 + 5 * t] = True
        labels[t, 4:12, 4 + 5 * t : 14 + 5 * t] = 1  # 80 of the 100 GT pixels
    labels[0][gt[0]] = 2
    return labels, gt


def test_sequence_protocol_picks_the_consistent_id():
    labels, gt = _moving_sequence()
    assert paper_protocol(labels, gt)["ids"] == [2, 1, 1]
    out = sequence_protocol(labels, gt)
    assert out["id"] == 1
    assert out["per_frame_J"] == pytest.approx([0.0, 0.8, 0.8])  # frame 0: ID 1 was relabeled 2
    assert out["J"] == pytest.approx(1.6 / 3)
    assert out["J_recall"] == pytest.approx(2 / 3)
    assert out["per_frame_F"][0] == 0.0 and 0 < out["F"] < 1
    assert out["JF"] == pytest.approx((out["J"] + out["F"]) / 2)
    assert sequence_protocol(labels, gt, select="JF")["id"] == 1


def test_sequence_protocol_without_predictions():
    gt = np.zeros((2, 8, 8), bool)
    gt[:, 2:5, 2:5] = True
    out = sequence_protocol(np.zeros((2, 8, 8), np.int32), gt)
    assert out["id"] == 0 and out["J"] == 0.0 and out["F"] == 0.0


def test_consecutive_consistency_hand_values():
    labels = np.zeros((3, 4, 4), np.int32)
    labels[0] = 1
    labels[1, :, :2] = 1
    labels[1, :, 2:] = 2
    labels[2, :, :2] = 2  # the right half of frame 2 is unlabeled
    uv = np.array([[0, 0], [3, 0], [1, 2], [3, 3]], np.float32)
    conf = np.ones(4, np.float32)
    # frame 0 -> 1: ids 1 vs (1, 2, 1, 2) -> 2 of 4 agree; frame 1 -> 2 (u + 0.4 rounds to u):
    # (1, 2, 1, 2) vs (2, unlabeled, 2, unlabeled) -> 0 of 2 labeled pairs agree
    score = consecutive_consistency(labels, [(uv, uv, conf), (uv, uv + [0.4, 0.0], conf)])
    assert score == pytest.approx(2 / 6)
    # matches leaving the frame are dropped
    out = np.array([[0, 0], [9, 9]], np.float32)
    assert consecutive_consistency(labels[:2], [(out, out, np.ones(2))]) == 1.0
    assert np.isnan(consecutive_consistency(np.zeros((2, 4, 4), np.int32), [(uv, uv, conf)]))


def test_bad_input():
    with pytest.raises(InputError, match="one shape"):
        davis_j(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="one shape"):
        davis_f(np.zeros((4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match="integer"):
        paper_protocol(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), bool))
    with pytest.raises(InputError, match=r"\[N, H, W\]"):
        sequence_protocol(np.zeros((2, 4, 4), np.int32), np.zeros((3, 4, 4), bool))
    with pytest.raises(InputError, match="select"):
        sequence_protocol(np.zeros((2, 4, 4), np.int32), np.zeros((2, 4, 4), bool), select="X")
    with pytest.raises(InputError, match="expected 2 match sets"):
        consecutive_consistency(np.zeros((3, 4, 4), np.int32), [])


def _write_davis(root: Path, seq: str, masks: list[np.ndarray], *, palette: bool) -> None:
    (root / "Annotations" / "480p" / seq).mkdir(parents=True)
    (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
    for i, m in enumerate(masks):
        if palette:
            im = Image.fromarray(m.astype(np.uint8), mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        else:
            im = Image.fromarray((m * 255).astype(np.uint8))
        im.save(root / "Annotations" / "480p" / seq / f"{i:05d}.png")
        Image.fromarray(np.zeros((*m.shape, 3), np.uint8)).save(
            root / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg"
        )


@pytest.mark.parametrize("palette", [False, True])
def test_read_davis_sequence_synthetic(tmp_path, palette):
    masks = [_square(0, 1, 1, 3, shape=(6, 8)), _square(0, 2, 2, 3, shape=(6, 8))]
    _write_davis(tmp_path, "toy", masks, palette=palette)
    frames, gt = read_davis_sequence(tmp_path, "toy")
    assert [f.name for f in frames] == ["00000.jpg", "00001.jpg"]
    assert gt.shape == (2, 6, 8) and gt.dtype == bool
    np.testing.assert_array_equal(gt, np.stack(masks))
    assert list_davis_sequences(tmp_path) == ["toy"]


def test_read_davis_sequence_bad_input(tmp_path):
    with pytest.raises(InputError, match="DAVIS root not found"):
        read_davis_sequence(tmp_path / "nope", "toy")
    _write_davis(tmp_path, "toy", [np.zeros((6, 8), bool), np.zeros((6, 8), bool)], palette=False)
    with pytest.raises(InputError, match="no annotations for sequence 'other'"):
        read_davis_sequence(tmp_path, "other")
    (tmp_path / "JPEGImages" / "480p" / "toy" / "00001.jpg").unlink()
    with pytest.raises(InputError, match="00001.png not found") as err:
        read_davis_sequence(tmp_path, "toy")
    assert err.value.path.name == "00001.jpg"
    Image.fromarray(np.zeros((7, 8), np.uint8)).save(
        tmp_path / "JPEGImages" / "480p" / "toy" / "00001.jpg"
    )
    Image.fromarray(np.zeros((7, 8), np.uint8)).save(
        tmp_path / "Annotations" / "480p" / "toy" / "00001.png"
    )
    with pytest.raises(InputError, match="8x7"):
        read_davis_sequence(tmp_path, "toy")


def test_read_davis_real_sequence():
    if not DAVIS.is_dir():
        pytest.skip(f"shared data not found at {DAVIS}")
    assert list_davis_sequences(DAVIS) == [
        "blackswan",
        "bmx-trees",
        "breakdance",
        "camel",
        "car-shadow",
        "dance-twirl",
    ]
    frames, gt = read_davis_sequence(DAVIS, "car-shadow")
    assert len(frames) == 40 and gt.shape == (40, 480, 854)
    assert all(f.is_file() for f in frames)
    assert 0.01 < gt.mean() < 0.5
    # the GT scores itself perfectly under every protocol
    small = gt[:3, ::4, ::4]
    assert sequence_protocol(small.astype(np.int32), small)["JF"] == 1.0
    assert paper_protocol(small.astype(np.int32), small)["iou"] == 1.0
