"""The SAM backend's plumbing on a tiny random-weight model: loading, shapes, prompts, batching,
embedding reuse, checkpoint errors. Never mask quality (no real weights exist here)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from lift3d.consistency import sam as sam_module  # noqa: E402
from lift3d.consistency.sam import (  # noqa: E402
    SAM_ARCHS,
    SamArch,
    SamAutoConfig,
    SamSegmenter,
    build_sam,
    load_sam,
    sam_version,
)
from lift3d.consistency.segmenter import Segmenter  # noqa: E402
from lift3d.errors import CheckpointError, InputError  # noqa: E402

TINY = SamArch(
    encoder_embed_dim=64,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=256,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
# another tiny SAM: narrower and deeper, so no tensor of one fits the other by accident
OTHER = SamArch(
    encoder_embed_dim=32,
    encoder_depth=3,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(2,),
    image_size=256,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
LOOSE = SamAutoConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sam")
    out = {}
    for name, arch in (("tiny", TINY), ("other", OTHER)):
        torch.manual_seed(0)
        out[name] = root / f"{name}.pth"
        torch.save(build_sam(arch).state_dict(), out[name])
    return out


@pytest.fixture()
def seg(checkpoints) -> SamSegmenter:
    return SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", amg=LOOSE)


@pytest.fixture()
def image() -> np.ndarray:
    # not square, so the longest-side resize and the un-padding are exercised
    return np.random.default_rng(0).integers(0, 256, (72, 100, 3), dtype=np.uint8)


def test_presets_match_segment_anything():
    from segment_anything import sam_model_registry

    for name in ("vit_b", "vit_l", "vit_h"):
        with torch.device("meta"):  # shapes only: no memory, no init
            ref = sam_model_registry[name]().state_dict()
            ours = build_sam(name).state_dict()
        assert ref.keys() == ours.keys()
        assert all(ref[k].shape == ours[k].shape for k in ref), name
        assert sam_module._arch_from_state_dict(ours) == SAM_ARCHS[name]


def test_load_round_trips_the_weights(checkpoints):
    model = load_sam(checkpoints["tiny"], TINY)
    saved = torch.load(checkpoints["tiny"], weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert not model.training
    assert model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


def test_implements_the_segmenter_protocol(seg):
    assert isinstance(seg, Segmenter)
    assert seg.predictor.transform.target_length == 256  # the model's input size, not SAM's 1024


def test_generate_shapes(seg, image):
    m = seg.generate(image)
    assert len(m) >= 1  # thresholds are off, so random weights still give masks
    assert m.masks.shape == (len(m), 72, 100) and m.masks.dtype == bool
    assert m.scores.shape == (len(m),) and m.scores.dtype == np.float32
    assert ((m.scores >= 0) & (m.scores <= 1)).all()


def test_generate_may_find_nothing(checkpoints, image):
    strict = SamAutoConfig(points_per_side=2, pred_iou_thresh=1.0, stability_score_thresh=1.0)
    m = SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", amg=strict).generate(image)
    assert m.masks.shape == (0, 72, 100) and m.scores.shape == (0,)


def test_predict_batches_sets_of_equal_point_count(seg, image, monkeypatch):
    calls = []
    real = seg.model.mask_decoder.forward
    monkeypatch.setattr(
        seg.model.mask_decoder, "forward", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    points = np.array([[[10, 10], [20, 30]], [[50, 40], [0, 0]], [[90, 60], [5, 5]]], float)
    labels = np.array([[1, 1], [1, -1], [1, 0]])
    out = seg.predict(image, points, labels)
    assert out.masks.shape == (3, 72, 100) and out.masks.dtype == bool
    assert out.scores.shape == (3,) and out.scores.dtype == np.float32
    assert len(calls) == 2  # the two 2-point sets together, the 1-point set on its own
    # the same sets one by one give the same masks
    for b in range(3):
        one = seg.predict(image, points[b : b + 1], labels[b : b + 1])
        np.testing.assert_allclose(one.scores[0], out.scores[b], atol=1e-6)
        assert (one.masks[0] == out.masks[b]).mean() > 0.9999


def _upstream(seg, image, points, labels, *, multimask: bool):
    """segment-anything's own `SamPredictor.predict` on the same model: the best mask and score."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(seg.model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(points, labels, multimask_output=multimask)
    best = int(scores.argmax())
    return masks[best], float(np.clip(scores[best], 0, 1))


def _five_point_sets(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform([0, 0], [99, 71], (n, 5, 2))


def test_five_point_set_is_upstreams_single_mask(seg, image):
    points = _five_point_sets(1)
    labels = np.array([[1, 1, 0, 1, 1]])
    out = seg.predict(image, points, labels)
    mask, score = _upstream(seg, image, points[0], labels[0], multimask=False)
    np.testing.assert_array_equal(out.masks[0], mask)
    assert out.scores[0] == pytest.approx(score, abs=1e-6)
    # and not what the best of the 3 multimask candidates would have been
    assert not np.array_equal(
        out.masks[0], _upstream(seg, image, points[0], labels[0], multimask=True)[0]
    )


def test_a_sets_mask_does_not_depend_on_its_batch(seg, image):
    points = _five_point_sets(6)
    labels = np.ones((6, 5), int)
    labels[1, 1:] = -1  # 1 real point
    labels[2, 3:] = -1  # 3
    labels[4, 2] = -1  # 4, the padding in the middle
    out = seg.predict(image, points, labels)
    for b in range(6):
        alone = seg.predict(image, points[b : b + 1], labels[b : b + 1])
        np.testing.assert_array_equal(alone.masks[0], out.masks[b])
        assert alone.scores[0] == out.scores[b]
        keep = labels[b] >= 0
        mask, score = _upstream(
            seg, image, points[b][keep], labels[b][keep], multimask=keep.sum() <= 1
        )
        np.testing.assert_array_equal(out.masks[b], mask)
        assert out.scores[b] == pytest.approx(score, abs=1e-6)


def test_padding_points_would_change_a_mask(seg, image):
    """Why sets are grouped by count: decoded padded, a 1-point set's mask is another one."""
    points = _five_point_sets(2)
    labels = np.ones((2, 5), int)
    labels[0, 1:] = -1
    seg.predictor.embed(image)
    coords = torch.as_tensor(
        seg.predictor.transform.apply_coords(points, (72, 100)), dtype=torch.float32
    )
    padded, _, _ = seg.predictor.predict_torch(
        coords, torch.as_tensor(labels), multimask_output=True
    )
    alone = seg.predict(image, points[:1], labels[:1])
    assert all(not np.array_equal(padded[0, i].numpy(), alone.masks[0]) for i in range(3))


def test_multimask_max_points_is_configurable(checkpoints, image):
    one, five = np.array([[[40.0, 30.0]]]), _five_point_sets(1)
    never = SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", multimask_max_points=0)
    mask, _ = _upstream(never, image, one[0], np.array([1]), multimask=False)
    np.testing.assert_array_equal(never.predict(image, one, np.array([[1]])).masks[0], mask)
    always = SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", multimask_max_points=5)
    mask, _ = _upstream(always, image, five[0], np.ones(5, int), multimask=True)
    np.testing.assert_array_equal(always.predict(image, five, np.ones((1, 5), int)).masks[0], mask)
    assert always.describe()["multimask_max_points"] == 5
    for bad in ({"multimask_max_points": -1}, {"multimask_max_points": 1.5}, {"max_batch": 0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", **bad)


def test_sam1_runs_in_float32_unless_bf16_is_asked(checkpoints):
    seg = SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu")
    assert seg.precision == "fp32" and not seg.autocast
    assert not sam_module._use_bf16("cuda", "fp32") and not sam_module._use_bf16("cuda:1", "fp32")
    assert sam_module._use_bf16("cuda:0", "bf16") and not sam_module._use_bf16("cpu", "bf16")
    assert not SamSegmenter(
        checkpoints["tiny"], model=TINY, device="cpu", precision="bf16"
    ).autocast
    with pytest.raises(InputError, match="precision must be fp32 or bf16"):
        SamSegmenter(checkpoints["tiny"], model=TINY, device="cpu", precision="fp16")


def test_predict_picks_the_best_multimask_output(seg, image):
    points, labels = np.array([[[40.0, 30.0]]]), np.array([[1]])
    out = seg.predict(image, points, labels)
    seg.predictor.embed(image)
    coords = torch.as_tensor(
        seg.predictor.transform.apply_coords(points, (72, 100)), dtype=torch.float32
    )
    masks, iou, _ = seg.predictor.predict_torch(
        coords, torch.as_tensor(labels), multimask_output=True
    )
    best = int(iou[0].argmax())
    assert out.scores[0] == pytest.approx(float(iou[0, best].clamp(0, 1)))
    np.testing.assert_array_equal(out.masks[0], masks[0, best].numpy())


def test_predict_without_real_points_is_empty(seg, image):
    points = np.array([[[-50.0, 10.0], [1e4, 1e4]], [[10.0, 10.0], [np.nan, 3.0]]])
    out = seg.predict(image, points, np.array([[1, 1], [-1, 1]]))
    assert out.masks.shape == (2, 72, 100)
    assert not out.masks.any() and (out.scores == 0).all()


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
    seg.predict(image.copy(), pts, lab)  # another array is another frame
    seg.generate(image.copy())
    assert len(calls) == 3


def test_bad_prompts_and_images(seg, image):
    with pytest.raises(InputError, match="prompts"):
        seg.predict(image, np.zeros((3, 2)), np.ones((3,)))
    with pytest.raises(InputError, match="uint8"):
        seg.generate(image.astype(np.float32))
    with pytest.raises(InputError, match="unknown SAM model"):
        load_sam(Path("x.pth"), "vit_xl")


def test_wrong_size_checkpoint_names_file_and_architectures(checkpoints):
    with pytest.raises(CheckpointError) as err:
        load_sam(checkpoints["other"], TINY)
    msg = str(err.value)
    assert str(checkpoints["other"]) in msg
    assert "ViT width 64, 2 blocks" in msg  # what was expected
    assert "ViT width 32, 3 blocks" in msg  # what the file holds
    assert "image_encoder.pos_embed" in msg


def test_wrong_preset_suggests_the_right_one(checkpoints, monkeypatch):
    monkeypatch.setattr(sam_module, "SAM_ARCHS", {"tiny_a": TINY, "tiny_b": OTHER})
    with pytest.raises(CheckpointError, match="looks like SAM tiny_b .*--sam-model tiny_b"):
        load_sam(checkpoints["other"], "tiny_a")
    with pytest.raises(CheckpointError, match="does not fit a SAM tiny_b state dict"):
        SamSegmenter(checkpoints["tiny"], model="tiny_b", device="cpu")


class _RunsCode:
    """Unpickles to a call of os.getcwd (harmless, but a function call all the same)."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty file"),
        (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        ("truncated 5000", "corrupt or truncated"),
        ("truncated half", "corrupt or truncated"),
        ("not a state dict", "not a state dict of tensors"),
        (
            "numpy inside",
            "contains code or objects \\(numpy\\S*\\) that lift3d refuses to unpickle",
        ),
        (
            "code inside",
            "contains code or objects \\(posix.getcwd\\) that lift3d refuses to unpickle",
        ),
        (
            "pickled code",
            "contains code or objects \\(posix.getcwd\\) that lift3d refuses to unpickle",
        ),
        ("missing", "not found"),
    ],
)
def test_bad_checkpoint_files(tmp_path, checkpoints, content, problem):
    path = tmp_path / "sam.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content.startswith("truncated"):
        data = checkpoints["tiny"].read_bytes()
        path.write_bytes(data[:5000] if content.endswith("5000") else data[: len(data) // 2])
    elif content == "not a state dict":
        torch.save({"epoch": 3}, path)
    elif content == "numpy inside":
        torch.save({"w": np.zeros(3)}, path)
    elif content == "code inside":
        torch.save({"w": _RunsCode()}, path)
    elif content == "pickled code":  # a plain pickle, not a torch zip archive
        path.write_bytes(pickle.dumps({"w": _RunsCode()}, protocol=2))  # torch reads protocol 2
    with pytest.raises(CheckpointError, match=problem) as err:
        SamSegmenter(path, model=TINY, device="cpu")
    assert str(path) in str(err.value) and "expected a SAM" in str(err.value)
    assert (
        "weights_only" not in str(err.value) and err.value.__cause__ is None
    )  # never torch's advice


def test_checkpoint_under_a_model_key_loads(tmp_path, checkpoints):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": torch.load(checkpoints["tiny"], weights_only=True)}, path)
    load_sam(path, TINY)


def test_sam_version():
    assert sam_version() not in ("", "not installed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_paths(checkpoints, image, precision):
    seg = SamSegmenter(
        checkpoints["tiny"], model=TINY, device="auto", amg=LOOSE, precision=precision
    )
    assert seg.device == "cuda" and seg.autocast == (precision == "bf16")
    assert seg.describe()["precision"] == precision
    out = seg.predict(image, np.array([[[30.0, 30.0]]]), np.array([[1]]))
    assert out.masks.shape == (1, 72, 100) and out.scores.dtype == np.float32
    m = seg.generate(image)
    assert m.masks.shape[1:] == (72, 100)


def test_image_features_are_the_embedding_over_the_frame(seg, image):
    f = seg.image_features(image)
    # 100x72 resized to 256x184 of the 256 square: 16 x 12 cells of 16 px (ceil)
    assert f.shape == (12, 16, 32) and f.dtype == np.float32
    full = seg.predictor.features[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(f, full[:12, :16])
