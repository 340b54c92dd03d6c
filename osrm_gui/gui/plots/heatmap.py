"""A labelled heatmap of any matrix: strings on both axes, rows read top to bottom,
NaN cells in grey, a colour bar, the numbers in the cells of small matrices, the cell
under the mouse read out, PNG/SVG/CSV export. Knows nothing of what the numbers mean."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QSize, Qt
from PySide6.QtGui import QFontMetrics, QTextOption
from PySide6.QtWidgets import QGraphicsRectItem

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.gui.plots.image_export import export_plot

NAN_COLOUR = (200, 200, 200)
ROW_LABEL_PX = 160  # longer row labels are elided in the middle; the read-out shows them whole
ROW_LABEL_SHARE = 0.22  # … and in a narrow plot, to this share of its width
TITLE_PX = 30  # pyqtgraph's title row: one line


class Heatmap(pg.PlotWidget):
    def __init__(self, parent=None, colormap: str = "viridis", number_format: str = "{:.2f}", annotate_up_to: int = 8):
        super().__init__(parent, background="w")
        self.number_format = number_format
        self.annotate_up_to = annotate_up_to
        self._matrix = np.zeros((0, 0))
        self._rows: list[str] = []
        self._cols: list[str] = []
        self._tick_text: dict[str, list[str]] = {"left": [], "bottom": []}
        self._cell_texts: list[pg.TextItem] = []
        self.setMouseEnabled(x=False, y=False)
        self.setMenuEnabled(False)
        self.hideButtons()
        self.plotItem.invertY(True)  # row 0 at the top, as a matrix is read
        # room above the plot for half a line: the colour bar's top label is never cut, with or without a title
        self.plotItem.layout.setContentsMargins(2, 8, 2, 2)
        for name in ("left", "bottom"):
            self.getAxis(name).enableAutoSIPrefix(False)
        # NaN cells are transparent in the image, so this grey shows through exactly there
        self.nan_background = QGraphicsRectItem(0, 0, 0, 0)
        self.nan_background.setBrush(pg.mkBrush(NAN_COLOUR))
        self.nan_background.setPen(pg.mkPen(None))
        self.nan_background.setZValue(-10)
        self.addItem(self.nan_background)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.addItem(self.image)
        self.colorbar = pg.ColorBarItem(colorMap=pg.colormap.get(colormap), interactive=False, width=15, pen="k")
        self.colorbar.setImageItem(self.image, insert_in=self.plotItem)
        self.readout = pg.TextItem("", color=(0, 0, 0), fill=pg.mkBrush(255, 255, 255, 230), border=pg.mkPen(120, 120, 120))
        self.readout.setZValue(20)
        self.addItem(self.readout)
        self.readout.hide()
        self.scene().sigMouseMoved.connect(self._moved)
        self.plotItem.vb.sigResized.connect(self._update_ticks)
        # a long title wraps instead of widening the plot past the widget's edge
        plot = self.plotItem
        plot.layout.removeItem(plot.titleLabel)
        plot.scene().removeItem(plot.titleLabel)
        plot.titleLabel = WrappingTitle(parent=plot)
        plot.layout.addItem(plot.titleLabel, 0, 1)
        plot.setTitle(None)

    # -- content -------------------------------------------------------------------
    def set_matrix(self, matrix: np.ndarray, row_labels, col_labels, title: str = "", levels: tuple[float, float] | None = None) -> None:
        """Show ``matrix`` (rows × columns) with a label per row and column; ``levels``
        (low, high) fixes the colour scale, else it spans the finite values."""
        matrix = np.asarray(matrix, dtype=float)
        if matrix.ndim != 2 or matrix.shape != (len(row_labels), len(col_labels)):
            raise ValueError(f"a {matrix.shape} matrix needs {matrix.shape[0] if matrix.ndim == 2 else '?'} row and column labels, "
                             f"got {len(row_labels)} and {len(col_labels)}")
        self._matrix = matrix.copy()
        self._rows, self._cols = [str(r) for r in row_labels], [str(c) for c in col_labels]
        rows, cols = matrix.shape
        low, high = levels if levels is not None else _finite_range(matrix)
        if matrix.size:
            self.image.setImage(matrix, levels=(low, high))
            self.image.setRect(0, 0, cols, rows)
        else:
            self.image.clear()
        self.colorbar.setLevels((low, high))
        self.nan_background.setRect(0, 0, cols, rows)
        self.setTitle(title, color="k")
        self._fit_title(self.width())
        self.setXRange(0, max(cols, 1), padding=0)
        self.setYRange(0, max(rows, 1), padding=0)
        self._annotate()
        self._update_ticks()
        self.readout.hide()

    def clear_matrix(self, title: str = "") -> None:
        self.set_matrix(np.zeros((0, 0)), [], [], title)

    def set_axis_titles(self, rows: str = "", columns: str = "") -> None:
        self.setLabel("left", rows)
        self.setLabel("bottom", columns)

    def set_colormap(self, name: str) -> None:
        self.colorbar.setColorMap(pg.colormap.get(name))
        self._annotate()

    # -- what is shown (for tests and callers) --------------------------------------
    def matrix(self) -> np.ndarray:
        return self._matrix.copy()

    def cell_value(self, i: int, j: int) -> float:
        return float(self._matrix[i, j])

    def labels(self) -> tuple[list[str], list[str]]:
        """The full row and column labels."""
        return list(self._rows), list(self._cols)

    def tick_labels(self, axis: str) -> list[str]:
        """The texts on the "left" (rows) or "bottom" (columns) axis, as drawn (elided, or "" when skipped)."""
        return list(self._tick_text[axis])

    def cell_texts(self) -> list[list[str]]:
        """The numbers drawn in the cells, row by row ([] when the matrix is too big for them)."""
        if not self._cell_texts:
            return []
        cols = self._matrix.shape[1]
        texts = [item.toPlainText() for item in self._cell_texts]
        return [texts[r * cols:(r + 1) * cols] for r in range(self._matrix.shape[0])]

    def readout_text(self) -> str:
        return self.readout.toPlainText() if self.readout.isVisible() else ""

    # -- fitting the widget ----------------------------------------------------------
    def resizeEvent(self, event) -> None:
        # the title fits the new width before the plot is laid out at it; pyqtgraph also calls
        # this itself, with None, and once before the plot exists
        plot = getattr(self, "plotItem", None)
        if plot is not None and isinstance(plot.titleLabel, WrappingTitle):
            self._fit_title(event.size().width() if event is not None else self.width())
        super().resizeEvent(event)

    def minimumSizeHint(self) -> QSize:
        return least_plot_size(self, QSize(200, 160))

    def _fit_title(self, width: int) -> None:
        label = self.plotItem.titleLabel
        if not label.isVisible():
            return
        view = self.plotItem.vb
        beside = self.plotItem.width() - view.width() if view.width() > 0 else 200.0  # the axes and colour bar
        label.wrap_to(max(60.0, width - beside - 8))
        height = max(TITLE_PX, math.ceil(label.itemRect().height()))
        label.setMaximumHeight(height)
        self.plotItem.layout.setRowFixedHeight(0, height)
        self.updateGeometry()

    # -- drawing -------------------------------------------------------------------
    def _format(self, value: float) -> str:
        return "–" if math.isnan(value) else self.number_format.format(value)

    def _annotate(self) -> None:
        for item in self._cell_texts:
            self.removeItem(item)
        self._cell_texts = []
        rows, cols = self._matrix.shape
        if not rows or not cols or rows > self.annotate_up_to or cols > self.annotate_up_to:
            return
        low, high = self.colorbar.levels()
        span = (high - low) or 1.0
        colours = self.colorbar.colorMap().map(np.clip((np.nan_to_num(self._matrix.ravel(), nan=low) - low) / span, 0, 1), mode="float")
        for k, value in enumerate(self._matrix.ravel()):
            r, g, b = colours[k][:3] if not math.isnan(value) else np.array(NAN_COLOUR) / 255
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # light text where the cell is dark
            item = pg.TextItem(self._format(value), color=(255, 255, 255) if dark else (0, 0, 0), anchor=(0.5, 0.5))
            item.setPos(k % cols + 0.5, k // cols + 0.5)
            item.setZValue(5)
            self.addItem(item)
            self._cell_texts.append(item)

    def _update_ticks(self) -> None:
        view = self.plotItem.vb
        rows, cols = self._matrix.shape
        row_room = min(ROW_LABEL_PX, max(48, ROW_LABEL_SHARE * self.width()))
        self._tick_text["left"] = _fit(self._rows, row_room, view.height() / max(rows, 1), self.getAxis("left"), along=False)
        self._tick_text["bottom"] = _fit(self._cols, view.width() / max(cols, 1), None, self.getAxis("bottom"), along=True)
        for name in ("left", "bottom"):
            self.getAxis(name).setTicks([[(i + 0.5, text) for i, text in enumerate(self._tick_text[name]) if text]])

    def _cell_at(self, scene_pos) -> tuple[int, int] | None:
        if not self.plotItem.vb.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.plotItem.vb.mapSceneToView(scene_pos)
        i, j = math.floor(point.y()), math.floor(point.x())
        rows, cols = self._matrix.shape
        return (i, j) if 0 <= i < rows and 0 <= j < cols else None

    def _moved(self, scene_pos) -> None:
        cell = self._cell_at(scene_pos)
        if cell is None:
            self.readout.hide()
            return
        self.show_readout(*cell)

    def show_readout(self, i: int, j: int) -> None:
        """The read-out box of cell (i, j): full labels and the value."""
        value = self.cell_value(i, j)
        number = "no value (NaN)" if math.isnan(value) else f"{value:.4g}"
        self.readout.setText(f"{self._rows[i]} × {self._cols[j]}\n{number}")
        rows, cols = self._matrix.shape
        # open towards the middle, so the box stays inside the plot at the edges
        self.readout.setAnchor((1.0 if j >= cols / 2 else 0.0, 1.0 if i >= rows / 2 else 0.0))
        self.readout.setPos(QPointF(j + 0.5, i + 0.5))
        self.readout.show()

    # -- export --------------------------------------------------------------------
    def export_image(self, path: str) -> None:
        """PNG, or SVG when ``path`` ends in .svg."""
        self.readout.hide()  # a stray hover is not part of the figure
        export_plot(self, path)

    def export_csv(self, path: str) -> None:
        """The matrix with its labels: a header of column labels, then one row per row label."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["", *self._cols])
        for label, values in zip(self._rows, self._matrix):
            writer.writerow([label, *(repr(float(v)) for v in values)])
        atomic_write_text(path, buffer.getvalue(), force=True)


def least_plot_size(plot: pg.PlotWidget, floor: QSize) -> QSize:
    """The least size ``plot`` draws its axes, title and colour bar in, and at least ``floor``:
    as a widget's minimumSizeHint, layouts give it no less, so pyqtgraph never draws past its edge."""
    least = plot.plotItem.effectiveSizeHint(Qt.MinimumSize)
    return QSize(math.ceil(least.width()), math.ceil(least.height())).expandedTo(floor)


class WrappingTitle(pg.LabelItem):
    """A plot title that wraps (anywhere: layer names have no spaces) to the width it is given,
    instead of demanding its one-line width from the plot's layout."""

    def __init__(self, parent=None):
        super().__init__("", size="11pt", parent=parent)  # as pyqtgraph's own title
        option = QTextOption(Qt.AlignHCenter)
        option.setWrapMode(QTextOption.WrapAtWordBoundaryOrAnywhere)
        self.item.document().setDefaultTextOption(option)

    def wrap_to(self, width: float) -> None:
        self.item.setTextWidth(-1)
        if self.item.document().idealWidth() > width:
            self.item.setTextWidth(width)
        self.updateMin()
        self.resizeEvent(None)  # centred again

    def updateMin(self) -> None:
        super().updateMin()
        self.setMinimumWidth(min(self.minimumWidth(), 60.0))  # narrower, it wraps (see wrap_to)


def _finite_range(matrix: np.ndarray) -> tuple[float, float]:
    finite = matrix[np.isfinite(matrix)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _fit(labels: list[str], room_px: float, cell_px: float | None, axis: pg.AxisItem, along: bool) -> list[str]:
    """Labels elided to the room they have; when cells are too small for even a few
    characters (or a line of text), only every k-th cell keeps its label."""
    if not labels:
        return []
    cell = room_px if along else cell_px
    if cell is None or cell <= 0:  # not laid out yet: fitted again once it is
        return list(labels)
    metrics = QFontMetrics(axis.style["tickFont"] or axis.font())
    if along:  # room for the labels as they are, or for a few characters and the ellipsis
        widest = max(metrics.horizontalAdvance(label) for label in labels)
        need = min(widest, metrics.horizontalAdvance("MMMM…")) + metrics.horizontalAdvance("  ")
    else:
        need = metrics.height()
    step = max(1, math.ceil(need / cell))
    n, spaces = len(labels), metrics.horizontalAdvance("  ")

    def room(k: int) -> float:
        if not along:
            return room_px
        # centred on its cell: the skipped cells' room, but no further than the axis' ends
        # (pyqtgraph drops a label that would stick out of its axis)
        return min(step, 2 * min(k + 0.5, n - k - 0.5)) * room_px - spaces

    return [metrics.elidedText(label, Qt.ElideMiddle, int(room(k))) if k % step == 0 else "" for k, label in enumerate(labels)]
