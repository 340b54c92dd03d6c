"""Run history of the loaded adapters: every scored point in a table, and a Pareto view
(two tasks, or a task against the average) whose points load back into the merge."""

from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QLabel, QPushButton, QSplitter, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.explore.history import HistoryPoint, pareto_front, to_csv
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import flow

AVERAGE = "average"


def _value(point: HistoryPoint, quantity: str) -> float:
    return point.average if quantity == AVERAGE else point.scores.get(quantity, float("nan"))


class ParetoPlot(pg.PlotWidget):
    """Scatter of history points on two quantities; the non-dominated ones joined by a line."""

    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setObjectName("paretoPlot")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.scatter = pg.ScatterPlotItem(size=8, pen=pg.mkPen(None), brush=pg.mkBrush(31, 119, 180, 120), hoverable=True,
                                          tip=self._tip)
        self.front_line = pg.PlotDataItem(pen=pg.mkPen((214, 39, 40), width=2), symbol="o", symbolSize=9,
                                          symbolBrush=(214, 39, 40), name="Pareto front")
        self.addItem(self.scatter)
        self.addItem(self.front_line)
        for axis in ("left", "bottom"):
            self.getAxis(axis).enableAutoSIPrefix(False)  # metrics read as 0.82, not 820 × 0.001
        self.points: list[HistoryPoint] = []
        self.front: list[int] = []

    def show_points(self, points: list[HistoryPoint], x: str, y: str) -> None:
        self.points = points
        xy = [(_value(p, x), _value(p, y)) for p in points]
        self.scatter.setData(pos=xy, data=list(range(len(points))))
        self.front = pareto_front(xy)
        ordered = sorted(self.front, key=lambda i: xy[i][0])
        self.front_line.setData([xy[i][0] for i in ordered], [xy[i][1] for i in ordered])
        self.setLabel("bottom", x)
        self.setLabel("left", y)

    def _tip(self, x, y, data):
        point = self.points[data]
        coefficients = ", ".join(f"{n}={c:g}" for n, c in zip(point.adapters, point.coefficients))
        return f"#{point.id} {point.method} λ={point.lam:g}\n{coefficients}\n{x:.3f}, {y:.3f}"


class HistoryPanel(QWidget):
    COLUMNS = ("id", "when", "kind", "split", "method", "λ", "coefficients")

    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.points: list[HistoryPoint] = []
        self.x = QComboBox()
        self.x.setObjectName("paretoX")
        self.y = QComboBox()
        self.y.setObjectName("paretoY")
        self.full_only = QCheckBox("full evaluations only")
        self.full_only.setToolTip("Preview points score a subset of each task; full ones score everything")
        self.load = QPushButton("Load into merge")
        self.load.setObjectName("loadPoint")
        self.load.setToolTip("Set the method, parameters, λ and coefficients of the selected point (undo with Ctrl+Z)")
        self.load.setEnabled(False)
        save_csv = QPushButton("Export CSV…")
        save_csv.clicked.connect(self._save_csv)
        self.summary = QLabel()
        self.summary.setObjectName("historySummary")
        self.summary.setWordWrap(True)  # a long history path must not widen the tab
        controls = flow(("x", self.x), ("y", self.y), self.full_only, self.load, save_csv)  # wraps in a narrow window
        self.table = QTableWidget()
        self.table.setObjectName("historyTable")
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.plot = ParetoPlot()
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)

        self.x.currentIndexChanged.connect(self._draw)
        self.y.currentIndexChanged.connect(self._draw)
        self.full_only.toggled.connect(self.refresh)
        self.table.itemSelectionChanged.connect(lambda: self.load.setEnabled(self.selected() is not None))
        self.table.itemDoubleClicked.connect(lambda _item: self.load_selected())
        self.load.clicked.connect(self.load_selected)
        self.plot.scatter.sigClicked.connect(self._clicked)
        for signal in (model.historyChanged, model.adaptersChanged, model.baseChanged, model.sweepFinished):
            signal.connect(self.refresh)
        self.refresh()

    # -- data ------------------------------------------------------------------
    def refresh(self, *_args) -> None:
        points = self.model.history_points()
        self.points = [p for p in points if p.kind == "full"] if self.full_only.isChecked() else points
        tasks = list(dict.fromkeys(t for p in self.points for t in p.scores))
        for combo, default in ((self.x, tasks[0] if tasks else AVERAGE), (self.y, AVERAGE if len(tasks) < 2 else tasks[1])):
            # until there were tasks to pick, the combo only held "average": take the default then
            current = combo.currentText() if combo.count() > 1 else default
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([AVERAGE, *tasks])
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)
        self._fill_table(tasks)
        self._draw()

    def _fill_table(self, tasks: list[str]) -> None:
        self.table.setSortingEnabled(False)
        self.table.clear()
        headers = [*self.COLUMNS, *tasks, AVERAGE]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(self.points))
        for row, point in enumerate(self.points):
            cells = [
                point.id, time.strftime("%m-%d %H:%M:%S", time.localtime(point.created)), point.kind, point.split, point.method,
                point.lam, " ".join(f"{c:.3g}" for c in point.coefficients), *(point.scores.get(t) for t in tasks), point.average,
            ]
            for column, value in enumerate(cells):
                item = QTableWidgetItem()
                if isinstance(value, float):
                    item.setData(Qt.DisplayRole, round(value, 4))
                elif isinstance(value, int):
                    item.setData(Qt.DisplayRole, value)
                else:
                    item.setText("" if value is None else str(value))
                item.setData(Qt.UserRole, row)
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def _draw(self) -> None:
        x, y = self.x.currentText() or AVERAGE, self.y.currentText() or AVERAGE
        self.plot.show_points(self.points, x, y)
        front = len(self.plot.front)
        history = self.model.session.history  # opened by history_points(), or by nobody yet: never opened here
        where = history.path if history is not None else "no run history"
        self.summary.setText(f"{len(self.points)} points of these adapters in {where}"
                             f" — {front} on the Pareto front of {x} and {y}" if self.model.session.base is not None else "")

    # -- selection ---------------------------------------------------------------
    def selected(self) -> HistoryPoint | None:
        items = self.table.selectedItems()
        return self.points[items[0].data(Qt.UserRole)] if items else None

    def select_point(self, index: int) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.UserRole) == index:
                self.table.selectRow(row)
                return

    def _clicked(self, _item, spots, *_args) -> None:
        if spots:
            self.select_point(spots[0].data())

    def load_selected(self) -> None:
        point = self.selected()
        if point is not None:
            self.model.apply_point(point)

    def _save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export run history", "history.csv", "CSV (*.csv)")
        if path:
            atomic_write_text(path, to_csv(self.points), force=True)
