"""What makes the app's plots read like a scientific tool's: axes in plain numbers with room for
their labels' descenders, legends beside the data instead of over it, and hover read-outs on a
background that go away with the mouse."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QGraphicsGridLayout

AXES = ("left", "bottom", "right", "top")
GAP = 20  # pixels between a legend entry and the next one in its row
EDGE_ROOM = 16  # pixels right of the view: half of a tick label such as "1.0"


class PlotAxis(pg.AxisItem):
    """An axis in plain numbers — never "global λ (x0.001)" with ticks 0–800, which pyqtgraph's SI
    prefix shows while the values so far are small — whose horizontal form reserves its tick labels'
    full height: pyqtgraph reserves 80 % of it, which cuts the last line's g, p and y of labels on
    two lines (a task and its adapter) at the plot's edge or under what lies below."""

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def _updateHeight(self):
        super()._updateHeight()
        if self.fixedHeight is None and self.isVisible() and self.style["showValues"]:
            reserved = self.textHeight if self.style["autoExpandTextSpace"] else self.style["tickTextHeight"]
            height = self.maximumHeight() + math.ceil(reserved / 0.8 - reserved) + 2  # the text's whole height, and a gap
            self.setMaximumHeight(height)
            self.setMinimumHeight(height)


def plot_axes(**custom: pg.AxisItem) -> dict[str, pg.AxisItem]:
    """``axisItems`` for a PlotWidget or PlotItem: plain left and bottom axes (or ``custom`` ones)."""
    return {"left": PlotAxis("left"), "bottom": PlotAxis("bottom"), **custom}


def plain_numbers(plot_item: pg.PlotItem) -> None:
    """No SI prefix on any of the plot's axes, hidden ones included (shown later, they stay plain), and
    room beyond the view's right and top edges for the half of a tick label that hangs over them
    (else "1.0" at the right end of a narrow plot reads "1")."""
    for name in AXES:
        plot_item.getAxis(name).enableAutoSIPrefix(False)
    plot_item.layout.setColumnMinimumWidth(2, EDGE_ROOM)
    plot_item.layout.setRowMinimumHeight(1, EDGE_ROOM // 2)


def fit_label(text: str, width: float, font: QFont) -> str:
    """A category's tick label that fits ``width`` pixels: each line that is too wide is broken
    after its ": " (\"alone: moral-foundation\" becomes two lines), and a part still too wide is
    shortened in the middle with an ellipsis, so that neighbouring labels never run into each other."""
    metrics = QFontMetrics(font)
    room = max(int(width), metrics.horizontalAdvance("…") + 1)
    lines = []
    for line in text.split("\n"):
        parts = [line]
        if metrics.horizontalAdvance(line) > room and ": " in line:
            head, tail = line.split(": ", 1)
            parts = [f"{head}:", tail]
        # Qt's eliding measures a little wider than horizontalAdvance: only parts that do not fit go through it
        lines += [part if metrics.horizontalAdvance(part) <= room else metrics.elidedText(part, Qt.ElideMiddle, room) for part in parts]
    return "\n".join(lines)


class LegendBelow(pg.LegendItem):
    """A legend in a row under the plot, where it hides no data; as many columns as the plot's
    width holds, so a narrow plot gets more rows rather than a legend wider than itself."""

    def __init__(self, plot_widget: pg.PlotWidget):
        super().__init__(colCount=1, labelTextColor=(0, 0, 0), labelTextSize="8pt")
        self._widget = plot_widget
        plot_item = plot_widget.getPlotItem()
        plot_item.layout.addItem(self, 4, 1)
        plot_item.legend = self  # PlotItem.plot(..., name=…) adds its line here
        plot_widget.installEventFilter(self)  # the widget's width, not the plot's: a wide legend widens the plot

    def eventFilter(self, watched, event):
        if event.type() == QEvent.Resize:
            self.fit()
        return False

    def addItem(self, item, name):
        super().addItem(item, name)
        self.fit()

    def fit(self) -> None:
        if not self.items:
            return
        widest = max(sample.boundingRect().width() + label.item.boundingRect().width() for sample, label in self.items) + GAP
        # the view starts right of the left axis; keep clear of the right edge
        room = self._widget.width() - self._widget.getPlotItem().getAxis("left").width() - 2 * EDGE_ROOM
        self.setColumnCount(max(1, min(len(self.items), int(max(room, widest) // widest))))

    def setColumnCount(self, columnCount):
        if columnCount != self.columnCount:
            self.columnCount = columnCount
            self._relayout()

    def _addItemToLayout(self, sample, label):
        self._relayout()

    def _relayout(self) -> None:
        """Entry i at row i // columns, column i % columns. (pyqtgraph's own re-layout keeps the grid's
        old columns, empty but spaced, so a legend with fewer columns stays as wide.)"""
        for i in reversed(range(self.layout.count())):
            self.layout.removeAt(i)
        grid = QGraphicsGridLayout()
        grid.setVerticalSpacing(0)
        grid.setHorizontalSpacing(5)
        for i, (sample, label) in enumerate(self.items):
            row, column = divmod(i, self.columnCount)
            grid.addItem(sample, row, 2 * column, alignment=Qt.AlignVCenter)
            grid.addItem(label, row, 2 * column + 1)
            grid.setColumnSpacing(2 * column + 1, GAP)
        self.layout = grid
        self.setLayout(grid)
        self.rowCount = -(-len(self.items) // self.columnCount)
        self.updateSize()


class _HideOnLeave(QObject):
    def __init__(self, widget, item):
        super().__init__(widget)
        self._item = item
        widget.installEventFilter(self)

    def eventFilter(self, watched, event):
        if event.type() == QEvent.Leave:
            self._item.hide()
        return False


class HoverReadout(pg.TextItem):
    """Numbers under the mouse, on a framed background, kept inside the view (beside the point,
    on the side with room), hidden when the mouse leaves ``plot_widget``."""

    def __init__(self, plot_widget: pg.PlotWidget):
        super().__init__("", color=(0, 0, 0), fill=pg.mkBrush(255, 255, 255, 235), border=pg.mkPen(120, 120, 120))
        self.setZValue(20)
        plot_widget.addItem(self, ignoreBounds=True)
        self.hide()
        self._view = plot_widget.plotItem.vb
        self._filter = _HideOnLeave(plot_widget, self)

    def show_at(self, x: float, y: float, text: str) -> None:
        (x0, x1), (y0, y1) = self._view.viewRange()
        # toward the middle of the view from the point, so the text never leaves it
        self.setAnchor((0 if x <= (x0 + x1) / 2 else 1, 1 if y <= (y0 + y1) / 2 else 0))
        self.setText(text)
        self.setPos(x, y)
        self.show()
