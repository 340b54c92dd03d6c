"""A small window, in a process of its own, that drags the files named on its command line
the way a file manager does: press on it and move, and a QDrag carrying their URLs starts,
which the X server hands to whatever window is under the pointer through XDND.

    python drag_source.py X Y FILE...

It prints ``ready`` once shown at (X, Y), then ``dropped ACTION`` when the drag ends
(``IgnoreAction``: nobody took it), and exits."""

from __future__ import annotations

import sys

from PySide6.QtCore import QMimeData, QPoint, Qt, QTimer, QUrl
from PySide6.QtGui import QDrag
from PySide6.QtWidgets import QApplication, QLabel

SIZE = (170, 60)
GIVE_UP_MS = 90_000


class DragSource(QLabel):
    def __init__(self, paths: list[str]):
        super().__init__("drag me:\n" + "\n".join(p.rsplit("/", 1)[-1] for p in paths))
        self.paths = paths
        self.setWindowTitle("drag source")
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet("background: #ffe9a8; border: 1px solid #886600")
        self.setFixedSize(*SIZE)
        self.pressed_at: QPoint | None = None

    def mousePressEvent(self, event) -> None:
        self.pressed_at = event.position().toPoint()

    def mouseMoveEvent(self, event) -> None:
        if self.pressed_at is None or (event.position().toPoint() - self.pressed_at).manhattanLength() < QApplication.startDragDistance():
            return
        self.pressed_at = None
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(path) for path in self.paths])
        drag = QDrag(self)
        drag.setMimeData(mime)
        action = drag.exec(Qt.CopyAction)
        print(f"dropped {action.name}", flush=True)
        QTimer.singleShot(200, QApplication.quit)  # answer the target's last requests before leaving


def main(argv: list[str]) -> int:
    x, y, *paths = argv
    app = QApplication(sys.argv[:1])
    source = DragSource(paths)
    source.move(int(x), int(y))
    source.show()
    QTimer.singleShot(300, lambda: print("ready", flush=True))
    QTimer.singleShot(GIVE_UP_MS, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
