"""`lift3d.config`: configs all the way down, each segmenter's settings reachable from the CLI, a
recorded run read back, and a `--help` grouped by stage whose sentences are not cut short."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lift3d.cli import entrypoint, parse
from lift3d.config import SegmentConfig, SegmenterConfig, config_to_json
from lift3d.consistency.classical import ClassicalConfig, ClassicalSegmenter
from lift3d.consistency.sam import SamConfig
from lift3d.consistency.tracker import TrackerConfig
from lift3d.runfile import read_run_config

# -- the segmenter's settings, from the command line to the run -----------------------------


def test_classical_settings_from_the_cli_reach_the_segmenter_of_the_run(
    synthetic_scene_dir, tmp_path
):
    argv = [
        "segment",
        "--scene",
        str(synthetic_scene_dir),
        "--segmenter",
        "classical-2d",
        "--segmenter.classical.merge-threshold",
        "15",
    ]
    cmd = parse(argv)[0]
    seg = cmd.segmenter.setup()
    assert isinstance(seg, ClassicalSegmenter) and seg.config.merge_threshold == 15.0
    assert seg.config == ClassicalConfig(merge_threshold=15.0)  # every other setting its default

    out = tmp_path / "o"
    assert entrypoint([*argv, "--out", str(out), "--max-frames", "2", "--no-preview"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["segmenter"]["name"] == "classical-2d"  # the settings of the segmenter that ran
    assert (
        run["segmenter"]["classical"]["merge_threshold"] == 15.0
        and "geometric" not in run["segmenter"]
    )
    assert (
        run["backends"]["config"]["merge_threshold"] == 15.0
    )  # what the segmenter itself says it ran with
    assert (
        run["config"]["segmenter"]["classical"]["merge_threshold"] == 15.0
    )  # and what --config reruns


def test_every_segmenter_has_its_settings_under_its_name():
    cmd = parse(
        [
            "segment",
            "--scene",
            "s",
            "--segmenter.sam.checkpoint",
            "a.pth",
            "--segmenter.sam.amg.points-per-side",
            "8",
            "--segmenter.sam2.model",
            "sam2_hiera_t",
            "--segmenter.geometric.threshold",
            "0.5",
            "--segmenter.simulated.noise",
            "0.3",
        ]
    )[0]
    s = cmd.segmenter
    assert s.name == "auto" and s.sam.checkpoint == Path("a.pth") and s.sam.amg.points_per_side == 8
    assert (
        s.sam2.model == "sam2_hiera_t" and s.geometric.threshold == 0.5 and s.simulated.noise == 0.3
    )


def test_the_old_flat_segmenter_flags_still_work():
    s = parse(
        [
            "segment",
            "--scene",
            "s",
            "--segmenter",
            "sam",
            "--sam-checkpoint",
            "a.pth",
            "--sam-model",
            "vit_b",
        ]
    )[0].segmenter
    assert (s.name, s.sam.checkpoint, s.sam.model) == ("sam", Path("a.pth"), "vit_b")
    # `--sam-checkpoint` named SAM 2's checkpoint too: it goes where the named segmenter reads it
    s = parse(
        [
            "segment",
            "--scene",
            "s",
            "--segmenter",
            "sam2",
            "--sam-checkpoint",
            "b.pt",
            "--sam2-model",
            "sam2_hiera_s",
        ]
    )[0].segmenter
    assert (s.name, s.sam2.checkpoint, s.sam2.model, s.sam.checkpoint) == (
        "sam2",
        Path("b.pt"),
        "sam2_hiera_s",
        None,
    )
    assert s.checkpoint == Path("b.pt")


def test_eval_commands_take_the_same_segmenter_config():
    davis = parse(["eval", "davis", "--root", "D", "--segmenter.classical.merge-threshold", "15"])[
        0
    ]
    assert davis.segmenter.name == "classical" and davis.segmenter.classical.merge_threshold == 15.0
    scannet = parse(
        [
            "eval",
            "scannet",
            "--scene",
            "S",
            "--segmenter",
            "simulated",
            "--segmenter.simulated.noise",
            "0.3",
        ]
    )[0]
    assert scannet.segmenter.name == "simulated" and scannet.segmenter.simulated.noise == 0.3
    batch = parse(
        [
            "batch",
            "--scenes",
            "x*",
            "--out",
            "o",
            "--segment.segmenter.classical.merge-threshold",
            "15",
            "--segment.max-frames",
            "2",
        ]
    )[0]
    assert (
        batch.segment.segmenter.classical.merge_threshold == 15.0
        and batch.segment.input.max_frames == 2
    )


def test_auto_is_resolved_by_the_scene(synthetic_scene_dir):
    from lift3d.recon import load_scene

    assert SegmenterConfig().resolve().name == "classical-2d"  # no scene: a video's choice
    assert SegmenterConfig(name="classical").resolve().name == "classical-2d"  # the old name
    resolved = SegmenterConfig().resolve(load_scene(synthetic_scene_dir))
    assert resolved.name == "geometric" and resolved.geometric.up == (
        0.0,
        0.0,
        1.0,
    )  # up from the cameras
    assert (
        resolved.settings()["geometric"]["up"] == [0.0, 0.0, 1.0]
        and "classical" not in resolved.settings()
    )
    assert set(SegmenterConfig().settings()) == {
        "name",
        "geometric",
        "classical",
    }  # auto: both candidates
    assert SegmenterConfig().per_scene and not SegmenterConfig(name="classical-2d").per_scene


def test_a_segmenter_without_what_it_needs_says_so():
    from lift3d.errors import InputError

    with pytest.raises(InputError, match="--segmenter.sam.checkpoint"):
        SegmenterConfig(name="sam").setup()
    with pytest.raises(InputError, match="depth \\+ poses"):
        SegmenterConfig(name="geometric").setup()
    with pytest.raises(InputError, match="instance ground truth"):
        SegmenterConfig(name="simulated").setup()


# -- option names, run.json and --config -----------------------------------------------------


def test_options_by_their_flat_names_round_trip():
    cfg = SegmentConfig.from_options(
        scene=Path("s"),
        out=Path("o"),
        max_frames=3,
        vote="points",
        preview=False,
        tracker=TrackerConfig(points_per_mask=3),
        segmenter="classical-2d",
        seed=2,
    )
    assert (
        cfg.input.scene,
        cfg.output.out,
        cfg.input.max_frames,
        cfg.lifting.vote,
        cfg.output.preview,
    ) == (Path("s"), Path("o"), 3, "points", False)
    assert cfg.segmenter == SegmenterConfig(name="classical-2d") and cfg.seed == 2
    assert SegmentConfig.from_options(**cfg.to_options()) == cfg
    with pytest.raises(TypeError):
        SegmentConfig.from_options(scene=Path("s"), max_frame=3)


def test_run_json_config_reads_back_as_the_same_config(tmp_path):
    cfg = SegmentConfig.from_options(
        scene=Path("s"),
        out=Path("o"),
        size=(64, 48),
        fill_radius=0.0,
        segmenter=SegmenterConfig(name="sam", sam=SamConfig(checkpoint=Path("c.pth"))),
    )
    values = config_to_json(cfg)
    assert (
        values["scene"] == "s"
        and values["size"] == [64, 48]
        and values["segmenter"]["sam"]["checkpoint"] == "c.pth"
    )
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": values}))
    assert read_run_config(path) == cfg


def test_an_old_run_json_with_the_flat_segmenter_still_loads(tmp_path):
    old = {
        "scene": "s",
        "segmenter": "sam2",
        "sam_checkpoint": "sam2.pt",
        "sam_model": "vit_h",
        "sam2_model": "sam2_hiera_b+",
        "simulated": {"noise": 0.3},
        "geometric": {"threshold": 0.2},
        "eps": 0.03,
        "vote": "points",
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": old}))
    cfg = read_run_config(path)
    s = cfg.segmenter
    assert (s.name, s.sam2.checkpoint, s.sam2.model, s.sam.checkpoint) == (
        "sam2",
        Path("sam2.pt"),
        "sam2_hiera_b+",
        None,
    )
    assert s.simulated.noise == 0.3 and s.geometric.threshold == 0.2
    assert cfg.metric.eps == 0.03 and cfg.lifting.vote == "points" and cfg.input.scene == Path("s")
    path.write_text(json.dumps({"config": {**old, "sam2_model": "sam3"}}))
    with pytest.raises(
        Exception, match="segmenter.sam2.model"
    ):  # a clear error, naming the setting
        read_run_config(path)


# -- lift3d segment --help --------------------------------------------------------------------


def _help(args: list[str], columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    out = subprocess.run(
        [sys.executable, "-m", "lift3d.cli", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("columns", [100, 200])
def test_segment_help_groups_the_options_by_stage(columns):
    text = _help(["segment"], columns)
    titles = re.findall(r"─ ([\w.]+) options ─", text)
    for group in (
        "input",
        "segmenter",
        "segmenter.geometric",
        "segmenter.classical",
        "segmenter.sam",
        "segmenter.sam.amg",
        "segmenter.sam2",
        "segmenter.simulated",
        "tracker",
        "lifting",
        "superpoints",
        "merge",
        "output",
        "mast3r",
    ):
        assert group in titles, group
    if columns == 100:  # one column of boxes: in the order of the flow
        order = [titles.index(g) for g in ("input", "segmenter", "tracker", "lifting", "output")]
        assert order == sorted(order)
    # the flags of the flat groups keep their names
    for flag in (
        "--scene PATH",
        "--max-frames",
        "--vote",
        "--out",
        "--no-preview",
        "--segmenter NAME",
        "--segmenter.classical.merge-threshold FLOAT",
    ):
        assert flag in text, flag


def _boxes(text: str) -> tuple[list[list[str]], int]:
    """The lines inside each help box (the columns of boxes of a wide terminal cut apart), and
    the width of their text."""
    lines = text.splitlines()
    starts = sorted({m.start() for ln in lines for m in re.finditer("╭", ln)})
    width = next(ln.index("╮") for ln in lines if "╮" in ln) + 1 - starts[0]
    boxes: list[list[str]] = []
    for c in starts:
        box = None
        for ln in lines:
            seg = ln[c : c + width]
            if seg.startswith("╭"):
                box = []
            elif seg.startswith("╰") and box is not None:
                boxes.append(box)
                box = None
            elif box is not None and seg.startswith("│"):
                box.append(seg[2:-2].rstrip())  # inside the border and its one-space padding
    return boxes, width - 4


def _early_breaks(text: str) -> list[str]:
    """Help lines followed by a word that would have fitted on them: a sentence broken where
    the docstring's source line ended, not where the terminal did."""
    boxes, width = _boxes(text)
    found = []
    for box in boxes:
        sep = next((i for i, ln in enumerate(box) if ln and set(ln) == {"─"}), None)
        paragraphs: list[tuple[str, int, list[str]]] = (
            [("(group)", 0, box[:sep])] if sep is not None else []
        )
        flag = None
        for ln in box[sep + 1 if sep is not None else 0 :]:
            if ln.startswith("-"):
                flag = ln
                paragraphs.append((flag, 6, []))
            elif ln.startswith(" " * 6) and paragraphs:
                paragraphs[-1][2].append(ln[6:])
        for name, indent, para in paragraphs:
            for a, b in zip(para, para[1:]):
                if len(a) + 1 + len(b.split()[0]) <= width - indent:
                    found.append(f"{name.split()[0]}: {a!r} / {b.split()[0]!r}")
    return found


@pytest.mark.parametrize("columns", [100, 200])
@pytest.mark.parametrize(
    "command", [["segment"], ["metric"], ["eval", "davis"], ["eval", "scannet"], ["batch"]]
)
def test_help_sentences_are_wrapped_by_the_terminal_only(command, columns):
    assert _early_breaks(_help(command, columns)) == []


def test_the_break_check_finds_a_docstring_line_break():
    broken = (
        "╭─ x options ───────────────────────╮\n"
        "│ --a INT                            │\n"
        "│       one two                      │\n"
        "│       three. (default: 1)          │\n"
        "╰────────────────────────────────────╯\n"
    )
    assert _early_breaks(broken) == ["--a: 'one two' / 'three.'"]
