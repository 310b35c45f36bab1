"""The `lift3d` command line as a user meets it: the README's commands, --version, -q / -v, --config."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lift3d.cli import View, entrypoint, parse
from lift3d.console import StageProgress, progress

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    """Every `lift3d ...` command line of README.md (code blocks and inline code) and the Makefile."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [ln.split(" #")[0].strip() for ln in block.splitlines()]
    lines += re.findall(r"`((?:\.venv/bin/)?lift3d [^`]+)`", text)
    make = (
        (ROOT / "Makefile")
        .read_text()
        .replace("$(VENV)", ".venv")
        .replace("$(DEMO)", "outputs/demo")
    )
    lines += re.findall(r"(\.venv/bin/lift3d [^\n\")]+)", make)
    cmds = []
    for ln in lines:
        ln = ln.strip()
        if ln.startswith(".venv/bin/"):
            ln = ln[len(".venv/bin/") :]
        if ln.startswith("lift3d ") and len(shlex.split(ln)) > 2:  # `lift3d segment` alone names it
            cmds.append(ln)
    return sorted(set(cmds))


README_COMMANDS = _readme_commands()


def test_the_readme_shows_the_commands_this_test_checks():
    joined = "\n".join(README_COMMANDS)
    for sub in (
        "segment",
        "metric",
        "eval scannet",
        "eval davis",
        "view OUT",
        "batch",
        "synth",
        "view outputs/demo/result",
    ):
        assert f"lift3d {sub}" in joined, sub


@pytest.mark.parametrize("line", README_COMMANDS)
def test_every_readme_command_parses(line, capsys, tmp_path, monkeypatch):
    argv = shlex.split(line)[1:]
    if "--config" in argv:  # a recorded run to rerun
        monkeypatch.chdir(tmp_path)
        run = Path(argv[argv.index("--config") + 1])
        run.parent.mkdir(parents=True)
        run.write_text(json.dumps({"config": {"scene": "S", "max_frames": 5}}))
    parse(argv)  # raises SystemExit on an option the CLI does not know
    with pytest.raises(SystemExit) as e:
        parse([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: lift3d" in capsys.readouterr().out


def test_view_takes_the_output_folder_positionally_and_by_the_old_flag():
    assert parse(["view", "runs/a"])[0] == View(out=Path("runs/a"))
    assert parse(["view", "--port", "9000", "--out", "runs/a"])[0] == View(
        out=Path("runs/a"), port=9000
    )
    assert parse(["view", "--out=runs/a"])[0].out == Path("runs/a")
    assert parse(["synth", "s", "--frames", "3"])[0].out == Path("s")


def test_version(capsys):
    from lift3d import __version__

    assert entrypoint(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lift3d {__version__}"


def test_verbosity_flags_anywhere():
    assert parse(["-q", "view", "o"])[1] == -1
    assert parse(["view", "o", "--verbose"])[1] == 1
    assert parse(["view", "o"])[1] == 0


def test_segment_quiet_prints_nothing_on_a_clean_run(synthetic_scene_dir, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lift3d.cli",
            "segment",
            "-q",
            "--scene",
            str(synthetic_scene_dir),
            "--out",
            str(tmp_path / "out"),
            "--max-frames",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "report.html").is_file()
    assert out.stdout == "" and out.stderr == ""


def test_segmenter_settings_are_logged_at_debug_only(synthetic_scene_dir, tmp_path, caplog):
    argv = [
        "segment",
        "--scene",
        str(synthetic_scene_dir),
        "--out",
        str(tmp_path / "o"),
        "--max-frames",
        "2",
        "--no-preview",
        "--segmenter",
        "classical-2d",
    ]
    with caplog.at_level(logging.DEBUG):
        assert entrypoint([*argv, "-v"]) == 0
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("segmenter=classical-2d" in m for m in info)
    assert not any("'config'" in m for m in info)  # the classical segmenter's settings ...
    assert any(m.startswith("backends:") and "'config'" in m for m in debug)  # ... are at DEBUG


def test_config_reruns_a_recorded_run_and_flags_override(synthetic_scene_dir, tmp_path):
    first = tmp_path / "first"
    argv = [
        "segment",
        "--scene",
        str(synthetic_scene_dir),
        "--out",
        str(first),
        "--max-frames",
        "2",
        "--no-preview",
        "--tracker.points-per-mask",
        "3",
        "--seed",
        "4",
    ]
    assert entrypoint(argv) == 0
    run = json.loads((first / "run.json").read_text())
    again = tmp_path / "again"
    assert (
        entrypoint(
            ["segment", "--config", str(first / "run.json"), "--out", str(again), "--eps", "0.03"]
        )
        == 0
    )
    rerun = json.loads((again / "run.json").read_text())["config"]
    assert rerun["metric"]["eps"] == 0.03 and rerun["out"] == str(again)  # the flags given ...
    for key in (
        "scene",
        "max_frames",
        "preview",
        "seed",
        "tracker",
        "mast3r",
        "segmenter",
    ):  # ... the record
        assert rerun[key] == run["config"][key], key
    assert rerun["tracker"]["points_per_mask"] == 3


def test_config_bad_input(tmp_path, capsys):
    assert entrypoint(["segment", "--config", str(tmp_path / "none.json")]) == 2
    assert "none.json: --config: file not found" in capsys.readouterr().err
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"config": {"scene": "s", "eps": "wide"}}))
    assert entrypoint(["segment", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "`eps` must be float" in err and "Traceback" not in err


def test_config_of_an_earlier_run_keeps_its_metric_settings(tmp_path, caplog):
    # before the metric's settings were one MetricConfig, run.json held them at the top level
    from lift3d.consistency.metric import MetricConfig
    from lift3d.runfile import read_run_config

    old = tmp_path / "run.json"
    old.write_text(
        json.dumps(
            {
                "config": {
                    "scene": "s",
                    "eps": 0.03,
                    "metric_pairwise": False,
                    "metric_max_points": 1000,
                }
            }
        )
    )
    with caplog.at_level(logging.WARNING):
        cfg = read_run_config(old)
    assert cfg.metric == MetricConfig(eps=0.03, pairwise=False, max_points=1000)
    assert not caplog.records  # nothing ignored


def test_metric_flags_of_segment_old_and_new(tmp_path):
    cmd, _ = parse(
        [
            "segment",
            "--scene",
            "s",
            "--eps",
            "0.03",
            "--no-metric-pairwise",
            "--metric-max-points=7",
        ]
    )
    new, _ = parse(
        [
            "segment",
            "--scene",
            "s",
            "--metric.eps",
            "0.03",
            "--metric.no-pairwise",
            "--metric.max-points",
            "7",
        ]
    )
    assert cmd.metric == new.metric and (
        new.metric.eps,
        new.metric.pairwise,
        new.metric.max_points,
    ) == (0.03, False, 7)
    metric, _ = parse(
        [
            "metric",
            "--scene",
            "s",
            "--masks",
            "m",
            "--eps",
            "0.03",
            "--no-pairwise",
            "--max-points",
            "7",
        ]
    )
    assert metric.metric == new.metric  # the same settings, without the prefix
    batch, _ = parse(
        [
            "batch",
            "--scenes",
            "x",
            "--out",
            "o",
            "--segment.eps",
            "0.03",
            "--segment.metric.no-pairwise",
        ]
    )
    assert (batch.segment.metric.eps, batch.segment.metric.pairwise) == (0.03, False)


def test_progress_off_a_terminal_logs_every_tenth(caplog):
    with caplog.at_level(logging.INFO, logger="lift3d.progress"):
        with StageProgress("tracking", 50, min_interval_s=0) as bar:
            for _ in range(50):
                bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert (
        len(lines) == 10
        and lines[0].startswith("tracking: 5/50 frames (10%")
        and "50/50 frames (100%" in lines[-1]
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lift3d.progress"):  # -q
        assert list(progress(range(7), total=7, desc="lifting")) == list(range(7))
    assert caplog.records == []
