"""`lift3d view`: reading an output, the viewer's scene and GUI logic, and a real browser on it."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from lift3d.errors import InputError, Lift3dError
from lift3d.viewers.outputs import quaternion_to_matrix, read_labeled_splats
from lift3d.viewers.palette import label_colors
from lift3d.viewers.web import (
    _FRUSTUM_IDLE,
    _pick_point_reference,
    _ray_segment,
    check_port_free,
    initial_view,
    load_output,
    pick_point,
    point_spacing,
    serve,
)
from tests.viewers.browser import capture_page, colour_pixels, find_chromium, free_port

INSTANCE_COLOURS = label_colors(np.array([1, 2, 3]))
#: three.js logs this for every viser splat node: viser's splat quad has a 2-component
#: "position" attribute (GaussianSplatsHelpers.ts), so computeBoundingSphere reads z as NaN.
#: Rendering is unaffected; it is the only console error the splat page may show.
VISER_SPLAT_NAN = "THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN"


@pytest.fixture
def running(fake_output):
    """The viewer of the fake output, served in-process on a free port."""
    port = free_port()
    server = serve(fake_output, port=port, block=False)
    yield server, port
    server.stop()


# reading an output --------------------------------------------------------------------------


def test_load_output(fake_output):
    data = load_output(fake_output)
    assert data.points["xyz"].shape == (650, 3) and data.points["rgb"].dtype == np.uint8
    assert set(np.unique(data.points["label"])) == {0, 1, 2, 3}
    assert data.size == (96, 72) and [f["name"] for f in data.frames] == ["0", "1"]
    assert [e["id"] for e in data.instances] == [1, 2, 3] and data.splats is None
    small = load_output(fake_output, max_points=100)
    assert small.points["xyz"].shape == (100, 3)


def test_load_output_bad_input(tmp_path, fake_output):
    with pytest.raises(InputError, match="output folder not found"):
        load_output(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"not a lift3d output: points.ply, cameras.json missing"):
        load_output(tmp_path / "empty")
    (fake_output / "cameras.json").write_text('{"size": [4, 4], "frames": [{"name": "0"}]}')
    with pytest.raises(InputError, match="cameras.json"):
        load_output(fake_output)


def test_splats_are_read_with_covariances_colours_and_opacity(fake_output_with_splats):
    sp = read_labeled_splats(fake_output_with_splats / "splats.ply")
    pts = load_output(fake_output_with_splats).points
    n = len(pts["xyz"])
    assert sp["covariances"].shape == (n, 3, 3) and sp["opacity"].shape == (n,)
    np.testing.assert_allclose(
        sp["covariances"][0], np.eye(3) * 0.02**2, rtol=1e-5
    )  # isotropic, 2 cm
    np.testing.assert_allclose(sp["opacity"], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    assert np.abs(sp["rgb"].astype(int) - pts["rgb"]).max() <= 1  # degree-0 SH back to RGB
    np.testing.assert_array_equal(sp["label"], pts["label"])


def test_quaternion_to_matrix_matches_scipy():
    from scipy.spatial.transform import Rotation

    q = np.random.default_rng(0).normal(size=(20, 4))
    R = quaternion_to_matrix(q)
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy: scalar last
    np.testing.assert_allclose(R, ref, atol=1e-12)


# pure helpers -------------------------------------------------------------------------------


def test_pick_point_matches_reference_and_takes_the_nearest():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, (400, 3))
    for _ in range(20):
        o, d = rng.normal(size=3) * 3, rng.normal(size=3)
        assert pick_point(o, d, xyz, tolerance=0.1) == _pick_point_reference(
            o, d, xyz, tolerance=0.1
        )
    line = np.array([[0, 0, 3.0], [0, 0, 1.0], [0.5, 0, 0.5], [0, 0, -1.0]])
    assert pick_point(np.zeros(3), np.array([0, 0, 2.0]), line, tolerance=0.01) == 1
    assert pick_point(np.zeros(3), np.array([1.0, 0, 0]), line, tolerance=0.01) is None


def test_initial_view_frames_the_whole_scene():
    rng = np.random.default_rng(2)
    fov = np.deg2rad(75.0)
    for _ in range(10):
        xyz = rng.normal(size=(500, 3)) * rng.uniform(0.2, 5, 3) + rng.normal(size=3) * 10
        up, side = rng.normal(size=3), rng.normal(size=3)
        position, look_at = initial_view(xyz, up, side, fov=fov)
        lo, hi = np.percentile(xyz, [2, 98], axis=0)
        corners = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        axis = (look_at - position) / np.linalg.norm(look_at - position)
        rays = (corners - position) / np.linalg.norm(corners - position, axis=1, keepdims=True)
        assert np.all(
            np.arccos(np.clip(rays @ axis, -1, 1)) <= fov / 2 + 1e-9
        )  # every corner in view
        elevation = np.arcsin(-axis @ (up / np.linalg.norm(up)))
        assert elevation == pytest.approx(np.pi / 4)  # looking down at 45 degrees


def test_ray_segment_closest_approach():
    o, d = np.zeros(3), np.array([1.0, 0, 0])
    assert _ray_segment(o, d, np.array([2.0, 1, 0]), np.array([2.0, 3, 0])) == pytest.approx(
        (2.0, 1.0)
    )
    assert _ray_segment(o, d, np.array([3.0, -1, 0]), np.array([3.0, 1, 0])) == pytest.approx(
        (3.0, 0.0)
    )
    assert _ray_segment(o, d, np.array([1.0, 2, 0]), np.array([5.0, 2, 0])) == pytest.approx(
        (1.0, 2.0), abs=1e-9
    )


def test_point_spacing_of_a_grid():
    g = np.stack(np.meshgrid(np.arange(60), np.arange(60), [0.0]), -1).reshape(-1, 3) * 0.02
    assert point_spacing(g) == pytest.approx(0.02)
    assert point_spacing(g, sample=900) == pytest.approx(0.02, rel=0.2)


def test_check_port_free_reports_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(Lift3dError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    with pytest.raises(InputError, match="0..65535"):
        check_port_free("127.0.0.1", 70000)


# the viewer's scene and GUI (no browser) ------------------------------------------------------


def test_serve_refuses_a_busy_port_and_a_non_output(fake_output, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(Lift3dError, match="already in use"):
            serve(fake_output, port=s.getsockname()[1], block=False)
    with pytest.raises(InputError, match="not a lift3d output"):
        serve(tmp_path, port=free_port(), block=False)


def test_serve_prints_the_url(fake_output, capsys):
    port = free_port()
    server = serve(fake_output, port=port, block=False)
    server.stop()
    assert f"lift3d view: {fake_output} at http://127.0.0.1:{port}" in capsys.readouterr().out


def test_viewer_scene_and_selection(running):
    server, _ = running
    viewer = server.lift3d_viewer
    assert set(viewer.point_nodes) == {0, 1, 2, 3}  # one node per instance, unlabeled apart
    assert set(viewer.frustums) == {"0", "1"}
    np.testing.assert_array_equal(
        viewer.point_nodes[2].colors, np.tile(INSTANCE_COLOURS[1], (150, 1))
    )

    seen = set(viewer.instance_by_id[2]["frames"])
    viewer.select(2)
    assert viewer.inspect.value == "2"
    for name, frustum in viewer.frustums.items():
        assert tuple(frustum.color) == (
            tuple(INSTANCE_COLOURS[1].tolist()) if name in seen else _FRUSTUM_IDLE
        )
    assert (
        "instance 2" in viewer.info.content
        and f"seen in {len(seen)} of 2 views" in viewer.info.content
    )
    viewer.select(None)
    assert all(tuple(f.color) == _FRUSTUM_IDLE for f in viewer.frustums.values())
    viewer.show_view("1")
    assert "view 1 saw 3 instances" in viewer.view_info.content.replace("</b>", "").replace(
        "<b>", ""
    )
    with pytest.raises(InputError, match="no instance 9"):
        viewer.select(9)


def test_viewer_click_picks_the_instance_and_toggles(running):
    server, _ = running
    viewer = server.lift3d_viewer
    pts = viewer.data.points
    target = pts["xyz"][pts["label"] == 3].mean(0)
    origin = target + np.array([0.0, -3.0, 1.0])
    assert viewer.pick(origin, target - origin) == 3
    viewer.checkboxes[3].value = False  # the GUI entry hides it ...
    assert not viewer.point_nodes[3].visible and viewer.pick(origin, target - origin) != 3
    viewer.isolate(1)
    assert [viewer.point_nodes[k].visible for k in (1, 2, 3)] == [True, False, False]
    viewer.isolate(None)
    assert all(viewer.point_nodes[k].visible for k in (1, 2, 3))


def test_a_click_on_a_camera_does_not_select_the_point_behind_it(running):
    server, _ = running
    viewer = server.lift3d_viewer
    pts = viewer.data.points
    camera = np.asarray(viewer.data.frames[0]["T_world_camera"])[:3, 3]
    target = pts["xyz"][pts["label"] == 1].mean(0)
    direction = target - camera
    origin = camera - 0.5 * direction  # behind the camera, through its frustum, onto instance 1
    assert viewer.pick(origin, direction) == 1  # the point is there ...
    assert (
        viewer.click(origin, direction) is None and viewer.state.selected is None
    )  # ... the camera is in front
    viewer.cameras_root.visible = False
    assert viewer.click(origin, direction) == 1 and viewer.state.selected == 1
    viewer.cameras_root.visible = True
    target = pts["xyz"][pts["label"] == 3].mean(0)
    origin = target + np.array([0.0, -3.0, 1.0])  # no camera on the way
    assert viewer.click(origin, target - origin) == 3 and viewer.inspect.value == "3"


def test_instances_without_points_are_counted_apart(fake_output):
    import json

    data = json.loads((fake_output / "instances.json").read_text())
    data["instances"].append({"id": 9, "points": 0, "confidence": 0.0, "frames": ["0"]})
    (fake_output / "instances.json").write_text(json.dumps(data))
    server = serve(fake_output, port=free_port(), block=False)
    try:
        viewer = server.lift3d_viewer
        assert (
            viewer.ids == [1, 2, 3]
            and set(viewer.checkboxes) == {1, 2, 3}
            and viewer.no_points == 1
        )
        assert 9 not in viewer.views_by_frame["0"]
        with pytest.raises(InputError, match="no instance 9"):
            viewer.select(9)
    finally:
        server.stop()


def test_camera_thumbnails_can_show_the_label_maps(running):
    server, _ = running
    viewer = server.lift3d_viewer
    rgb = viewer.frustums["0"].image.copy()
    viewer.set_camera_images("labels")
    labelled = viewer.frustums["0"].image
    assert labelled.shape == rgb.shape and not np.array_equal(labelled, rgb)
    from lift3d.io import read_label_map

    lab = read_label_map(viewer.data.out_dir / "masks" / "0.png")  # the frames' size here
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(
        labelled[lab == 0], rgb[lab == 0]
    )  # unlabeled pixels as they were
    tint = np.round(
        0.4 * rgb[lab > 0] + 0.6 * label_colors(lab[lab > 0])
    )  # each instance's colour at 0.6
    assert np.abs(labelled[lab > 0].astype(int) - tint).max() <= 1
    viewer.set_camera_images("RGB")
    np.testing.assert_array_equal(viewer.frustums["0"].image, rgb)
    with pytest.raises(InputError, match="camera images"):
        viewer.set_camera_images("depth")


def test_viewer_colour_modes(running):
    server, _ = running
    viewer = server.lift3d_viewer
    pts = viewer.data.points
    sel = viewer.point_index[1]
    viewer.set_color_mode("RGB")
    np.testing.assert_array_equal(viewer.point_nodes[1].colors, pts["rgb"][sel])
    viewer.set_color_mode("confidence")
    assert not np.array_equal(viewer.point_nodes[1].colors, pts["rgb"][sel])
    with pytest.raises(InputError, match="colour mode"):
        viewer.set_color_mode("depth")


def test_viewer_with_splats(fake_output_with_splats):
    server = serve(fake_output_with_splats, port=free_port(), block=False)
    try:
        viewer = server.lift3d_viewer
        assert set(viewer.splat_nodes) == {0, 1, 2, 3} and not viewer.points_root.visible
        sp = viewer.data.splats
        target = sp["centers"][sp["label"] == 2].mean(0)
        origin = target + np.array([0.0, -3.0, 1.0])
        assert viewer.pick(origin, target - origin) == 2
        viewer.set_color_mode("RGB")
        np.testing.assert_array_equal(viewer.splat_nodes[2].rgbs, sp["rgb"][viewer.splat_index[2]])
        viewer.set_visible(2, False)
        assert not viewer.splat_nodes[2].visible and not viewer.point_nodes[2].visible
    finally:
        server.stop()


def test_view_command_prints_one_line_on_bad_input(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lift3d.viewers.web", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a lift3d output: points.ply, cameras.json missing" in out.stderr


# a real browser ------------------------------------------------------------------------------

chromium = pytest.mark.skipif(
    find_chromium() is None, reason="Chromium not installed (apt-get install chromium)"
)


def _instances_drawn(image: np.ndarray) -> bool:
    return bool((colour_pixels(image, INSTANCE_COLOURS) >= 30).all())


@chromium
def test_browser_shows_the_instances_without_console_errors(running):
    _, port = running
    capture = capture_page(
        f"http://127.0.0.1:{port}", size=(960, 640), timeout_s=30, ready=_instances_drawn
    )
    assert capture.ready, (
        f"instance colours not drawn after {capture.seconds:.1f} s: {colour_pixels(capture.screenshot, INSTANCE_COLOURS)}"
    )
    assert capture.errors == []
    assert capture.screenshot.shape == (640, 960, 3)
    assert not any("WebGL unavailable" in m for m in capture.messages)


@chromium
def test_browser_shows_labeled_splats(fake_output_with_splats):
    out = fake_output_with_splats
    port = free_port()
    server = serve(out, port=port, block=False)
    try:
        assert set(server.lift3d_viewer.splat_nodes) == {0, 1, 2, 3}
        # splats blend towards their edges: their colours come close to the palette, not onto it
        capture = capture_page(
            f"http://127.0.0.1:{port}",
            size=(960, 640),
            timeout_s=30,
            ready=lambda im: bool((colour_pixels(im, INSTANCE_COLOURS, tol=40) >= 30).all()),
        )
    finally:
        server.stop()
    assert capture.ready
    assert [e for e in capture.errors if VISER_SPLAT_NAN not in e] == []


@pytest.fixture(scope="module")
def demo_output(synthetic_scene_dir, tmp_path_factory):
    """`lift3d segment` on the synthetic scene with the per-image segmenter (fewer frames, no
    previews): its mask IDs include some that take no point, which the page must not count."""
    from lift3d.config import SegmentConfig
    from lift3d.pipeline import run_segment

    return run_segment(
        SegmentConfig.from_options(
            scene=synthetic_scene_dir,
            out=tmp_path_factory.mktemp("demo") / "result",
            max_frames=4,
            preview=False,
            segmenter="classical-2d",
        )
    )


@chromium
def test_browser_counts_the_instances_of_points_ply(demo_output):
    import json
    import re

    from plyfile import PlyData

    label = np.asarray(PlyData.read(str(demo_output / "points.ply"))["vertex"]["label"])
    in_points = len(np.unique(label[label > 0]))
    recorded = json.loads((demo_output / "instances.json").read_text())["instances"]
    assert len(recorded) > in_points  # mask IDs that took no point: what the page must not count
    port = free_port()
    server = serve(demo_output, port=port, block=False)
    try:
        capture = capture_page(
            f"http://127.0.0.1:{port}",
            size=(960, 800),
            timeout_s=40,
            expression="document.body.innerText",
            ready_value=lambda text: isinstance(text, str) and "Instances (" in text,
        )
    finally:
        server.stop()
    assert capture.ready, capture.value
    text = capture.value
    assert re.search(r"([\d,]+) points, (\d+) instances", text).group(2) == str(in_points)
    assert f"Instances ({in_points})" in text
    assert len(re.findall(r"^\d+: [\d,]+ pts, \d+ views", text, flags=re.M)) == in_points
