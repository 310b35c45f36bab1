"""The SAM 2 backend's plumbing on a tiny random-weight model (skipped without `sam2`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from lift3d.consistency.sam2 import (  # noqa: E402
    SAM2_ARCHS,
    Sam2Arch,
    Sam2AutoConfig,
    Sam2Segmenter,
    build_sam2,
    load_sam2,
    sam2_version,
)
from lift3d.consistency.segmenter import Segmenter  # noqa: E402
from lift3d.errors import CheckpointError, InputError  # noqa: E402


def _tiny(width: int) -> Sam2Arch:
    """SAM 2.1 Hiera-T's config shrunk: 256 px input, 5 trunk blocks of `width`, one memory layer."""
    return Sam2Arch(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        (
            "++model.image_size=256",
            f"++model.image_encoder.trunk.embed_dim={width}",
            "++model.image_encoder.trunk.stages=[1,1,2,1]",
            "++model.image_encoder.trunk.global_att_blocks=[3]",
            f"++model.image_encoder.neck.backbone_channel_list=[{8 * width},{4 * width},{2 * width},{width}]",
            "++model.memory_attention.num_layers=1",
            "++model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
            "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
        ),
    )


TINY, OTHER = _tiny(16), _tiny(24)
LOOSE = Sam2AutoConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sam2")
    out = {}
    for name, arch in (("tiny", TINY), ("other", OTHER)):
        torch.manual_seed(0)
        out[name] = root / f"{name}.pt"
        torch.save({"model": build_sam2(arch).state_dict()}, out[name])  # Meta's layout
    return out


@pytest.fixture(scope="module")
def seg(checkpoints) -> Sam2Segmenter:
    return Sam2Segmenter(checkpoints["tiny"], model=TINY, device="cpu", amg=LOOSE)


@pytest.fixture()
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (72, 100, 3), dtype=np.uint8)


def test_presets_are_sam2_configs():
    from hydra import compose

    assert len(SAM2_ARCHS) == 8
    for arch in SAM2_ARCHS.values():
        assert compose(config_name=arch.config).model.image_size == 1024


def test_load_round_trips_the_weights(checkpoints):
    model = load_sam2(checkpoints["tiny"], TINY)
    saved = torch.load(checkpoints["tiny"], weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_generate_and_predict_shapes(seg, image):
    assert isinstance(seg, Segmenter)
    m = seg.generate(image)
    assert len(m) >= 1 and m.masks.shape == (len(m), 72, 100) and m.masks.dtype == bool
    assert m.scores.shape == (len(m),) and m.scores.dtype == np.float32
    points = np.array([[[10, 10], [20, 30]], [[50, 40], [0, 0]], [[90, 60], [5, 5]]], float)
    out = seg.predict(image, points, np.array([[1, 1], [1, -1], [1, 0]]))
    assert out.masks.shape == (3, 72, 100) and out.scores.shape == (3,)
    empty = seg.predict(image, np.array([[[-9.0, 0.0]]]), np.array([[1]]))
    assert not empty.masks.any() and empty.scores[0] == 0


def test_embedding_computed_once_per_frame(seg, image, monkeypatch):
    calls = []
    real = seg.model.image_encoder.forward
    monkeypatch.setattr(seg.model.image_encoder, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    pts, lab = np.array([[[30.0, 30.0]]]), np.array([[1]])
    seg.generate(image)
    seg.predict(image, pts, lab)
    seg.predict(image, pts, lab)
    assert len(calls) == 1
    seg.predict(image.copy(), pts, lab)
    assert len(calls) == 2


def test_bad_checkpoints(tmp_path, checkpoints):
    with pytest.raises(CheckpointError, match="Hiera width 16, 5 blocks.*Hiera width 24, 5 blocks") as err:
        load_sam2(checkpoints["other"], TINY)
    assert str(checkpoints["other"]) in str(err.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_sam2(junk, TINY)
    with pytest.raises(CheckpointError, match="not found"):
        Sam2Segmenter(tmp_path / "missing.pt", model=TINY, device="cpu")
    with pytest.raises(InputError, match="unknown SAM 2 model"):
        load_sam2(junk, "sam3")


def test_sam2_version():
    assert sam2_version() not in ("", "not installed")


def test_image_features_are_the_image_embedding(seg, image):
    f = seg.image_features(image)
    assert f.ndim == 3 and f.dtype == np.float32 and f.shape[0] == f.shape[1]
    np.testing.assert_allclose(f, seg.predictor._features["image_embed"][0].permute(1, 2, 0).float().numpy())
