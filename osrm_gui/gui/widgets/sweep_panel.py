"""Sweep controls (what to vary, over which range) around the sweep plot."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from ...core.sweep import LAMBDA, sweep_values
from ..plots.sweep_plot import SweepPlot
from ..state import SessionModel


class SweepPanel(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.target = QComboBox()
        self.target.setObjectName("sweepTarget")
        self.start = QDoubleSpinBox(minimum=-5, maximum=5, value=0.0, singleStep=0.1)
        self.stop = QDoubleSpinBox(minimum=-5, maximum=5, value=1.0, singleStep=0.1)
        self.count = QSpinBox(minimum=2, maximum=101, value=11)
        self.run = QPushButton("Run sweep")
        self.run.setObjectName("runSweep")
        self.run.clicked.connect(self.start_sweep)
        save_image = QPushButton("Save plot…")
        save_image.clicked.connect(self._save_image)
        save_csv = QPushButton("Save CSV…")
        save_csv.clicked.connect(self._save_csv)
        controls = QHBoxLayout()
        for label, widget in (("Vary", self.target), ("from", self.start), ("to", self.stop), ("points", self.count)):
            controls.addWidget(QLabel(label))
            controls.addWidget(widget)
        controls.addWidget(self.run)
        controls.addStretch()
        controls.addWidget(save_image)
        controls.addWidget(save_csv)
        self.plot = SweepPlot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.plot, 1)
        model.adaptersChanged.connect(self._fill_targets)
        model.baseChanged.connect(self._fill_targets)
        model.mergeChanged.connect(self._update_marker)
        model.sweepStarted.connect(self.plot.start)
        model.sweepPoint.connect(self.plot.add_point)
        model.sweepFinished.connect(self._finished)
        self.target.currentIndexChanged.connect(self._update_marker)
        self._fill_targets()

    def _fill_targets(self) -> None:
        current = self.target.currentData()
        self.target.blockSignals(True)
        self.target.clear()
        self.target.addItem("global λ", LAMBDA)
        for slot in self.model.session.active():
            self.target.addItem(f"coefficient of {slot.label}", slot.label)
        index = self.target.findData(current)
        self.target.setCurrentIndex(max(index, 0))
        self.target.blockSignals(False)
        self._update_marker()

    def current_value(self) -> float:
        target = self.target.currentData()
        if target == LAMBDA:
            return self.model.session.lam
        for slot in self.model.slots:
            if slot.label == target:
                return slot.coefficient
        return 0.0

    def _update_marker(self) -> None:
        self.plot.set_current(self.current_value())

    def start_sweep(self) -> None:
        values = sweep_values(self.start.value(), self.stop.value(), self.count.value())
        self.model.sweep(self.target.currentData(), values)

    def _finished(self, result) -> None:
        if self.plot.result is None or self.plot.result.points != result.points:
            self.plot.start(result)
        self._update_marker()

    def _save_image(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "sweep.png", "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.plot.export_image(path)

    def _save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save numbers", "sweep.csv", "CSV (*.csv)")
        if path:
            self.plot.export_csv(path)
