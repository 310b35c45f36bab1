"""Look at a page as a person would: headless Chromium, driven over the DevTools protocol.

`capture_page` opens a URL, records every console error and uncaught exception from the first
request on, polls screenshots until the page looks ready (a caller's test on the pixels, e.g.
"the instance colours appear"), and returns the last screenshot. The viewer's browser test and
the screenshot in `docs/` both use it: test tooling, not part of the package
(`python -m tests.viewers.browser OUT PNG` from the repository root makes the screenshot).

Chromium runs with `--disable-gpu`: WebGL then runs on SwiftShader (software), which the
`--enable-unsafe-swiftshader` flag opts into without a deprecation warning in the console.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import Lift3dError, NotInstalledError

logger = logging.getLogger(__name__)

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--enable-unsafe-swiftshader",
    "--hide-scrollbars",
    "--mute-audio",
)
#: closes viser's notifications (e.g. "software WebGL rendering detected") before a screenshot
_DISMISS_NOTIFICATIONS = (
    "document.querySelectorAll('.mantine-Notification-closeButton, .mantine-Notification-root button')"
    ".forEach(b => b.click()); true"
)


@dataclass
class PageCapture:
    """What a headless browser saw of a page.

    Attributes:
        screenshot: [H, W, 3] uint8, the last screenshot taken.
        ready: whether the caller's `ready` test passed before the timeout.
        seconds: from navigation to the last screenshot.
        errors: console errors, uncaught exceptions and failed loads, one line each.
        messages: every console message and log entry, `level: text`.
        value: the last value of the caller's `expression` (e.g. the page's text), or None.
    """

    screenshot: np.ndarray
    ready: bool
    seconds: float
    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    value: object = None


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) executable, or None."""
    for c in CHROMIUM_CANDIDATES:
        path = shutil.which(c)
        if path:
            return path
    return None


def _decode_png(data: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        return np.asarray(im.convert("RGB"))


class _DevTools:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    async def call(self, method: str, timeout_s: float = 20.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools call {method} got no answer in {timeout_s} s")
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise Lift3dError(f"DevTools {method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            self.events.append(msg)

    async def wait_event(self, method: str, timeout_s: float) -> bool:
        """Wait for an event (or find it among those already received); False on timeout."""
        if any(e.get("method") == method for e in self.events):
            return True
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                return False
            self.events.append(msg)
            if msg.get("method") == method:
                return True
        return False


def _event_lines(events: list[dict]) -> tuple[list[str], list[str]]:
    """(errors, messages) from Runtime and Log events."""
    errors, messages = [], []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            messages.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                errors.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            line = f"{entry.get('source')} {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".rstrip()
            messages.append(line)
            if entry.get("level") == "error":
                errors.append(line)
    return errors, messages


async def _capture(
    ws_url: str,
    url: str,
    size,
    timeout_s,
    ready,
    poll_s,
    dismiss_notifications,
    expression=None,
    ready_value=None,
) -> PageCapture:
    import websockets

    async with websockets.connect(ws_url, max_size=64 * 1024 * 1024) as ws:
        dt = _DevTools(ws)
        for domain in ("Runtime", "Log", "Page"):
            await dt.call(f"{domain}.enable")
        await dt.call(
            "Emulation.setDeviceMetricsOverride",
            width=size[0],
            height=size[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        t0 = time.monotonic()
        await dt.call("Page.navigate", url=url)
        # screenshots before the new document is attached fail with "Not attached to an active page"
        await dt.wait_event("Page.loadEventFired", timeout_s)
        ok, shot, value = False, None, None
        while True:
            try:
                if dismiss_notifications:
                    await dt.call("Runtime.evaluate", expression=_DISMISS_NOTIFICATIONS)
                shot = _decode_png((await dt.call("Page.captureScreenshot", format="png"))["data"])
                if expression is not None:
                    result = await dt.call(
                        "Runtime.evaluate", expression=expression, returnByValue=True
                    )
                    value = result.get("result", {}).get("value")
            except Lift3dError:
                if time.monotonic() - t0 > timeout_s:
                    raise
                await asyncio.sleep(poll_s)
                continue
            ok = bool(ready(shot)) if ready is not None else True
            ok = ok and (bool(ready_value(value)) if ready_value is not None else True)
            if ok or time.monotonic() - t0 > timeout_s:
                break
            await asyncio.sleep(poll_s)
        seconds = time.monotonic() - t0
        errors, messages = _event_lines(dt.events)
        return PageCapture(shot, ok, seconds, errors, messages, value)


def capture_page(
    url: str,
    *,
    size: tuple[int, int] = (1280, 800),
    timeout_s: float = 30.0,
    ready: Callable[[np.ndarray], bool] | None = None,
    poll_s: float = 0.25,
    dismiss_notifications: bool = False,
    chromium: str | None = None,
    expression: str | None = None,
    ready_value: Callable[[object], bool] | None = None,
) -> PageCapture:
    """Open `url` in headless Chromium and screenshot it once `ready(screenshot)` holds.

    Args:
        url: the page.
        size: viewport (W, H) in CSS pixels (device scale factor 1).
        timeout_s: give up polling after this long (the capture then has `ready` False).
        ready: test on a [H, W, 3] screenshot; None takes the first screenshot after load.
        poll_s: pause between screenshots.
        dismiss_notifications: click away viser's notification toasts before each screenshot.
        chromium: the browser executable (default: `find_chromium()`).
        expression: JavaScript evaluated after each screenshot (e.g. `document.body.innerText`);
            its last value is the capture's `value`.
        ready_value: a further test, on that value: the page is ready when both hold.

    Raises:
        NotInstalledError: no Chromium found.
        Lift3dError: Chromium did not start its DevTools endpoint.
    """
    import urllib.request

    chromium = chromium or find_chromium()
    if chromium is None:
        raise NotInstalledError("headless screenshots need Chromium: apt-get install chromium")
    # Chromium's helper processes may still flush the profile while it is removed
    with tempfile.TemporaryDirectory(
        prefix="lift3d-chromium-", ignore_cleanup_errors=True
    ) as profile:
        log = open(Path(profile) / "chromium.log", "w+")
        proc = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            # Chromium writes its DevTools port to this file once it listens (port 0: any free)
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 20
            while not (port_file.is_file() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise Lift3dError(
                        f"Chromium did not start (exit {proc.poll()}): {log.read()[-500:]}"
                    )
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as r:
                targets = json.load(r)
            page = next(t for t in targets if t.get("type") == "page")
            return asyncio.run(
                _capture(
                    page["webSocketDebuggerUrl"],
                    url,
                    size,
                    timeout_s,
                    ready,
                    poll_s,
                    dismiss_notifications,
                    expression,
                    ready_value,
                )
            )
        finally:
            _stop_process_group(proc)
            log.close()


def _stop_process_group(proc: subprocess.Popen) -> None:
    """Stop Chromium and its helper processes (its own session, started above), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def colour_pixels(
    image: np.ndarray, colours: np.ndarray, *, tol: int = 12
) -> np.ndarray:  # [K] int
    """How many pixels of `image` lie within `tol` (per channel) of each of `colours` [K, 3]."""
    img = image.reshape(-1, 1, 3).astype(np.int16)
    close = np.all(np.abs(img - np.asarray(colours, np.int16)[None]) <= tol, axis=2)
    return close.sum(0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def screenshot_viewer(
    out_dir: str | Path,
    path: str | Path | None = None,
    *,
    size: tuple[int, int] = (1280, 800),
    select: int | None = None,
    timeout_s: float = 60.0,
    min_pixels: int = 30,
) -> PageCapture:
    """Serve `lift3d view` of an output, open it in headless Chromium, screenshot it.

    Ready when at least half the colours of the (up to 6) largest instances each cover
    `min_pixels` pixels.

    Args:
        out_dir: output folder of `lift3d segment`.
        path: PNG to write the screenshot to (atomically), or None.
        size: viewport (W, H).
        select: instance to inspect before the screenshot (its views' frustums light up).
        timeout_s: give up waiting for the scene after this long.
        min_pixels: pixels each instance colour must cover for the scene to count as drawn.
    """
    from lift3d.io import write_image
    from lift3d.viewers.palette import label_colors
    from lift3d.viewers.web import serve

    port = free_port()
    server = serve(out_dir, port=port, block=False)
    try:
        viewer = server.lift3d_viewer
        if select is not None:
            viewer.select(select)
        largest = sorted(viewer.data.instances, key=lambda e: -e["points"])[:6]
        colours = label_colors(np.array([e["id"] for e in largest], np.int64))

        def ready(image: np.ndarray) -> bool:
            # half of them: some instances may hide behind others from the initial viewpoint
            return bool(len(colours)) and 2 * int(
                (colour_pixels(image, colours) >= min_pixels).sum()
            ) >= len(colours)

        capture = capture_page(
            f"http://127.0.0.1:{port}",
            size=size,
            timeout_s=timeout_s,
            ready=ready,
            dismiss_notifications=True,
        )
    finally:
        server.stop()
    if path is not None:
        write_image(path, capture.screenshot)
    return capture


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.viewers.browser OUT PNG [--select ID]`: a screenshot of `lift3d view OUT`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.viewers.browser", description=main.__doc__
    )
    parser.add_argument("out", type=Path, help="output folder of `lift3d segment`")
    parser.add_argument("png", type=Path, help="screenshot to write")
    parser.add_argument(
        "--select", type=int, default=None, help="instance to inspect in the screenshot"
    )
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    args = parser.parse_args(argv)
    capture = screenshot_viewer(args.out, args.png, size=tuple(args.size), select=args.select)
    for line in capture.errors:
        logger.warning("console: %s", line)
    print(
        f"{args.png}: ready={capture.ready} after {capture.seconds:.1f} s, {len(capture.errors)} console errors"
    )
    return 0 if capture.ready else 1


if __name__ == "__main__":
    raise SystemExit(main())
