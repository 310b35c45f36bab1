"""`lift3d view OUT`: the labeled points, splats and cameras of a run in the browser, on viser.

What the page shows:

- the labeled point cloud, one scene node per instance (so each can be hidden), unlabeled
  points in their own node;
- the labeled Gaussian splats when `OUT/splats.ply` exists, also one node per instance;
- the camera frustums with their (downscaled) images, or those images under their label maps;
- GUI: colour by label / confidence / RGB, toggles for points, splats, cameras and unlabeled
  points, one checkbox per instance that has points, and an "inspect" dropdown. Inspecting an instance (from the
  dropdown, or by clicking one of its points in the 3D view) lists the views that saw it
  (`instances.json`) and highlights their frustums in the instance's colour; clicking a frustum
  lists the instances that view saw.

viser's point clouds do not report clicks, so a click is picked here: the scene's click event
gives a ray, and the visible point nearest to it in angle (within a tolerance) is the one hit.
A click on a frustum reaches the scene too; the pick yields to a camera the ray meets first.

The page opens framing the whole scene (`initial_view`). Mask IDs that no point took (an ID a
view saw that lost every vote, or one `--min-instance-points` dropped) are counted apart and not
listed: the instances shown are the ones in points.ply.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import InputError, Lift3dError
from lift3d.io import read_json
from lift3d.viewers.outputs import (
    check_output,
    frame_image_path,
    read_cameras,
    read_instances,
    read_labeled_points,
    read_labeled_splats,
)
from lift3d.viewers.palette import UNLABELED_GREY, label_colors, scalar_colors

logger = logging.getLogger(__name__)

COLOR_MODES = ("label", "confidence", "RGB")
CAMERA_IMAGES = ("RGB", "labels")
_FRUSTUM_IDLE = (120, 120, 120)
_NO_SELECTION = "none"


@dataclass
class ViewerData:
    """Everything `lift3d view` draws, read from one output folder.

    Attributes:
        out_dir: the output folder.
        points: xyz [N, 3] float32, rgb [N, 3] uint8, label [N] int32, confidence [N] float32.
        size: (W, H) of the frames.
        frames: `cameras.json` frames (name, K [3, 3], T_world_camera [4, 4] or None, image).
        instances: {id, points, confidence, frames} per instance, sorted by ID.
        splats: centers, covariances, rgb, opacity, label, confidence; None without splats.ply.
        name: the scene's name (from run.json, else the folder's).
    """

    out_dir: Path
    points: dict[str, np.ndarray]
    size: tuple[int, int]
    frames: list[dict]
    instances: list[dict]
    splats: dict[str, np.ndarray] | None = None
    name: str = ""


def load_output(out_dir: str | Path, *, max_points: int = 2_000_000, seed: int = 0) -> ViewerData:
    """Read what the viewer needs from a `lift3d segment` output folder.

    Args:
        out_dir: the output folder.
        max_points: clouds larger than this are randomly subsampled (the browser holds them all).
        seed: seed of that subsampling.

    Raises:
        InputError: the folder is not a lift3d output (no points.ply or cameras.json), or one of
            its files is malformed.
    """
    out = check_output(out_dir, ("points.ply", "cameras.json"))
    points = read_labeled_points(out / "points.ply")
    n = len(points["xyz"])
    if n == 0:
        raise InputError(out / "points.ply", "the point cloud is empty: nothing to show")
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
        logger.warning("%s: %d points, showing a random %d", out / "points.ply", n, max_points)
        points = {k: v[keep] for k, v in points.items()}
    size, frames = read_cameras(out / "cameras.json")
    instances = read_instances(out, points["label"], points["confidence"])
    splats = read_labeled_splats(out / "splats.ply") if (out / "splats.ply").is_file() else None
    name = out.resolve().name
    if (out / "run.json").is_file():
        scene = read_json(out / "run.json", "run.json").get("scene")
        name = str(scene.get("name") or name) if isinstance(scene, dict) else name
    return ViewerData(out, points, size, frames, instances, splats, name)


def check_port_free(host: str, port: int) -> None:
    """Raise a clear error when `host:port` cannot be bound (viser would silently take the next).

    Raises:
        InputError: the port is not in 0..65535.
        Lift3dError: the port is in use, or the host cannot be bound.
    """
    if not 0 <= int(port) <= 65535:
        raise InputError(None, f"--port must lie in 0..65535, got {port}")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise Lift3dError(f"cannot serve on {host}:{port}: unknown host ({e.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as s:
            # as the server will: a port left in TIME_WAIT by a previous run is free to reuse
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise Lift3dError(
                        f"port {port} on {host} is already in use (another `lift3d view`?): choose another with --port"
                    ) from None
                raise Lift3dError(f"cannot serve on {host}:{port}: {e.strerror}") from None


def point_spacing(xyz: np.ndarray, *, sample: int = 20_000, seed: int = 0) -> float:
    """Typical distance between neighbouring points: the median distance to the 4th neighbour.

    The 4th neighbour, not the 1st: on a surface sampled on a grid (voxel-downsampled scans)
    the four nearest neighbours lie one grid step away, while the 1st is often much closer.
    Estimated on a random subsample and rescaled as for points on surfaces (spacing grows with
    the square root of the thinning), so a million-point scan costs a fraction of a second.
    """
    from scipy.spatial import cKDTree

    n = len(xyz)
    if n < 5:
        return 0.01
    m = min(n, sample)
    sub = xyz[np.random.default_rng(seed).choice(n, m, replace=False)] if m < n else xyz
    d, _ = cKDTree(sub).query(sub, k=5)
    nn = d[:, 4]
    nn = nn[nn > 0]
    spacing = float(np.median(nn)) if len(nn) else 0.01
    return spacing * float(np.sqrt(m / n))


def pick_point(
    ray_origin: np.ndarray,  # [3] world
    ray_direction: np.ndarray,  # [3] world
    xyz: np.ndarray,  # [N, 3] world
    *,
    tolerance: float,
) -> int | None:
    """Index of the point a click ray hits: the nearest point along the ray among those within
    `tolerance` (world units) of it; None when no point is that close.

    Args:
        ray_origin: camera centre of the click.
        ray_direction: direction of the click ray.
        xyz: candidate points (the visible ones).
        tolerance: how far from the ray a point may lie and still count as hit (about a
            point's drawn size).
    """
    if not len(xyz):
        return None
    d = np.asarray(ray_direction, np.float64)
    d = d / max(np.linalg.norm(d), 1e-12)
    rel = xyz.astype(np.float64) - np.asarray(ray_origin, np.float64)
    t = rel @ d
    dist = np.linalg.norm(rel - t[:, None] * d, axis=1)
    hit = (t > 0) & (dist <= tolerance)
    if not hit.any():
        return None
    idx = np.nonzero(hit)[0]
    return int(idx[np.argmin(t[idx])])


def _pick_point_reference(ray_origin, ray_direction, xyz, *, tolerance):
    """`pick_point` point by point."""
    d = np.asarray(ray_direction, float) / np.linalg.norm(ray_direction)
    best, best_t = None, np.inf
    for i, p in enumerate(np.asarray(xyz, float)):
        t = float((p - ray_origin) @ d)
        if t > 0 and np.linalg.norm(p - ray_origin - t * d) <= tolerance and t < best_t:
            best, best_t = i, t
    return best


def initial_view(
    xyz: np.ndarray,  # [N, 3] world
    up: np.ndarray,  # [3] world up
    side: np.ndarray,  # [3] direction from the scene's centre towards where the viewer stands
    *,
    fov: float,  # vertical field of view, radians
    elevation: float = np.pi / 4,
) -> tuple[np.ndarray, np.ndarray]:
    """(position, look_at) of a camera that frames the whole scene: the sphere around the 2-98
    percentile box of the points fits inside the vertical field of view, seen from `side`,
    `elevation` above the horizon."""
    lo, hi = np.percentile(np.asarray(xyz, np.float64), [2, 98], axis=0)
    centre = (lo + hi) / 2
    radius = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
    up = np.asarray(up, np.float64) / max(np.linalg.norm(up), 1e-12)
    side = np.asarray(side, np.float64)
    side = side - up * (side @ up)
    if np.linalg.norm(side) < 1e-6:
        side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    direction = np.cos(elevation) * side + np.sin(elevation) * up
    distance = radius / np.sin(fov / 2)
    return centre + direction * distance, centre


def _colors(mode: str, rgb: np.ndarray, label: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 colours of points (or splats) in a colour mode; unlabeled ones stay grey."""
    if mode == "RGB":
        return rgb
    if mode == "confidence":
        out = scalar_colors(confidence)
        out[label == 0] = UNLABELED_GREY
        return out
    return label_colors(label, unlabeled=UNLABELED_GREY)


def _node(k: int) -> str:
    return "unlabeled" if k == 0 else f"instance_{k}"


def _rotation_to_wxyz(R: np.ndarray) -> np.ndarray:
    import viser.transforms as vtf

    return vtf.SO3.from_matrix(np.asarray(R, np.float64)).wxyz


def _frustum_image(path: Path | None, max_width: int) -> np.ndarray | None:
    from PIL import Image

    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize(
                    (max_width, max(1, round(im.height * max_width / im.width))),
                    Image.Resampling.BILINEAR,
                )
            return np.asarray(im)
    except OSError:
        return None


@dataclass
class _ViewerState:
    """What the viewer shows; mutated by GUI callbacks (viser runs them on its thread pool)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    color_mode: str = "label"
    selected: int | None = None
    hidden: set[int] = field(default_factory=set)


class LabeledSceneViewer:
    """The scene graph and GUI of one output folder on a running `viser.ViserServer`.

    Args:
        server: the viser server to draw on.
        data: the output, from `load_output`.
        max_cameras: at most this many frustums (evenly spaced) are drawn.
        image_width: width frustum images are shrunk to.
    """

    def __init__(self, server, data: ViewerData, *, max_cameras: int = 200, image_width: int = 160):
        from lift3d.viewers.overlay import evenly_spaced

        self.server = server
        self.data = data
        self.state = _ViewerState()
        pts = data.points
        # what points.ply holds; mask IDs that no point took are only counted
        shown = [e for e in data.instances if e["points"] > 0]
        self.no_points = len(data.instances) - len(shown)
        self.ids = [e["id"] for e in shown]
        self.instance_by_id = {e["id"]: e for e in shown}
        self.views_by_frame: dict[str, list[int]] = {}
        for e in shown:
            for f in e["frames"]:
                self.views_by_frame.setdefault(f, []).append(e["id"])
        lo, hi = np.percentile(pts["xyz"], [2, 98], axis=0)
        self.extent = float(max(np.linalg.norm(hi - lo), 1e-3))
        # look at the objects, not at the middle of a room's walls and floor
        labeled = pts["xyz"][pts["label"] > 0]
        lo, hi = np.percentile(labeled if len(labeled) >= 10 else pts["xyz"], [2, 98], axis=0)
        self.centre = (lo + hi) / 2
        self.spacing = max(point_spacing(pts["xyz"]), self.extent * 1e-4)
        posed = [f for f in data.frames if f["T_world_camera"] is not None]
        self.frames = [posed[i] for i in evenly_spaced(len(posed), max_cameras)]
        # frustums sized by how far the cameras stand from what they film
        dist = [np.linalg.norm(f["T_world_camera"][:3, 3] - self.centre) for f in posed]
        self.camera_distance = float(np.median(dist)) if dist else 0.5 * self.extent
        self.frustum_scale = 0.12 * self.camera_distance
        self.image_width = image_width
        self.camera_images: dict[str, dict[str, np.ndarray | None]] = {}
        self.point_nodes: dict[int, object] = {}
        self.splat_nodes: dict[int, object] = {}
        self.frustums: dict[str, object] = {}
        self.checkboxes: dict[int, object] = {}
        self._build_scene()
        self._build_gui()

    # scene -------------------------------------------------------------------------------

    def _build_scene(self) -> None:
        from lift3d.viewers.render import up_direction

        scene = self.server.scene
        poses = [f["T_world_camera"] for f in self.frames]
        up = up_direction(poses)
        scene.set_up_direction(tuple(float(x) for x in up))
        # start on the cameras' side (walls stand behind what they film), above them, looking down
        # at 45 degrees, far enough back that the whole scene is in view
        away = np.array([1.0, -1.0, 0.0])
        if poses:
            sides = np.stack([T[:3, 3] for T in poses]) - self.centre
            sides -= np.outer(sides @ up, up)
            sides /= np.maximum(np.linalg.norm(sides, axis=1, keepdims=True), 1e-9)
            mean_side = sides.mean(0)
            # cameras all round the objects: no side is theirs, take the first camera's
            away = mean_side if np.linalg.norm(mean_side) > 0.3 else sides[0]
        position, look_at = initial_view(
            self.data.points["xyz"], up, away, fov=self.server.initial_camera.fov
        )
        self.server.initial_camera.position = tuple(float(x) for x in position)
        self.server.initial_camera.look_at = tuple(float(x) for x in look_at)
        self.points_root = scene.add_frame("/points", show_axes=False)
        pts = self.data.points
        colors = _colors("label", pts["rgb"], pts["label"], pts["confidence"])
        self.point_index = {}
        for k in np.unique(pts["label"]).tolist():
            sel = np.nonzero(pts["label"] == k)[0]
            self.point_index[k] = sel
            self.point_nodes[k] = scene.add_point_cloud(
                f"/points/{_node(k)}",
                pts["xyz"][sel],
                colors[sel],
                point_size=1.5 * self.spacing,
                point_shape="rounded",
                precision="float32",
                # flat: a label's colour must read the same on every point (and match the palette)
                point_shading="flat",
            )
        self.splats_root = None
        if self.data.splats is not None:
            sp = self.data.splats
            self.splats_root = scene.add_frame("/splats", show_axes=False)
            colors = _colors("label", sp["rgb"], sp["label"], sp["confidence"])
            self.splat_index = {}
            for k in np.unique(sp["label"]).tolist():
                sel = np.nonzero(sp["label"] == k)[0]
                self.splat_index[k] = sel
                self.splat_nodes[k] = scene.add_gaussian_splats(
                    f"/splats/{_node(k)}",
                    centers=sp["centers"][sel],
                    covariances=sp["covariances"][sel],
                    rgbs=colors[sel].astype(np.float32) / 255.0,
                    opacities=sp["opacity"][sel, None],
                )
            self.points_root.visible = False  # the splats are the richer view when present
        self.cameras_root = scene.add_frame("/cameras", show_axes=False)
        w, h = self.data.size
        missing = 0
        for f in self.frames:
            T, K = f["T_world_camera"], f["K"]
            path = frame_image_path(self.data.out_dir, f["image"])
            image = _frustum_image(path, self.image_width)
            self.camera_images[f["name"]] = {"RGB": image}
            missing += image is None
            handle = scene.add_camera_frustum(
                f"/cameras/{f['name']}",
                fov=float(2 * np.arctan2(h / 2, K[1, 1])),
                aspect=w / h,
                scale=self.frustum_scale,
                thickness=0.015 * self.frustum_scale,
                color=_FRUSTUM_IDLE,
                image=image,
                wxyz=_rotation_to_wxyz(T[:3, :3]),
                position=T[:3, 3],
            )
            handle.on_click(lambda event, name=f["name"]: self.show_view(name))
            self.frustums[f["name"]] = handle
        if missing:
            logger.warning(
                "%d of %d camera images not found; their frustums are drawn without images",
                missing,
                len(self.frames),
            )

        @scene.on_click()
        def _(event) -> None:
            self.click(np.asarray(event.ray_origin), np.asarray(event.ray_direction))

    # gui ---------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        d = self.data
        gui.add_markdown(
            f"**{d.name}**: {len(d.points['xyz']):,} points, {len(self.ids)} instances, "
            f"{len(d.frames)} views"
            + (f", {len(d.splats['centers']):,} splats" if d.splats is not None else "")
            + (f" ({self.no_points} mask IDs took no point)" if self.no_points else "")
        )
        with gui.add_folder("Display"):
            mode = gui.add_dropdown("Colour by", COLOR_MODES, initial_value="label")
            mode.on_update(lambda _: self.set_color_mode(mode.value))
            show_points = gui.add_checkbox("Points", self.points_root.visible)
            show_points.on_update(lambda _: setattr(self.points_root, "visible", show_points.value))
            if self.splats_root is not None:
                show_splats = gui.add_checkbox("Splats", True)
                show_splats.on_update(
                    lambda _: setattr(self.splats_root, "visible", show_splats.value)
                )
            show_cams = gui.add_checkbox("Cameras", True)
            show_cams.on_update(lambda _: setattr(self.cameras_root, "visible", show_cams.value))
            images = gui.add_dropdown("Camera images", CAMERA_IMAGES, initial_value="RGB")
            images.on_update(lambda _: self.set_camera_images(images.value))
            if 0 in self.point_nodes or 0 in self.splat_nodes:
                show_unlabeled = gui.add_checkbox("Unlabeled points", True)
                show_unlabeled.on_update(lambda _: self.set_visible(0, show_unlabeled.value))
            size = gui.add_slider("Point size", min=0.25, max=4.0, step=0.25, initial_value=1.5)
            size.on_update(lambda _: self.set_point_size(size.value * self.spacing))
        with gui.add_folder("Inspect"):
            self.inspect = gui.add_dropdown(
                "Instance",
                (_NO_SELECTION, *[str(k) for k in self.ids]),
                initial_value=_NO_SELECTION,
            )
            self.inspect.on_update(
                lambda _: self._apply_selection(
                    None if self.inspect.value == _NO_SELECTION else int(self.inspect.value)
                )
            )
            self.info = gui.add_html(_small(self._info_html(None)))
            self.view_info = gui.add_html(
                _small("<p>Click a camera to list the instances it saw.</p>")
            )
            only = gui.add_button("Show only this instance")
            only.on_click(lambda _: self.isolate(self.state.selected))
            show_all = gui.add_button("Show all instances")
            show_all.on_click(lambda _: self.isolate(None))
        with gui.add_folder(f"Instances ({len(self.ids)})", expand_by_default=len(self.ids) <= 40):
            for e in self.instance_by_id.values():
                k = e["id"]
                box = gui.add_checkbox(
                    f"{k}: {e['points']:,} pts, {len(e['frames'])} views",
                    True,
                    hint=f"confidence {e['confidence']:.2f}; seen in "
                    + (", ".join(e["frames"][:20]) or "no view"),
                )
                box.on_update(lambda _, k=k, box=box: self.set_visible(k, box.value))
                self.checkboxes[k] = box

    # actions (also called from tests) -----------------------------------------------------

    def set_color_mode(self, mode: str) -> None:
        """Recolour points and splats by `label`, `confidence` or `RGB`."""
        if mode not in COLOR_MODES:
            raise InputError(None, f"colour mode must be one of {COLOR_MODES}, got {mode!r}")
        with self.state.lock:
            self.state.color_mode = mode
            pts = self.data.points
            colors = _colors(mode, pts["rgb"], pts["label"], pts["confidence"])
            for k, node in self.point_nodes.items():
                node.colors = colors[self.point_index[k]]
            if self.data.splats is not None:
                sp = self.data.splats
                colors = _colors(mode, sp["rgb"], sp["label"], sp["confidence"])
                for k, node in self.splat_nodes.items():
                    node.rgbs = colors[self.splat_index[k]]

    def set_point_size(self, size: float) -> None:
        for node in self.point_nodes.values():
            node.point_size = float(size)

    def set_visible(self, k: int, visible: bool) -> None:
        """Show or hide instance `k` (0: the unlabeled points) in points and splats."""
        with self.state.lock:
            (self.state.hidden.discard if visible else self.state.hidden.add)(k)
            for nodes in (self.point_nodes, self.splat_nodes):
                if k in nodes:
                    nodes[k].visible = visible

    def isolate(self, k: int | None) -> None:
        """Show only instance `k` (None: show every instance again)."""
        for j in self.ids:
            show = k is None or j == k
            if j in self.checkboxes:
                self.checkboxes[j].value = show  # runs set_visible through the checkbox callback
            else:
                self.set_visible(j, show)

    def set_camera_images(self, mode: str) -> None:
        """Show the frustums' images as `RGB` or under their label maps (`labels`, from OUT/masks)."""
        if mode not in CAMERA_IMAGES:
            raise InputError(None, f"camera images must be one of {CAMERA_IMAGES}, got {mode!r}")
        for name, handle in self.frustums.items():
            images = self.camera_images[name]
            if mode not in images:
                images[mode] = _label_thumbnail(
                    images["RGB"], self.data.out_dir / "masks" / f"{name}.png"
                )
            handle.image = images[mode] if images[mode] is not None else images["RGB"]

    def camera_hit(self, ray_origin: np.ndarray, ray_direction: np.ndarray) -> float | None:
        """Distance along a click ray to the first drawn frustum it passes through (None: none).

        A frustum is taken as its optical axis from the camera centre to its image plane, with
        a radius of half its size: close enough to the drawn pyramid for a click.
        """
        if not self.frustums or not self.cameras_root.visible:
            return None
        d = np.asarray(ray_direction, np.float64)
        d = d / max(np.linalg.norm(d), 1e-12)
        o = np.asarray(ray_origin, np.float64)
        best = None
        for f in self.frames:
            T = f["T_world_camera"]
            a, b = T[:3, 3], T[:3, 3] + T[:3, 2] * self.frustum_scale
            t, dist = _ray_segment(o, d, a, b)
            if t > 0 and dist <= 0.5 * self.frustum_scale and (best is None or t < best):
                best = t
        return best

    def click(self, ray_origin: np.ndarray, ray_direction: np.ndarray) -> int | None:
        """A click in the 3D view: select the instance hit, unless a camera frustum is in front of
        it (that click is the frustum's own). Returns the instance selected, or None."""
        k, t_point = self._pick(ray_origin, ray_direction)
        if k is None:
            return None
        t_camera = self.camera_hit(ray_origin, ray_direction)
        if t_camera is not None and t_camera < t_point:
            return None
        self.select(k)
        return k

    def pick(self, ray_origin: np.ndarray, ray_direction: np.ndarray) -> int | None:
        """The labeled instance a click ray hits, among the visible instances (of the splats
        when only they are shown, else of the points)."""
        return self._pick(ray_origin, ray_direction)[0]

    def _pick(self, ray_origin, ray_direction) -> tuple[int | None, float]:
        """(instance hit or None, distance along the ray to the point hit)."""
        if (
            self.splats_root is not None
            and self.splats_root.visible
            and not self.points_root.visible
        ):
            xyz, label, index = (
                self.data.splats["centers"],
                self.data.splats["label"],
                self.splat_index,
            )
        else:
            xyz, label, index = self.data.points["xyz"], self.data.points["label"], self.point_index
        with self.state.lock:
            visible = [k for k in index if k != 0 and k not in self.state.hidden]
        if not visible:
            return None, np.inf
        idx = np.concatenate([index[k] for k in visible])
        hit = pick_point(ray_origin, ray_direction, xyz[idx], tolerance=2.0 * self.spacing)
        if hit is None:
            return None, np.inf
        d = np.asarray(ray_direction, np.float64)
        t = float(
            (xyz[idx[hit]] - np.asarray(ray_origin, np.float64))
            @ (d / max(np.linalg.norm(d), 1e-12))
        )
        return int(label[idx[hit]]), t

    def select(self, k: int | None) -> None:
        """Inspect instance `k` (None: nothing): list the views that saw it, light up their frustums."""
        if k is not None and k not in self.instance_by_id:
            raise InputError(None, f"no instance {k} in this output")
        value = _NO_SELECTION if k is None else str(k)
        if self.inspect.value != value:
            self.inspect.value = value  # its callback applies the selection, for every client
        else:
            self._apply_selection(k)

    def _apply_selection(self, k: int | None) -> None:
        with self.state.lock:
            self.state.selected = k
            seen = set(self.instance_by_id[k]["frames"]) if k is not None else set()
            colour = (
                tuple(int(c) for c in label_colors(np.array([k]))[0]) if k is not None else None
            )
            for name, handle in self.frustums.items():
                hit = name in seen
                handle.color = colour if hit else _FRUSTUM_IDLE
                handle.thickness = (0.05 if hit else 0.015) * self.frustum_scale
            self.info.content = _small(self._info_html(k))

    def show_view(self, name: str) -> None:
        """List the instances the view `name` saw (a click on its frustum)."""
        ids = self.views_by_frame.get(name, [])
        swatches = " ".join(_swatch(k) + f"{k}" for k in ids) or "none"
        self.view_info.content = _small(
            f"<p><b>view {_esc(name)}</b> saw {len(ids)} instances: {swatches}</p>"
        )

    def _info_html(self, k: int | None) -> str:
        if k is None:
            return (
                "<p>Click a point in the scene or pick an instance to see which views saw it.</p>"
            )
        e = self.instance_by_id[k]
        frames = e["frames"]
        listed = ", ".join(_esc(f) for f in frames[:60]) + (
            f", ... ({len(frames) - 60} more)" if len(frames) > 60 else ""
        )
        return (
            f"<p>{_swatch(k)}<b>instance {k}</b>: {e['points']:,} points, confidence {e['confidence']:.2f}<br>"
            f"seen in {len(frames)} of {len(self.data.frames)} views (highlighted): {listed or 'none'}</p>"
        )


def _ray_segment(o: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(t along the unit ray o + t d, distance) of the closest approach of the ray's line to
    segment ab: the perpendicular part of a + s (b - a) - o is linear in s, its length squared a
    parabola, minimised over s in [0, 1]."""
    w0, ab = a - o, b - a
    pw0, pab = w0 - (w0 @ d) * d, ab - (ab @ d) * d
    denom = float(pab @ pab)
    s = 0.0 if denom < 1e-18 else float(np.clip(-(pw0 @ pab) / denom, 0.0, 1.0))
    p = a + s * ab
    return float((p - o) @ d), float(np.linalg.norm(pw0 + s * pab))


def _label_thumbnail(image: np.ndarray | None, labels_path: Path) -> np.ndarray | None:
    """A frustum's image under its label map (None when either is missing)."""
    from PIL import Image

    from lift3d.io import read_label_map
    from lift3d.viewers.overlay import overlay

    if image is None or not labels_path.is_file():
        return None
    try:
        labels = read_label_map(labels_path)
    except Lift3dError:
        return None
    h, w = image.shape[:2]
    labels = np.asarray(
        Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)
    )
    return overlay(image, labels, alpha=0.6, edges=False)


def _esc(text: str) -> str:
    import html

    return html.escape(str(text))


def _small(html_text: str) -> str:
    return f'<div style="font-size:0.8em;line-height:1.4;padding:0 0.5em">{html_text}</div>'


def _swatch(k: int) -> str:
    r, g, b = (int(c) for c in label_colors(np.array([k]))[0])
    return (
        f'<span style="display:inline-block;width:0.9em;height:0.9em;margin-right:0.3em;'
        f'vertical-align:middle;background:rgb({r},{g},{b})"></span>'
    )


def serve(
    out_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    block: bool = True,
    max_points: int = 2_000_000,
    max_cameras: int = 200,
):
    """Serve the viewer of an output folder and print its URL.

    Args:
        out_dir: output folder of `lift3d segment` (needs points.ply and cameras.json).
        host: interface to bind (`0.0.0.0` to reach it from other machines).
        port: port to serve on (0: any free port).
        block: serve until Ctrl-C, then stop; False returns at once with the server running
            (stop it with `server.stop()`).
        max_points: larger clouds are randomly subsampled.
        max_cameras: at most this many frustums are drawn.

    Returns:
        The running `viser.ViserServer` (its `lift3d_viewer` attribute is the
        `LabeledSceneViewer`).

    Raises:
        InputError: the folder is not a lift3d output, or the port is out of range.
        Lift3dError: the port is already in use.
    """
    data = load_output(out_dir, max_points=max_points)
    check_port_free(host, port)
    import viser

    server = viser.ViserServer(host=host, port=port, label=f"lift3d: {data.name}", verbose=False)
    if port != 0 and server.get_port() != port:
        # taken between our check and viser's bind: viser moved to the next port on its own
        server.stop()
        raise Lift3dError(f"port {port} on {host} is already in use: choose another with --port")
    try:
        server.lift3d_viewer = LabeledSceneViewer(server, data, max_cameras=max_cameras)
    except BaseException:
        server.stop()
        raise
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{shown}:{server.get_port()}"
    # the URL is the command's output (a person opens it), hence print rather than log
    print(f"lift3d view: {data.out_dir} at {url}", flush=True)
    if block:
        try:
            server.sleep_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return server


def main(argv: list[str] | None = None) -> int:
    """`python -m lift3d.viewers.web OUT [--host H] [--port P]` (what `lift3d view` runs)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m lift3d.viewers.web", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="output folder of `lift3d segment`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(args.out, host=args.host, port=args.port, block=True)
    except Lift3dError as e:
        print(f"lift3d view: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
