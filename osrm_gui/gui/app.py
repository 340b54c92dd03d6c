"""``osrm-gui`` entry point."""

from __future__ import annotations

import sys

COMING = (
    "<h2>osrm-gui</h2>"
    "<p>The desktop workbench (drag adapters in, merge with live coefficient sliders, "
    "per-task accuracy plots, export) is being built.</p>"
    "<p>Everything it will do already runs headless: try <code>osrm demo run</code>, "
    "<code>osrm merge --help</code> and <code>osrm export --help</code> in a terminal.</p>"
)


def main(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication(sys.argv if argv is None else argv)
    label = QLabel(COMING)
    label.setWordWrap(True)
    label.setMargin(24)
    label.setWindowTitle("osrm-gui")
    label.resize(520, 220)
    label.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
