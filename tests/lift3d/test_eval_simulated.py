"""`lift3d eval scannet` / `lift3d segment` with masks simulated from ground truth, the new methods."""

from __future__ import annotations

import json
import shutil

import pytest

from lift3d.cli import entrypoint
from lift3d.config import SegmenterConfig
from lift3d.consistency.simulated import SimulatedConfig
from lift3d.evaluation import run_scannet_eval


def test_eval_on_exact_simulated_masks_oracle_and_maskclustering_are_perfect(
    synthetic_scene_dir, tmp_path
):
    res = run_scannet_eval(
        synthetic_scene_dir,
        out=tmp_path,
        methods=("framewise", "maskclustering", "oracle"),
        segmenter=SegmenterConfig(name="simulated", simulated=SimulatedConfig(noise=0.0)),
        verbose=False,
    )
    assert "simulated from ground truth" in res["backends"]["segmenter"]
    assert res["simulated"]["config"]["noise"] == 0.0
    assert (
        res["settings"]["frames"] is None
        and res["settings"]["frames_used"] == res["settings"]["frames_in_scan"]
    )
    per = res["per_method"]
    assert per["oracle"]["ARI"] == pytest.approx(1.0)
    assert per["maskclustering"]["ARI"] == pytest.approx(1.0)
    assert per["framewise"]["ARI"] < 0.5
    assert per["oracle"]["AP50"] == pytest.approx(1.0)


def test_eval_scannet_command_with_noise_and_every_default_method(
    synthetic_scene_dir, tmp_path, capsys
):
    out = tmp_path / "ev"
    argv = [
        "eval",
        "scannet",
        "--scene",
        str(synthetic_scene_dir),
        "--out",
        str(out),
        "--segmenter",
        "simulated",
        "--segmenter.simulated.noise",
        "0.3",
        "--segmenter.simulated.seed",
        "3",
        "--frames",
        "::2",
    ]
    assert entrypoint(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["methods"] == [
        "framewise",
        "sam3d",
        "maskclustering",
        "mastsam-no-unmasked",
        "mastsam",
        "byocl",
        "oracle",
    ]
    assert "stand-in" in res["backends"]["byocl_features"]
    assert (
        res["simulated"]["effective"]["p_split"] == 0.3 and res["simulated"]["config"]["seed"] == 3
    )
    assert res["settings"]["frames_used"] == 4
    printed = capsys.readouterr().out
    assert "simulated from ground truth" in printed and "oracle" in printed
    for m in res["methods"]:
        assert 0.0 <= res["per_method"][m]["AP50"] <= 1.0
    # the oracle is the reference line: no association of these masks does better on ARI
    ari = {m: res["per_method"][m]["ARI"] for m in res["methods"]}
    assert ari["oracle"] >= max(ari.values()) - 1e-9


def test_simulated_without_instance_gt_and_merged_without_its_module_are_one_line_errors(
    synthetic_scene_dir, tmp_path, capsys
):
    scan = tmp_path / "scene0998_00"
    shutil.copytree(synthetic_scene_dir, scan)
    (scan / f"{synthetic_scene_dir.name}.aggregation.json").unlink()
    for p in scan.glob(f"{synthetic_scene_dir.name}*"):
        p.rename(scan / p.name.replace(synthetic_scene_dir.name, scan.name))
    (scan / f"{scan.name}.aggregation.json").unlink(missing_ok=True)
    assert (
        entrypoint(
            [
                "segment",
                "--scene",
                str(scan),
                "--out",
                str(tmp_path / "o"),
                "--segmenter",
                "simulated",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "instance ground truth" in err and "aggregation.json" in err and "Traceback" not in err
    from lift3d.evaluation import merging_available

    if not merging_available():
        argv = [
            "eval",
            "scannet",
            "--scene",
            str(synthetic_scene_dir),
            "--out",
            str(tmp_path / "m"),
            "--methods",
            "mastsam-merged",
        ]
        assert entrypoint(argv) == 2
        assert "lift3d.consistency.merging" in capsys.readouterr().err


def test_segment_with_the_simulated_segmenter_records_it(synthetic_scene_dir, tmp_path):
    out = tmp_path / "seg"
    argv = [
        "segment",
        "--scene",
        str(synthetic_scene_dir),
        "--out",
        str(out),
        "--segmenter",
        "simulated",
        "--segmenter.simulated.noise",
        "0.15",
        "--no-preview",
        "--max-frames",
        "3",
    ]
    assert entrypoint(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert "simulated from ground truth" in run["backends"]["segmenter"]
    assert run["backends"]["effective"]["p_merge"] == pytest.approx(0.075)


def test_eval_davis_accepts_sam2_and_refuses_the_simulation(tmp_path, capsys):
    base = [
        "eval",
        "davis",
        "--root",
        str(tmp_path),
        "--sequences",
        "x",
        "--out",
        str(tmp_path / "o"),
    ]
    assert entrypoint([*base, "--segmenter", "sam2"]) == 2
    assert "--segmenter.sam2.checkpoint" in capsys.readouterr().err
    from lift3d.cli import EvalDavis
    from lift3d.errors import InputError
    from lift3d.evaluation import run_davis_eval

    with pytest.raises(InputError, match="DAVIS has none"):
        run_davis_eval(
            EvalDavis(root=tmp_path, sequences=("x",), segmenter=SegmenterConfig(name="simulated")),
            verbose=False,
        )
