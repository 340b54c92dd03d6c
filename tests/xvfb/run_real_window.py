"""The app as a user meets it, in a real X window (xcb under Xvfb, not offscreen), driven by
the X server's own mouse:

1. opens the demo as ``osrm-gui`` does and waits for the first preview;
2. drags the global λ slider and waits for the preview at the new λ;
3. clicks every tab (and the Automatic tab's inner tabs) at 1280×800, computes the Subspaces
   heatmap and a short λ sweep (by clicks), saves a screenshot of each and lists what is cut off;
4. shrinks the window to 1024×700 and lists what is cut off there;
5. drops an adapter folder, then a plain file, through real XDND from a drag source
   window in another process: the table is highlighted while the drag hovers, the folder
   is added, the file is refused as "not an adapter folder".

    xvfb-run -a -s "-screen 0 1280x800x24" python tests/xvfb/run_real_window.py --out DIR [--docs]

Exits 0 when everything worked and, at 1280×800, nothing is cut off and no panel needs a
scroll bar (at 1024×700 panels may scroll; what is cut off there is reported); 1 otherwise;
77 when this X server cannot be driven (neither xdotool nor libXtst). With --docs, DIR gets
the README's screenshots only: docs/tab-*.png at 1280×800 and the lit drop target."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clipping import clipped, scrolling_panels
from pointer import real_pointer

LARGE, SMALL = (1280, 800), (1024, 700)
LIMIT_S = 240  # a hang prints every thread's stack and exits, rather than stalling CI
SKIP = 77


class Failed(Exception):
    pass


class Driver:
    def __init__(self, app, window, pointer, out: Path, docs: bool):
        self.app, self.window, self.model = app, window, window.model
        self.pointer, self.out, self.docs = pointer, out, docs
        self.log: dict = {"pointer": pointer.name, "seconds": {}, "clipped": {}, "clipped_small": {}, "scrolls_small": {}}
        self.started = time.monotonic()

    # -- time and events ----------------------------------------------------------------
    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.005)

    def wait(self, predicate, what: str, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
            self.app.processEvents()
            time.sleep(0.01)

    def idle(self) -> bool:
        m = self.model
        return not m.jobs.busy and not m._debounce.isActive() and not m._loaders

    def mark(self, step: str) -> None:
        self.log["seconds"][step] = round(time.monotonic() - self.started, 1)
        print(f"[{self.log['seconds'][step]:6.1f} s] {step}", flush=True)

    # -- the real mouse -------------------------------------------------------------------
    def glide(self, start, end, steps: int = 12, pause: float = 0.03) -> None:
        """The pointer from ``start`` to ``end`` in ``steps`` moves, the app answering in between."""
        for k in range(1, steps + 1):
            self.pointer.move(start.x() + (end.x() - start.x()) * k / steps, start.y() + (end.y() - start.y()) * k / steps)
            self.pump(pause)

    def click(self, widget, point=None) -> None:
        target = widget.mapToGlobal(point if point is not None else widget.rect().center())
        self.pointer.move(target.x(), target.y())
        self.pump(0.05)
        self.pointer.press()
        self.pump(0.03)
        self.pointer.release()
        self.pump(0.1)

    def grab(self, name: str, size=LARGE) -> None:
        from PySide6.QtGui import QGuiApplication

        self.pump(0.3)
        path = self.out / f"{name}.png"
        QGuiApplication.primaryScreen().grabWindow(0).copy(0, 0, *size).save(str(path))

    # -- the steps ----------------------------------------------------------------------
    def first_preview(self) -> None:
        self.wait(lambda: self.model.result is not None and self.idle(), "the first preview", timeout=180)
        self.mark("first preview")

    def drag_lambda(self, to: float = 0.8) -> None:
        from PySide6.QtCore import QPoint
        from PySide6.QtWidgets import QStyle, QStyleOptionSlider

        slider = self.window.merge.lam.slider
        before = self.model.session.lam
        option = QStyleOptionSlider()
        slider.initStyleOption(option)
        handle = slider.style().subControlRect(QStyle.CC_Slider, option, QStyle.SC_SliderHandle, slider)
        groove = slider.style().subControlRect(QStyle.CC_Slider, option, QStyle.SC_SliderGroove, slider)
        span = groove.width() - handle.width()
        start = slider.mapToGlobal(handle.center())
        steps = (to - before) * 100  # slider positions (merge_panel.SLIDER_STEPS per unit)
        end = start + QPoint(round(steps * span / (slider.maximum() - slider.minimum())), 0)
        self.pointer.move(start.x(), start.y())
        self.pump(0.1)
        self.pointer.press()
        self.pump(0.1)
        if not slider.isSliderDown():
            raise Failed("pressing the λ slider's handle did not grab it")
        self.glide(start, end, steps=15, pause=0.05)
        self.pointer.release()
        self.wait(lambda: self.idle() and abs(self.model.result.spec.lam - self.model.session.lam) < 1e-9, "the preview at the dragged λ")
        lam = self.model.session.lam
        if abs(lam - to) > 0.05:
            raise Failed(f"dragging the λ slider to {to} set λ = {lam}")
        self.log["lambda"] = [before, lam]
        self.mark(f"λ dragged from {before} to {lam}, previewed")

    def pages(self):
        """(file name, tab index, inner tab index or None) for every view."""
        tabs, automatic = self.window.tabs, self.window.automatic
        for i in range(tabs.count()):
            slug = tabs.tabText(i).lower().replace(" ", "-")
            if tabs.widget(i) is automatic:
                for j in range(automatic.count()):
                    yield f"tab-{slug}-{automatic.tabText(j).lower()}", i, j
            else:
                yield f"tab-{slug}", i, None

    def show_page(self, index: int, inner: int | None, with_mouse: bool) -> None:
        tabs, automatic = self.window.tabs, self.window.automatic
        if with_mouse:
            self.click(tabs.tabBar(), tabs.tabBar().tabRect(index).center())
            if inner is not None:
                self.click(automatic.tabBar(), automatic.tabBar().tabRect(inner).center())
        else:
            tabs.setCurrentIndex(index)
            if inner is not None:
                automatic.setCurrentIndex(inner)
        self.pump(0.2)
        shown = tabs.currentIndex() == index and (inner is None or automatic.currentIndex() == inner)
        if not shown:
            raise Failed(f"clicking tab {tabs.tabText(index)!r} did not show it")

    def fill(self, index: int) -> None:
        """Numbers in the views that are empty until asked: the Subspaces heatmap, a sweep."""
        page = self.window.tabs.widget(index)
        if page is self.window.subspaces and page.result is None:
            self.click(page.compute_button)
            self.wait(lambda: self.idle() and page.result is not None, "the subspace analysis")
            self.mark("subspace analysis computed")
        elif page is self.window.sweeps and not self.model.session.sweeps:
            page.count.setValue(5 if self.docs else 3)  # a picture for the README; enough to draw for the check
            self.click(page.run)
            self.wait(lambda: self.idle() and self.model.session.sweeps, "a λ sweep", timeout=180)
            self.mark("λ sweep done")

    def every_tab(self) -> None:
        for name, index, inner in self.pages():
            self.show_page(index, inner, with_mouse=True)
            self.fill(index)
            self.pump(0.3)
            self.grab(name)
            self.log["clipped"][name] = clipped(self.window) + scrolling_panels(self.window)  # all of it in view at this size
        self.mark("every tab at 1280×800")

    def every_tab_small(self) -> None:
        self.window.resize(*SMALL)
        self.pump(0.5)
        if (self.window.width(), self.window.height()) != SMALL:
            self.log["clipped_small"]["window"] = [f"the window cannot shrink to {SMALL}: it stays {self.window.width()}×{self.window.height()}"]
        for name, index, inner in self.pages():
            self.show_page(index, inner, with_mouse=False)
            if not self.docs:
                self.grab(f"{name}-1024x700", SMALL)
            self.log["clipped_small"][name] = clipped(self.window)
            self.log["scrolls_small"][name] = scrolling_panels(self.window)  # allowed: scroll where needed
        self.window.resize(*LARGE)
        self.window.tabs.setCurrentIndex(0)
        self.pump(0.5)
        self.mark("every tab at 1024×700")

    def drop(self, path: Path, shot: str | None = None) -> str:
        """Drag ``path`` from a window of another process onto the adapters table; what the drag source says."""
        source_at = (LARGE[0] - 200, LARGE[1] - 110)
        helper = subprocess.Popen([sys.executable, str(HERE / "drag_source.py"), *map(str, source_at), str(path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line.strip()) for line in helper.stdout], daemon=True).start()
        said: list[str] = []

        def heard(word: str) -> bool:
            while not lines.empty():
                said.append(lines.get())
            return any(line.startswith(word) for line in said)

        try:
            self.wait(lambda: heard("ready"), "the drag source window", timeout=60)
            self.pump(0.3)
            from PySide6.QtCore import QPoint

            start = QPoint(source_at[0] + 85, source_at[1] + 30)
            table = self.window.adapters.table
            over = table.mapToGlobal(table.rect().center())
            self.pointer.move(start.x(), start.y())
            self.pump(0.1)
            self.pointer.press()
            self.pump(0.1)
            self.glide(start, start + QPoint(-20, -20), steps=4)  # past the drag distance: the drag starts
            self.glide(start + QPoint(-20, -20), over, steps=20, pause=0.05)
            self.glide(over, over + QPoint(8, 8), steps=4, pause=0.05)
            self.wait(lambda: self.window.adapters.drop_count > 0, "the adapters table to light up under the drag", timeout=10)
            if shot:
                self.grab(shot)
            self.pointer.release()
            self.wait(lambda: heard("dropped"), "the end of the drag", timeout=30)
            self.wait(lambda: self.window.adapters.drop_count == 0, "the highlight to go", timeout=10)
        finally:
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()
        return next(line for line in said if line.startswith("dropped"))

    def drop_adapter_and_file(self) -> None:
        from osrm_gui.core.inputs.demo_set import demo_adapter_paths, demo_families

        folder = demo_adapter_paths(family=demo_families()[1])[0]
        rows = self.window.adapters.table.rowCount()
        said = self.drop(folder, shot="tab-drop-target")
        if said != "dropped CopyAction":
            raise Failed(f"the adapter folder's drop was not taken: {said}")
        self.wait(lambda: self.window.adapters.table.rowCount() == rows + 1 and self.idle(), "the dropped adapter in the table")
        self.mark(f"adapter {folder.name} ({folder.parent.name}) dropped through XDND and added")

        plain = folder / "adapter_model.safetensors"
        self.drop(plain)
        self.wait(lambda: "not an adapter folder" in self.window.adapters.refusals.text(), "the plain file's refusal", timeout=30)
        self.log["refusal"] = self.window.adapters.refusals.text().splitlines()[-1]
        self.mark("a plain file dropped through XDND, refused as not an adapter folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where the screenshots go (default: a temporary folder)")
    parser.add_argument("--docs", action="store_true", help="keep only the README's screenshots (1280×800 tabs, the drop target)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="osrm-gui-real-window-"))
    out.mkdir(parents=True, exist_ok=True)
    faulthandler.dump_traceback_later(LIMIT_S, exit=True)

    pointer = real_pointer()
    if pointer is None:
        print("no way to drive the X pointer (install xdotool, or libxtst6)")
        return SKIP
    # throw-away settings, run history and caches: the run must not depend on (or change) anyone's
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for variable in ("OSRM_GUI_DATA", "OSRM_GUI_CACHE"):
        os.environ[variable] = tempfile.mkdtemp(prefix="osrm-gui-real-window-")
    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp(prefix="osrm-gui-real-window-"))
    app = QApplication(sys.argv[:1])
    if QGuiApplication.platformName() != "xcb":
        print(f"needs a real X display (xcb), got {QGuiApplication.platformName()!r}: run it under xvfb-run")
        return SKIP
    screen = QGuiApplication.primaryScreen().geometry()
    if screen.width() < LARGE[0] or screen.height() < LARGE[1]:
        print(f"needs a screen of at least {LARGE[0]}×{LARGE[1]}, got {screen.width()}×{screen.height()}")
        return SKIP

    from osrm_gui.gui.app import build_window, parse_args
    from osrm_gui.gui.gc_guard import MainThreadCollector

    collector = MainThreadCollector(parent=app)
    window = build_window(parse_args([]))  # the demo, as `osrm-gui` opens
    window.resize(*LARGE)
    window.move(0, 0)
    window.show()
    driver = Driver(app, window, pointer, out, args.docs)
    failure = None
    try:
        driver.first_preview()
        driver.drag_lambda()
        driver.every_tab()
        driver.every_tab_small()
        driver.drop_adapter_and_file()
    except Failed as exc:
        failure = str(exc)
    finally:
        window.model.jobs.cancel()
        window.close()
        collector.stop()
    log = driver.log
    log["failure"] = failure
    log["clipped"] = {name: lines for name, lines in log["clipped"].items() if lines}
    log["clipped_small"] = {name: lines for name, lines in log["clipped_small"].items() if lines}
    log["scrolls_small"] = {name: lines for name, lines in log["scrolls_small"].items() if lines}
    log["screenshots"] = str(out)
    print(json.dumps(log, indent=1, ensure_ascii=False))
    if failure or log["clipped"]:
        print("FAILED:", failure or f"cut off at 1280×800 in {', '.join(log['clipped'])}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
