"""An X server (Xvfb) and a system tray for the tray's tests, and a way to look at icons.

Icons are observed the way a desktop sees them: the docked window's WM_NAME is the
title, and its pixels (read back from the X server) are the picture.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from PIL import Image
from Xlib import X, display
from Xlib.ext import xtest

ROOT = Path(__file__).resolve().parents[2]


def _read_line(proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        proc.kill()
        proc.stdout.close()
        raise RuntimeError(f"{what} did not start (exit status {proc.wait()})")
    return line


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.terminate()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


class Xvfb:
    """A virtual X server on the first free display number (Xvfb picks it: -displayfd)."""

    def __init__(self) -> None:
        self.display = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Xvfb:
        self._proc = subprocess.Popen(
            # -noreset: the server would otherwise reset, dropping connections, whenever its
            # last client leaves, as the tray's own probes do.
            ["Xvfb", "-displayfd", "1", "-screen", "0", "640x200x24", "-nolisten", "tcp", "-noreset"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.display = ":" + _read_line(self._proc, "Xvfb")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        _end(self._proc)


class SystemTray:
    """tests/tray/systray_host.py running on `display_name`: it docks every icon that asks."""

    def __init__(self, display_name: str) -> None:
        self.display_name = display_name
        self.window_id = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._x: display.Display | None = None

    def __enter__(self) -> SystemTray:
        env = {**os.environ, "DISPLAY": self.display_name}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tray.systray_host"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        line = _read_line(self._proc, "the test system tray")
        assert line.startswith("ready "), line
        self.window_id = int(line.split()[1])
        self._x = display.Display(self.display_name)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._x is not None:
            self._x.close()
        _end(self._proc)

    @property
    def x(self) -> display.Display:
        assert self._x is not None, "use SystemTray as a context manager"
        return self._x

    def icons(self) -> list[int]:
        """The ids of the icon windows docked so far."""
        host = self.x.create_resource_object("window", self.window_id)
        return [w.id for w in host.query_tree().children]

    def title(self, icon: int) -> str | None:
        """The icon's title: its window's WM_NAME."""
        return self.x.create_resource_object("window", icon).get_wm_name()  # type: ignore[no-any-return]

    def picture(self, icon: int) -> Image.Image:
        """The icon's pixels as the X server holds them."""
        window = self.x.create_resource_object("window", icon)
        geometry = window.get_geometry()
        raw = window.get_image(0, 0, geometry.width, geometry.height, X.ZPixmap, 0xFFFFFFFF)
        return Image.frombytes("RGB", (geometry.width, geometry.height), raw.data, "raw", "BGRX")

    def click(self, icon: int) -> None:
        """Left-click the middle of the icon, as a user's pointer would (XTEST)."""
        window = self.x.create_resource_object("window", icon)
        geometry = window.get_geometry()
        where = self.x.screen().root.translate_coords(
            window, geometry.width // 2, geometry.height // 2
        )
        xtest.fake_input(self.x, X.MotionNotify, x=where.x, y=where.y)
        xtest.fake_input(self.x, X.ButtonPress, 1)
        xtest.fake_input(self.x, X.ButtonRelease, 1)
        self.x.sync()
