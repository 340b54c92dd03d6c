"""Saving a pyqtgraph plot as PNG or SVG."""

from __future__ import annotations


def export_plot(widget, path: str) -> None:
    """PNG at twice the widget's width (at least 800 px), or SVG when ``path`` ends in .svg."""
    path = str(path)
    if path.lower().endswith(".svg"):
        save_svg(widget, path)
        return
    from pyqtgraph.exporters import ImageExporter

    exporter = ImageExporter(widget.plotItem)
    exporter.parameters()["width"] = max(800, int(widget.width() * 2))
    exporter.export(path)


def save_svg(widget, path: str) -> None:
    """Vector export through Qt's own SVG generator (pyqtgraph's SVG exporter
    cannot parse the path data that Qt 6.12 writes)."""
    from PySide6.QtCore import QRect, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    generator = QSvgGenerator()
    generator.setFileName(path)
    generator.setSize(QSize(widget.width(), widget.height()))
    generator.setViewBox(QRect(0, 0, widget.width(), widget.height()))
    generator.setTitle("osrm-gui plot")
    painter = QPainter(generator)
    try:
        widget.render(painter)
    finally:
        painter.end()
