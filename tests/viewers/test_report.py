"""`OUT/report.html`: metrics, previews, instances and settings on one offline page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.viewers.palette import label_colors
from lift3d.viewers.report import format_value, write_report


def test_report_shows_metrics_instances_and_settings(fake_output):
    path = write_report(fake_output)
    assert path == fake_output / "report.html"
    page = path.read_text()
    for text in ("0.8731", "0.9412", "7,421", "0.0200", "timings.tracking", "1.25"):  # metrics.json
        assert text in page, text
    r, g, b = label_colors(np.array([2]))[0]
    assert f"background:rgb({r},{g},{b})" in page  # instance 2's swatch, in its viewer colour
    assert "Instances (3)" in page and "classical" in page and "lift3d segment --scene fake" in page
    assert "<details" in page  # settings are collapsible
    assert not list(fake_output.glob(".report.html*"))


def test_report_links_the_previews_relatively_and_fetches_nothing(fake_output):
    from lift3d.viewers.render import write_point_renders

    write_point_renders(
        fake_output / "preview" / "renders",
        fake_output / "points.ply",
        fake_output / "cameras.json",
    )
    (fake_output / "preview" / "heatmaps").mkdir(parents=True)
    (fake_output / "preview" / "heatmaps" / "frame 0.png").write_bytes(
        (fake_output / "images" / "0.png").read_bytes()
    )
    page = write_report(fake_output).read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "preview/renders/birdseye.png" in sources and "preview/heatmaps/frame%200.png" in sources
    for s in sources:
        assert not re.match(r"^[a-z]+:|^//", s), s  # nothing from the network, no absolute paths
        assert (fake_output / unquote(s)).is_file(), s
    assert "<script" not in page


def test_report_without_optional_files(fake_output):
    for name in ("run.json", "instances.json"):
        (fake_output / name).unlink()
    page = write_report(fake_output).read_text()
    assert "run.json not found" in page and "No previews" in page and "0.8731" in page


def test_report_escapes_html(fake_output):
    run = json.loads((fake_output / "run.json").read_text())
    run["config"]["note"] = "<script>alert(1)</script>"
    (fake_output / "run.json").write_text(json.dumps(run))
    page = write_report(fake_output).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_report_bad_input(tmp_path, fake_output):
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a lift3d output: metrics.json missing"):
        write_report(tmp_path / "empty")
    (fake_output / "metrics.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        write_report(fake_output)
    assert not Path(fake_output / "report.html").exists()


@pytest.mark.parametrize(
    "value, text",
    [
        (7421, "7,421"),
        (0.87314, "0.8731"),
        (3.2, "3.2"),
        (5.0, "5"),
        (1e-5, "1e-05"),
        (None, "-"),
        (True, "true"),
        ([1, 2], "[1, 2]"),
        (list(range(20)), "20 values: min 0, mean 9.5, max 19"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_report_heatmaps_in_frame_order_evenly_spaced(fake_output):
    names = [str(i) for i in range(0, 300, 3)]  # 100 frames named 0, 3, ..., 297
    run = json.loads((fake_output / "run.json").read_text())
    run["scene"] = {"name": "fake", "frames": names}
    (fake_output / "run.json").write_text(json.dumps(run))
    heat = fake_output / "preview" / "heatmaps"
    heat.mkdir(parents=True)
    png = (fake_output / "images" / "0.png").read_bytes()
    for n in names:
        (heat / f"{n}.png").write_bytes(png)
    page = write_report(fake_output).read_text()
    shown = [int(m) for m in re.findall(r'src="preview/heatmaps/(\d+)\.png"', page)]
    assert len(shown) == 12 and shown == sorted(shown)  # not the file names' 0, 102, 105, ...
    assert shown[0] == 0 and shown[-1] == 297


def test_report_settings_are_a_table_and_long_tables_fold(fake_output):
    run = json.loads((fake_output / "run.json").read_text())
    run["backends"]["segmenter_settings"] = {"scale": 300.0, "min_size": 40}
    run["config"].update({f"option_{k}": k for k in range(30)})
    (fake_output / "run.json").write_text(json.dumps(run))
    instances = [{"id": k, "points": 10, "confidence": 0.5, "frames": ["0"]} for k in range(1, 41)]
    (fake_output / "instances.json").write_text(json.dumps({"instances": instances}))
    page = write_report(fake_output).read_text()
    header = page.split("<h2>")[0]
    assert "segmenter: classical" in header and "{" not in header.split("<body>")[1]  # no dict repr
    assert "<th>segmenter_settings.scale</th>" in page  # nested settings are rows of the table
    assert "<summary>20 more instances</summary>" in page and "more settings</summary>" in page
