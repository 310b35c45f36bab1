"""The SAM 2 backend's plumbing on a tiny random-weight model (skipped without `sam2`)."""

from __future__ import annotations

import os
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
    monkeypatch.setattr(
        seg.model.image_encoder, "forward", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    pts, lab = np.array([[[30.0, 30.0]]]), np.array([[1]])
    seg.generate(image)
    seg.predict(image, pts, lab)
    seg.predict(image, pts, lab)
    assert len(calls) == 1
    seg.predict(image.copy(), pts, lab)
    assert len(calls) == 2


def test_bad_checkpoints(tmp_path, checkpoints):
    with pytest.raises(
        CheckpointError, match="Hiera width 16, 5 blocks.*Hiera width 24, 5 blocks"
    ) as err:
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


def _upstream_predict(seg, image, points, labels, *, multimask: bool):
    """sam2's own `SAM2ImagePredictor.predict` on the same model: the best mask and score."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(seg.model)
    predictor._bb_feat_sizes = seg.predictor._bb_feat_sizes  # sam2 hard-codes those of 1024 px
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(points, labels, multimask_output=multimask)
    best = int(scores.argmax())
    return masks[best].astype(bool), float(np.clip(scores[best], 0, 1))


def test_prompt_sets_are_upstreams_masks_whatever_their_batch(seg, image):
    points = np.random.default_rng(1).uniform([0, 0], [99, 71], (5, 5, 2))
    labels = np.ones((5, 5), int)
    labels[1, 1:] = -1  # 1 real point: multimask, as SAM 2 does for a single point
    labels[2, 3:] = -1
    labels[3, 1] = 0
    out = seg.predict(image, points, labels)
    for b in range(5):
        keep = labels[b] >= 0
        mask, score = _upstream_predict(
            seg, image, points[b][keep], labels[b][keep], multimask=keep.sum() <= 1
        )
        np.testing.assert_array_equal(out.masks[b], mask)
        assert out.scores[b] == pytest.approx(score, abs=1e-6)
        alone = seg.predict(image, points[b : b + 1], labels[b : b + 1])
        np.testing.assert_array_equal(alone.masks[0], out.masks[b])
    assert seg.describe()["multimask_max_points"] == 1


def _connected_components(mask):
    """A pure-torch/scipy stand-in for sam2's CUDA `get_connected_components` (8-connectivity):
    labels and the area of each pixel's component, 0 on background."""
    from scipy import ndimage

    m = mask.to(torch.bool).cpu().numpy()
    labels = np.zeros(m.shape, np.int32)
    areas = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, n = ndimage.label(m[i, 0], structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        labels[i, 0], areas[i, 0] = lab, sizes[lab]
    return torch.from_numpy(labels), torch.from_numpy(areas)


def test_generator_keeps_its_hole_and_sprinkle_cleanup(checkpoints, image, monkeypatch):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils import misc

    # sam2 without its CUDA extension skips the clean-up with a warning: run it on CPU here
    monkeypatch.setattr(misc, "get_connected_components", _connected_components)
    amg = Sam2AutoConfig(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_mask_region_area=40
    )
    seg = Sam2Segmenter(checkpoints["tiny"], model=TINY, device="cpu", amg=amg)
    ours = seg.generate(image)

    def upstream():
        generator = SAM2AutomaticMaskGenerator(seg.model, **vars(amg))
        generator.predictor._bb_feat_sizes = seg.predictor._bb_feat_sizes  # as in _upstream_predict
        return generator

    theirs = upstream().generate(image)
    assert len(ours) == len(theirs) >= 1
    np.testing.assert_array_equal(ours.masks, np.stack([r["segmentation"] for r in theirs]))
    # the clean-up did something here (else this test could not fail), and predict does none
    raw = upstream()
    raw.predictor._transforms.max_hole_area = raw.predictor._transforms.max_sprinkle_area = 0
    assert not np.array_equal(
        ours.masks, np.stack([r["segmentation"] for r in raw.generate(image)])
    )
    assert (
        seg.predictor._transforms.max_hole_area == 0
        and seg.predictor._transforms.max_sprinkle_area == 0
    )


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_with_code_is_refused_as_such(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": _RunsCode()}}, path)
    with pytest.raises(
        CheckpointError, match="contains code or objects \\(posix.getcwd\\) that lift3d refuses"
    ) as err:
        Sam2Segmenter(path, model=TINY, device="cpu")
    assert "weights_only" not in str(err.value) and "corrupt" not in str(err.value)


def test_sam2_version():
    assert sam2_version() not in ("", "not installed")


def test_image_features_are_the_image_embedding(seg, image):
    f = seg.image_features(image)
    assert f.ndim == 3 and f.dtype == np.float32 and f.shape[0] == f.shape[1]
    np.testing.assert_allclose(
        f, seg.predictor._features["image_embed"][0].permute(1, 2, 0).float().numpy()
    )
