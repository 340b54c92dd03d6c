"""The X server's own mouse: moves and button presses that reach every client the way a
user's do (not Qt events posted inside one process). Through xdotool when it is installed
(Debian: xdotool), else straight through the XTEST extension (Debian: libxtst6)."""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess


class Pointer:
    def move(self, x: int, y: int) -> None:
        raise NotImplementedError

    def press(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class Xdotool(Pointer):
    name = "xdotool"

    def _run(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], check=True, timeout=10)

    def move(self, x: int, y: int) -> None:
        self._run("mousemove", str(round(x)), str(round(y)))

    def press(self) -> None:
        self._run("mousedown", "1")

    def release(self) -> None:
        self._run("mouseup", "1")


class XTest(Pointer):
    name = "XTEST"

    def __init__(self, x11_path: str, xtst_path: str):
        self.x11 = ctypes.CDLL(x11_path)
        self.xtst = ctypes.CDLL(xtst_path)
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x11.XFlush.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
        self.xtst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        self.display = self.x11.XOpenDisplay(None)  # $DISPLAY
        if not self.display:
            raise RuntimeError("cannot open the X display named by $DISPLAY")

    def move(self, x: int, y: int) -> None:
        self.xtst.XTestFakeMotionEvent(self.display, -1, round(x), round(y), 0)
        self.x11.XFlush(self.display)

    def _button(self, down: bool) -> None:
        self.xtst.XTestFakeButtonEvent(self.display, 1, int(down), 0)
        self.x11.XFlush(self.display)

    def press(self) -> None:
        self._button(True)

    def release(self) -> None:
        self._button(False)


def real_pointer() -> Pointer | None:
    """xdotool, else XTEST; None when neither is there."""
    if shutil.which("xdotool"):
        return Xdotool()
    x11, xtst = ctypes.util.find_library("X11"), ctypes.util.find_library("Xtst")
    return XTest(x11, xtst) if x11 and xtst else None
