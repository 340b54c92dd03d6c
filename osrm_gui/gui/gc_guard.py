"""Python's cyclic garbage collector, run only on the GUI thread.

Automatic collection fires in whichever thread happens to allocate. When that is a
worker thread (model loading allocates a lot) and the garbage holds Qt objects, Qt
destroys them off their thread and the process can crash. So automatic collection is
switched off and the GUI thread collects on a timer, as pyqtgraph recommends.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class MainThreadCollector(QObject):
    def __init__(self, interval_ms: int = 1000, parent: QObject | None = None):
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer = QTimer(self, interval=interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start()

    def collect_due(self) -> None:
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if all(counts[g] > self._thresholds[g] for g in range(generation + 1)):
                gc.collect(generation)
                return

    def stop(self) -> None:
        """Collect everything now, on this thread, and give automatic collection back."""
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()
