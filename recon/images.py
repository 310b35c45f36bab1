"""Image-only scenes: a folder of images or a video file (frames, no geometry yet).

These scenes carry no depth and no poses: MASt3R supplies the geometry and the matches later.
Their intrinsics are a *placeholder* so that every `Frame` has a `K`: focal length
`1.2 * max(W, H)` (a field of view of about 45 degrees on the long side, typical of phone and
consumer cameras) and the principal point at the image centre. Nothing downstream may treat it
as a calibration; the MASt3R backend replaces it with the focal lengths it estimates.

The working resolution of image-only scenes defaults to the image size scaled so that the long
side is at most 640 pixels (MASt3R and SAM work well below that; larger frames only cost time).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.files import list_images, read_image
from lift3d.recon.geometry import make_frame
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 640
# the placeholder focal length, as a multiple of the long image side (see the module docstring)
PLACEHOLDER_FOCAL = 1.2


def capped_size(size: tuple[int, int], *, max_side: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """(W, H) scaled down (aspect kept, rounded to integers) so that max(W, H) <= max_side."""
    W, H = int(size[0]), int(size[1])
    if max(W, H) <= max_side:
        return W, H
    s = max_side / max(W, H)
    return max(1, round(W * s)), max(1, round(H * s))


def placeholder_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """[3, 3] float64 guessed intrinsics for an image of size (W, H) (see the module docstring)."""
    W, H = size
    f = PLACEHOLDER_FOCAL * max(W, H)
    # integer pixel centres: the centre of a W-pixel row is at (W - 1) / 2
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])


def log_dropped_frames(root: Path, dropped: list[str], why: str) -> None:
    """One warning naming every dropped frame (the first 20 of them)."""
    if dropped:
        logger.warning(
            "%s: dropped %d frame(s) %s: %s",
            root,
            len(dropped),
            why,
            ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""),
        )


def image_file_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file from its header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot decode image ({e.__class__.__name__}: {e})") from None


def read_image_folder(path: str | Path, *, size: tuple[int, int] | None = None) -> Scene:
    """Read a folder of images (or a folder holding `images/`) as an image-only scene.

    Frames are sorted numerically when their names are numbers (`2.jpg` before `10.jpg`) and
    named by their file stem. Images are decoded only when a frame is loaded.

    Args:
        path: the image folder, or a folder with an `images/` subfolder.
        size: working resolution (W, H); default: the first image's size, long side capped at 640.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "image folder not found")
    files = list_images(root)
    if not files and (root / "images").is_dir():
        files = list_images(root / "images")
    if not files:
        raise InputError(
            root, "no images found (expected .jpg/.png/... files, or an images/ subfolder)"
        )
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(
            root, f"several images share a name (label maps are named by it): {', '.join(dup[:10])}"
        )
    sizes = [image_file_size(f) for f in files]  # headers only
    if size is None:
        size = capped_size(sizes[0])
    stretched = [
        n for n, (w, h) in zip(names, sizes, strict=True) if abs(w / h - size[0] / size[1]) > 0.02
    ]
    if stretched:
        # one working resolution per scene (DESIGN.md): K is scaled with the image, so the
        # geometry stays right, but the pixels are stretched; rotate such photos beforehand
        logger.warning(
            "%s: %d image(s) differ in aspect ratio from the working size %dx%d and are stretched to it: %s",
            root,
            len(stretched),
            size[0],
            size[1],
            ", ".join(stretched[:20]) + (" ..." if len(stretched) > 20 else ""),
        )

    def load(i: int) -> Frame:
        image = read_image(files[i])
        K = placeholder_intrinsics((image.shape[1], image.shape[0]))
        return make_frame(RawFrame(name=names[i], image=image, K=K), i, size)

    return Scene(
        name=root.name,
        root=root,
        frame_names=names,
        size=tuple(size),
        load_frame=load,
        kind="images",
        meta={"intrinsics": "placeholder", "image_dir": str(files[0].parent)},
    )


class _VideoDecoder:
    """Decodes frames of one video on demand, cheapest when frames are asked for in order.

    A sequential read costs one decode; a jump seeks (OpenCV's FFmpeg backend seeks to the
    previous keyframe and decodes forward to the exact frame). The last few frames are kept in
    a small LRU cache because the tracker reads each frame more than once (frame i, then the
    pair (i, i+1)). The capture is opened lazily and guarded by a lock.
    """

    def __init__(self, path: Path, n_frames: int, *, cache_size: int = 4):
        self.path = path
        self.n_frames = n_frames
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._cap = None
        self._next = 0  # index of the frame the capture reads next

    def __call__(self, i: int) -> np.ndarray:
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i].copy()
            image = self._decode(i)
            self._cache[i] = image
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return image.copy()

    def _decode(self, i: int) -> np.ndarray:
        import cv2

        if self._cap is None:
            self._cap = cv2.VideoCapture(str(self.path))
            self._next = 0
            if not self._cap.isOpened():
                raise InputError(self.path, "cannot open the video (OpenCV/FFmpeg cannot read it)")
        if i != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            self._next = -1  # position unknown: seek next time
            raise InputError(self.path, f"cannot decode frame {i} of {self.n_frames}")
        self._next = i + 1
        return np.ascontiguousarray(bgr[..., ::-1])


def _count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (W, H)) of a video, exact even when the container's count is wrong."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(path, "cannot open the video (OpenCV/FFmpeg cannot read it)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        W = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        H = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if n > 0:
            # the container's count is usually exact; check that its last frame decodes
            cap.set(cv2.CAP_PROP_POS_FRAMES, n - 1)
            ok, _ = cap.read()
            if ok:
                ok2, _ = cap.read()
                if not ok2:
                    return n, (W, H)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        # the count is missing or wrong (some streams and containers): count by decoding once
        logger.info("%s: the container's frame count (%d) is unreliable; counting frames", path, n)
        n = 0
        while cap.grab():
            n += 1
        return n, (W, H)
    finally:
        cap.release()


def read_video(path: str | Path, *, size: tuple[int, int] | None = None) -> Scene:
    """Read a video file as an image-only scene, decoding frames on demand.

    Frames are named `000000`, `000001`, ... by their index in the video.

    Args:
        path: the video file (.mp4, .avi, .mov, .mkv, ...; anything OpenCV's FFmpeg reads).
        size: working resolution (W, H); default: the video's size, long side capped at 640.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "video file not found")
    n, (W, H) = _count_video_frames(path)
    if n == 0 or W <= 0 or H <= 0:
        raise InputError(path, "the video holds no decodable frame")
    if size is None:
        size = capped_size((W, H))
    decode = _VideoDecoder(path, n)
    names = [f"{i:06d}" for i in range(n)]

    def load(i: int) -> Frame:
        image = decode(i)
        K = placeholder_intrinsics((image.shape[1], image.shape[0]))
        return make_frame(RawFrame(name=names[i], image=image, K=K), i, size)

    return Scene(
        name=path.stem,
        root=path,
        frame_names=names,
        size=tuple(size),
        load_frame=load,
        kind="video",
        meta={"intrinsics": "placeholder", "video_size": [W, H]},
    )
