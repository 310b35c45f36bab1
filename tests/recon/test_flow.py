"""Optical-flow correspondences: a known translation, real DAVIS frames, the match_fn, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.recon.flow import _bilinear, flow_match_fn, flow_matches
from lift3d.recon.scene import Frame

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis"


def _texture(seed: int = 0, size=(120, 160)) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    coarse = (rng.random((size[0] // 4, size[1] // 4, 3)) * 255).astype(np.uint8)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _shift(image: np.ndarray, du: float, dv: float) -> np.ndarray:
    import cv2

    M = np.float32([[1, 0, du], [0, 1, dv]])
    return cv2.warpAffine(
        image,
        M,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def test_known_translation_is_recovered_within_half_a_pixel():
    image = _texture()
    uv_i, uv_j, conf = flow_matches(image, _shift(image, 3.3, -1.6))
    assert (
        uv_i.shape == uv_j.shape == (len(conf), 2)
        and uv_i.dtype == uv_j.dtype == conf.dtype == np.float32
    )
    assert len(conf) > 0.8 * (120 // 4) * (160 // 4)
    # stride-4 grid of integer pixel centres in image i
    assert np.all(uv_i % 4 == 0)
    # away from the reflected border the shift is known exactly
    inner = (uv_i[:, 0] > 8) & (uv_i[:, 0] < 150) & (uv_i[:, 1] > 8) & (uv_i[:, 1] < 110)
    err = np.abs(uv_j[inner] - uv_i[inner] - np.array([3.3, -1.6]))
    assert np.median(err) < 0.1 and err.max() < 0.5
    assert np.all((conf > 0) & (conf <= 1))


def test_identical_images_match_themselves():
    image = _texture(1, (48, 64))
    uv_i, uv_j, conf = flow_matches(image, image, stride=2)
    assert len(uv_i) == 24 * 32
    np.testing.assert_allclose(uv_j, uv_i, atol=0.05)


def test_forward_backward_check_drops_inconsistent_matches():
    # unrelated images: flow is noise, far fewer matches pass a strict check than a loose one
    a, b = _texture(2), _texture(3)
    strict = len(flow_matches(a, b, fb_thresh=0.25)[0])
    loose = len(flow_matches(a, b, fb_thresh=50.0)[0])
    assert strict < 0.5 * loose


def test_davis_consecutive_frames():
    if not DAVIS.is_dir():
        pytest.skip(f"shared data not found at {DAVIS}")
    import cv2

    from lift3d.recon.files import read_image

    seq = DAVIS / "JPEGImages" / "480p" / "blackswan"
    a, b = (
        cv2.resize(read_image(seq / f"{i:05d}.jpg"), (214, 120), interpolation=cv2.INTER_AREA)
        for i in (0, 1)
    )
    uv_i, uv_j, conf = flow_matches(a, b)
    assert len(uv_i) > 0.7 * (120 // 4) * (214 // 4)
    gray_a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray_b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    ui, vi = uv_i[:, 0].astype(int), uv_i[:, 1].astype(int)
    warped = _bilinear(
        gray_b[..., None], uv_j[:, 0].astype(np.float64), uv_j[:, 1].astype(np.float64)
    )[:, 0]
    # matched pixels look alike; the same pixel positions (no motion) much less so
    matched_err = np.abs(gray_a[vi, ui] - warped).mean()
    static_err = np.abs(gray_a[vi, ui] - gray_b[vi, ui]).mean()
    assert matched_err < 0.6 * static_err


def test_bilinear_matches_opencv_remap():
    import cv2

    rng = np.random.default_rng(0)
    field = rng.random((10, 12, 2)).astype(np.float32)
    u = rng.uniform(0, 11, 50)
    v = rng.uniform(0, 9, 50)
    ref = np.stack(
        [
            cv2.remap(
                field[..., c],
                u.astype(np.float32)[:, None],
                v.astype(np.float32)[:, None],
                cv2.INTER_LINEAR,
            )[:, 0]
            for c in range(2)
        ],
        -1,
    )
    np.testing.assert_allclose(_bilinear(field.astype(np.float64), u, v), ref, atol=1e-3)


def test_flow_match_fn_reads_frame_images():
    image = _texture(4, (48, 64))
    K = np.eye(3, dtype=np.float32)
    fi = Frame(name="0", index=0, image=image, K=K)
    fj = Frame(name="1", index=1, image=_shift(image, 2.0, 0.0), K=K)
    uv_i, uv_j, conf = flow_match_fn(fi, fj)
    assert len(uv_i) > 0
    assert np.median(uv_j[:, 0] - uv_i[:, 0]) == pytest.approx(2.0, abs=0.25)


def test_bad_input():
    image = _texture(0, (48, 64))
    with pytest.raises(InputError, match="differ in size"):
        flow_matches(image, image[:40])
    with pytest.raises(InputError, match="uint8"):
        flow_matches(image.astype(np.float32), image)
    with pytest.raises(InputError, match="stride"):
        flow_matches(image, image, stride=0)
    with pytest.raises(InputError, match="fb_thresh"):
        flow_matches(image, image, fb_thresh=0)
    with pytest.raises(InputError, match="preset"):
        flow_matches(image, image, preset="slow")


def test_cached_flow_matches_computes_each_pair_once(monkeypatch):
    import lift3d.recon.flow as flow
    from lift3d.recon.scene import Frame

    calls = []
    real = flow.flow_matches

    def counted(a, b, **kw):
        calls.append(1)
        return real(a, b, **kw)

    monkeypatch.setattr(flow, "flow_matches", counted)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    frames = [
        Frame(name=str(i), index=i, image=np.roll(image, i, axis=1), K=np.eye(3, dtype=np.float32))
        for i in range(3)
    ]
    provider = flow.CachedFlowMatches(stride=2)
    first = provider(frames[0], frames[1])
    again = provider(frames[0], frames[1])
    provider(frames[1], frames[2])
    assert len(calls) == 2 and again is first
    assert len(first[0]) > 0
