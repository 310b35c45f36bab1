"""The `Scene` and `Frame` types: the data contract every stage of the flow reads.

Conventions (DESIGN.md): OpenCV cameras (x right, y down, z forward), `T_world_camera`
(cam2world) 4x4, metres, world-frame pointmaps, pixel (u, v) = (column, row) with integer
pixel centres, float32 geometry.

A scene is read at one *working resolution* (W, H): every frame's image, intrinsics, depth and
pointmap are given at that size, so label maps, pointmaps and matches line up pixel for pixel.
Frames are loaded lazily through a loader callable: a 5,000-frame scan never sits in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class RawFrame:
    """One frame as a reader returns it, at the sizes found on disk.

    Attributes:
        name: frame name, the stem of its colour file (label maps are named after it).
        image: [H0, W0, 3] uint8 RGB.
        K: [3, 3] intrinsics of `image`.
        T_world_camera: [4, 4] cam2world, or None when the scene has no poses yet.
        depth: [h, w] float32 metres (0 = missing), may differ in size from `image`.
        K_depth: [3, 3] intrinsics of `depth` (same optical centre as the colour camera).
    """

    name: str
    image: np.ndarray
    K: np.ndarray
    T_world_camera: np.ndarray | None = None
    depth: np.ndarray | None = None
    K_depth: np.ndarray | None = None


@dataclass
class Frame:
    """One view at the scene's working resolution (W, H).

    Attributes:
        name: frame name.
        index: position of the frame in its scene.
        image: [H, W, 3] uint8 RGB.
        K: [3, 3] float32 intrinsics at the working resolution.
        T_world_camera: [4, 4] float32 cam2world, or None without geometry.
        depth: [H, W] float32 metres aligned to the image (0 = missing), or None.
        pointmap: [H, W, 3] float32 world points, or None without geometry.
        conf: [H, W] float32 confidence of each point (1 for sensor depth).
        valid: [H, W] bool, pixels whose 3D point is known.
    """

    name: str
    index: int
    image: np.ndarray
    K: np.ndarray
    T_world_camera: np.ndarray | None = None
    depth: np.ndarray | None = None
    pointmap: np.ndarray | None = None
    conf: np.ndarray | None = None
    valid: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frame."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def has_geometry(self) -> bool:
        return self.pointmap is not None and self.valid is not None


MatchFn = Callable[[Frame, Frame], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Scene:
    """A sequence of views of one scene, loaded lazily.

    Attributes:
        name: scene name (e.g. `scene0000_00`).
        root: the folder (or file) it was read from.
        frame_names: names of the frames kept, in order.
        size: (W, H) working resolution.
        load_frame: callable `(index) -> Frame` at the working resolution.
        kind: which reader made it (`scannet`, `sens`, `images`, `colmap`, ...).
        mesh_path: the scan's own mesh when it has one (ScanNet `*_vh_clean_2.ply`).
        match_fn: correspondence provider `(frame_i, frame_j) -> (uv_i, uv_j, conf)`;
            defaults to exact reprojection when the scene has depth and poses.
        meta: free-form facts about the source (recorded in run.json).
    """

    name: str
    root: Path
    frame_names: list[str]
    size: tuple[int, int]
    load_frame: Callable[[int], Frame]
    kind: str
    has_depth: bool = False
    has_poses: bool = False
    mesh_path: Path | None = None
    match_fn: MatchFn | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_names)

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        return self.load_frame(i % len(self))

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    @property
    def has_geometry(self) -> bool:
        return self.has_depth and self.has_poses

    def matches(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense correspondences from frame i to frame j.

        Returns:
            uv_i: [M, 2] float32 pixels (u, v) in frame i.
            uv_j: [M, 2] float32 pixels (u, v) in frame j.
            conf: [M] float32 confidence in [0, 1].
        """
        return self.match_frames(self[i], self[j])

    def match_frames(
        self, frame_i: Frame, frame_j: Frame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`matches` for frames already loaded (the tracker holds them; no second read)."""
        if self.match_fn is None:
            raise InputError(
                self.root,
                "this scene has no correspondence provider: it needs depth + poses "
                "(reprojection) or a MASt3R reconstruction (--recon mast3r)",
            )
        return self.match_fn(frame_i, frame_j)

    def subset(self, indices: Sequence[int]) -> Scene:
        """A scene holding only the given frames (in the given order)."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self):
                raise InputError(self.root, f"frame index {i} out of range (0..{len(self) - 1})")
        parent_load = self.load_frame

        def load(k: int) -> Frame:
            frame = parent_load(indices[k])
            frame.index = k
            return frame

        sub = Scene(
            name=self.name,
            root=self.root,
            frame_names=[self.frame_names[i] for i in indices],
            size=self.size,
            load_frame=load,
            kind=self.kind,
            has_depth=self.has_depth,
            has_poses=self.has_poses,
            mesh_path=self.mesh_path,
            match_fn=self.match_fn,
            meta=dict(self.meta),
        )
        return sub


def parse_frame_range(spec: str, n: int) -> list[int]:
    """Frame indices from a `START:STOP:STEP` slice spec (any part may be empty), or one frame
    from a single index `I` (Python indexing: -1 is the last)."""
    parts = spec.split(":")
    if len(parts) > 3 or not spec:
        raise InputError(None, f"--frames {spec!r}: expected START:STOP:STEP, e.g. 0:300:10")
    try:
        vals = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise InputError(
            None, f"--frames {spec!r}: START, STOP and STEP must be integers"
        ) from None
    if len(vals) == 1:  # one index, not a slice from it
        if vals[0] is None or not -n <= vals[0] < n:
            raise InputError(None, f"--frames {spec!r}: the scene has frames 0..{n - 1}")
        return [range(n)[vals[0]]]
    vals += [None] * (3 - len(vals))
    if vals[2] is not None and vals[2] <= 0:
        raise InputError(None, f"--frames {spec!r}: STEP must be positive")
    return list(range(n))[slice(*vals)]


def select_frames(scene: Scene, *, frames: str | None, max_frames: int | None) -> Scene:
    """The frame subset of `--frames START:STOP:STEP` then `--max-frames` (evenly spaced)."""
    idx = list(range(len(scene)))
    if frames:
        idx = parse_frame_range(frames, len(scene))
    if max_frames is not None:
        if max_frames <= 0:
            raise InputError(None, f"--max-frames must be positive, got {max_frames}")
        if len(idx) > max_frames:
            # first and last kept; halves round up (not numpy's round-half-to-even)
            pick = np.floor(np.linspace(0, len(idx) - 1, max_frames) + 0.5).astype(int)
            idx = [idx[k] for k in pick]
    if not idx:
        raise InputError(scene.root, "the frame selection is empty")
    return scene if idx == list(range(len(scene))) else scene.subset(idx)
