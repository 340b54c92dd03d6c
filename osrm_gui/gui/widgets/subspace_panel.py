"""Subspace analysis of the enabled adapters: a pairwise metric as a heatmap (all layers,
a layer type, or one layer), its off-diagonal mean against depth per layer type, and how
faithfully the current merge keeps the adapters' sum, layer by layer."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from osrm_gui.core.analysis import pairwise as analysis
from osrm_gui.core.atomic import atomic_write_text
from osrm_gui.core.tables import rows_to_csv
from osrm_gui.gui.plots.heatmap import Heatmap, least_plot_size
from osrm_gui.gui.plots.image_export import export_plot
from osrm_gui.gui.plots.sweep_plot import PALETTE
from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.fitting import ShareSplitter, flow

JOB_LABEL = "Subspace analysis"
LEVELS = {"cosine": (-1.0, 1.0), "interference": None}  # None: the data's range; the rest live in [0, 1]
COLORMAPS = {"cosine": "CET-D1"}  # signed: a diverging map, white at 0
DEPTH_MIN = QSize(220, 160)  # the layer plot has two axes to keep readable
STALE_TEXT = "⚠ Out of date: the adapters or the merge changed after this was computed. Press Compute to update."


def by_depth(values: dict[str, float]) -> tuple[list[float], list[float]]:
    """Layer name → value, as (block index, mean value of the layers at that index), sorted;
    layers without a block number are left out."""
    grouped: dict[int, list[float]] = {}
    for name, value in values.items():
        index = analysis.layer_index(name)
        if index is not None:
            grouped.setdefault(index, []).append(value)
    xs = sorted(grouped)
    return [float(x) for x in xs], [analysis.nan_mean(grouped[x]) for x in xs]


class DepthPlot(pg.PlotWidget):
    """The metric's off-diagonal mean against block index, a line per layer type; the merge's
    fidelity error per layer (dashed, same colours) on its own right-hand axis."""

    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setObjectName("subspaceDepthPlot")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setLabel("bottom", "layer (block index)")
        for name in ("left", "right", "bottom"):
            self.getAxis(name).enableAutoSIPrefix(False)
        self.legend = self.addLegend(offset=(-10, 10))
        # a second view box: fidelity errors and the metric have unrelated scales
        self.fidelity_view = pg.ViewBox()
        self.plotItem.showAxis("right")
        self.plotItem.scene().addItem(self.fidelity_view)
        self.getAxis("right").linkToView(self.fidelity_view)
        self.getAxis("right").setLabel("merge fidelity error (0 = lossless)")
        self.fidelity_view.setXLink(self.plotItem)
        self.plotItem.vb.sigResized.connect(lambda: self.fidelity_view.setGeometry(self.plotItem.vb.sceneBoundingRect()))
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.fidelity_curves: dict[str, pg.PlotDataItem] = {}

    def show_layers(self, per_layer: dict[str, np.ndarray], fidelity: dict[str, float], metric_label: str) -> None:
        for curve in self.curves.values():
            self.removeItem(curve)
        for curve in self.fidelity_curves.values():
            self.fidelity_view.removeItem(curve)
        self.legend.clear()
        self.curves, self.fidelity_curves = {}, {}
        self.setLabel("left", f"{metric_label} (off-diagonal mean)")
        kinds = sorted({analysis.layer_type(name) for name in per_layer})
        depths = by_depth({name: 0.0 for name in per_layer})[0]
        # whole block numbers while they fit; pyqtgraph's own ticks would put 0.2, 0.4 … between two blocks
        self.getAxis("bottom").setTicks([[(x, f"{x:.0f}") for x in depths]] if len(depths) <= 16 else None)
        for k, kind in enumerate(kinds):
            colour = PALETTE[k % len(PALETTE)]
            xs, ys = by_depth({n: analysis.off_diagonal_mean(m) for n, m in per_layer.items() if analysis.layer_type(n) == kind})
            self.curves[kind] = self.plot(xs, ys, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6, symbolBrush=colour, name=kind)
            fx, fy = by_depth({n: v for n, v in fidelity.items() if analysis.layer_type(n) == kind})
            if fx:
                curve = pg.PlotDataItem(fx, fy, pen=pg.mkPen(colour, width=2, style=Qt.DashLine), symbol="t", symbolSize=6, symbolBrush=colour)
                self.fidelity_view.addItem(curve)
                self.legend.addItem(curve, f"{kind} fidelity")  # short: the legend sits inside a narrow plot
                self.fidelity_curves[kind] = curve
        # from 0 (lossless) up, so rounding noise of an exact merge stays a flat line at the bottom
        highest = max((max(curve.getData()[1]) for curve in self.fidelity_curves.values()), default=0.0)
        top = max(0.05, 1.1 * highest)
        self.fidelity_view.setYRange(-0.03 * top, top, padding=0)

    def minimumSizeHint(self) -> QSize:
        return least_plot_size(self, DEPTH_MIN)

    def set_fidelity_visible(self, visible: bool) -> None:
        for curve in self.fidelity_curves.values():
            curve.setVisible(visible)
        self.getAxis("right").setVisible(visible)

    def data(self) -> dict[str, tuple[list[float], list[float]]]:
        """The metric's lines: layer type -> (block index, off-diagonal mean)."""
        return {kind: tuple(list(map(float, a)) for a in curve.getData()) for kind, curve in self.curves.items()}

    def fidelity_data(self) -> dict[str, tuple[list[float], list[float]]]:
        return {kind: tuple(list(map(float, a)) for a in curve.getData()) for kind, curve in self.fidelity_curves.items()}

    def export_image(self, path: str) -> None:
        export_plot(self, path)


class SubspacePanel(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.result: dict | None = None
        self.result_metric: str | None = None
        self.result_density: float | None = None
        self.stale = False
        self._generation = 0  # bumped by every change the numbers depend on

        self.metric_box = QComboBox()
        self.metric_box.setObjectName("subspaceMetric")
        for name, metric in analysis.METRICS.items():
            self.metric_box.addItem(metric.label, name)
            self.metric_box.setItemData(self.metric_box.count() - 1, metric.description, Qt.ToolTipRole)
        self.density = QDoubleSpinBox(minimum=0.01, maximum=1.0, value=0.2, singleStep=0.05, decimals=2)
        self.density.setObjectName("subspaceDensity")
        self.density.setToolTip("TIES density: the fraction of each ΔW's entries (largest magnitudes) kept before signs are compared")
        self.layer_box = QComboBox()
        self.layer_box.setObjectName("subspaceLayer")
        # as wide as 18 characters whatever the layer names: the list shows them whole
        self.layer_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.layer_box.setMinimumContentsLength(18)
        self.layer_box.view().setTextElideMode(Qt.ElideNone)
        self.layer_box.setToolTip("Which layers the heatmap shows: aggregated over all layers or one type, or a single layer")
        self.compute_button = QPushButton("Compute")
        self.compute_button.setObjectName("subspaceCompute")
        self.compute_button.clicked.connect(self.compute)
        self.show_fidelity = QCheckBox("merge fidelity")
        self.show_fidelity.setObjectName("subspaceShowFidelity")
        self.show_fidelity.setToolTip("Per layer, ‖merged − Σ c·ΔW‖ / ‖Σ c·ΔW‖ of the current merge (dashed, right axis)")
        self.show_fidelity.setChecked(True)
        self.save_heatmap_button = self._button("Save heatmap…", "subspaceSaveHeatmap", self._save_heatmap)
        self.save_depth_button = self._button("Save layer plot…", "subspaceSaveDepthPlot", self._save_depth_plot)
        self.save_csv_button = self._button("Save CSV…", "subspaceSaveCsv", self._save_csv)

        self.stale_label = QLabel(STALE_TEXT)
        self.stale_label.setObjectName("subspaceStale")
        self.stale_label.setStyleSheet("color: #b35900; font-weight: bold")
        self.stale_label.setWordWrap(True)
        self.stale_label.hide()
        self.summary = QLabel("Pick a metric and press Compute to compare the enabled adapters.")
        self.summary.setObjectName("subspaceSummary")
        self.summary.setWordWrap(True)
        self.heatmap = Heatmap()
        self.heatmap.setObjectName("subspaceHeatmap")
        self.depth = DepthPlot()

        # rows that wrap in a narrow window instead of widening the tab
        controls = flow(("Metric", self.metric_box), ("density", self.density), self.compute_button, self.show_fidelity)
        outputs = flow(("Layers", self.layer_box), self.save_heatmap_button, self.save_depth_button, self.save_csv_button)
        # both plots keep their shares as the window changes, and never go below what they draw
        plots = ShareSplitter(Qt.Horizontal, (0.6, 0.4))
        plots.setObjectName("subspacePlots")
        plots.addWidget(self.heatmap)
        plots.addWidget(self.depth)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addLayout(outputs)
        layout.addWidget(self.stale_label)
        layout.addWidget(self.summary)
        layout.addWidget(plots, 1)

        self.metric_box.currentIndexChanged.connect(self._metric_picked)
        self.layer_box.currentIndexChanged.connect(self._redraw)
        self.show_fidelity.toggled.connect(self.depth.set_fidelity_visible)
        for signal in (model.adaptersChanged, model.mergeChanged, model.baseChanged):
            signal.connect(self._inputs_changed)
        model.jobs.failed.connect(self._failed)
        model.jobs.finished.connect(self._finished)
        self._metric_picked()
        self._enable_exports(False)

    def _button(self, text: str, name: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.clicked.connect(slot)
        return button

    # -- computing -------------------------------------------------------------------
    def compute(self) -> None:
        session = self.model.session
        if session.base is None or len(session.active()) < 2:
            self.summary.setText("Enable at least two adapters to compare them.")
            return
        metric, density, generation = self.metric_box.currentData(), self.density.value(), self._generation
        self.summary.setText(f"Computing {analysis.METRICS[metric].label}…")
        self.model.jobs.start(JOB_LABEL, lambda: session.analysis_job(metric, density), lambda result: self._show(result, metric, density, generation))

    def _show(self, result: dict, metric: str, density: float, generation: int) -> None:
        self.result, self.result_metric, self.result_density = result, metric, density
        self._fill_layers()
        self._redraw()
        self._set_stale(generation != self._generation)
        self._enable_exports(True)

    def _failed(self, label: str, reason: str, _details: str) -> None:
        if label == JOB_LABEL:
            self.summary.setText(f"Analysis failed: {reason}")

    def _finished(self, label: str, outcome: str) -> None:
        if label == JOB_LABEL and outcome == "cancelled":
            self.summary.setText("Analysis cancelled.")

    def _inputs_changed(self) -> None:
        self._generation += 1
        if self.result is not None:
            self._set_stale(True)

    def _set_stale(self, stale: bool) -> None:
        self.stale = stale
        self.stale_label.setVisible(stale)

    def _metric_picked(self) -> None:
        self.density.setEnabled(self.metric_box.currentData() == "sign_conflict")

    def _enable_exports(self, enabled: bool) -> None:
        for button in (self.save_heatmap_button, self.save_depth_button, self.save_csv_button):
            button.setEnabled(enabled)

    # -- showing ---------------------------------------------------------------------
    def _fill_layers(self) -> None:
        current = self.layer_box.currentData()
        per_layer = self.result["per_layer"]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItem("all layers (mean)", ("all", "mean"))
        self.layer_box.addItem("all layers (max)", ("all", "max"))
        for kind in sorted({analysis.layer_type(name) for name in per_layer}):
            self.layer_box.addItem(f"{kind} (mean)", ("type", kind))
        for name in per_layer:
            self.layer_box.addItem(name, ("layer", name))
        self.layer_box.setCurrentIndex(max(self.layer_box.findData(current), 0))
        self.layer_box.blockSignals(False)

    def shown_matrix(self) -> np.ndarray:
        """The matrix the layer selector asks for, from the last result."""
        per_layer = self.result["per_layer"]
        kind, what = self.layer_box.currentData() or ("all", "mean")
        if kind == "all":
            return analysis.aggregate(per_layer, what)
        if kind == "type":
            return analysis.by_layer_type(per_layer)[what]
        return per_layer[what]

    def _redraw(self) -> None:
        if self.result is None or not self.result["per_layer"]:
            return
        metric = self.result_metric
        label = analysis.METRICS[metric].label
        names = self.result["names"]
        if metric == "interference":
            self.heatmap.set_axis_titles("adapter i (its ΔW)", "task j (its inputs)")
        else:
            self.heatmap.set_axis_titles("adapter i", "adapter j")
        self.heatmap.set_colormap(COLORMAPS.get(metric, "viridis"))
        self.heatmap.set_matrix(self.shown_matrix(), names, names, title=f"{label} — {self.layer_box.currentText()}", levels=LEVELS.get(metric, (0.0, 1.0)))
        self.depth.show_layers(self.result["per_layer"], self.result["fidelity"], label)
        self.depth.set_fidelity_visible(self.show_fidelity.isChecked())
        self.summary.setText(self.summary_text())

    def summary_text(self) -> str:
        per_layer = self.result["per_layer"]
        label = analysis.METRICS[self.result_metric].label
        if self.result_metric == "sign_conflict":
            label += f" (density {self.result_density:g})"
        text = f"{label}: off-diagonal mean over {len(per_layer)} layers = {self.summary_value():.4g}."
        fidelity = self.result["fidelity"]
        if fidelity:
            text += f" Current merge's fidelity error, mean over layers: {analysis.nan_mean(fidelity.values()):.3f} (0 = lossless)."
        elif self.result.get("fidelity_error"):
            text += f" No merge fidelity: {self.result['fidelity_error']}"
        return text

    def summary_value(self) -> float:
        """The one-number summary: the off-diagonal mean over layers."""
        return analysis.mean_off_diagonal(self.result["per_layer"])

    # -- export ----------------------------------------------------------------------
    def csv_rows(self) -> list[dict]:
        return analysis.to_rows(self.result["per_layer"], self.result["names"], self.result_metric)

    def export_csv(self, path: str) -> None:
        """Every layer's matrix entries: layer, metric, adapter_i, adapter_j, value."""
        atomic_write_text(path, rows_to_csv(self.csv_rows()), force=True)

    def _save_heatmap(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save heatmap", f"{self.result_metric}-heatmap.png", "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.heatmap.export_image(path)

    def _save_depth_plot(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save layer plot", f"{self.result_metric}-layers.png", "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.depth.export_image(path)

    def _save_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save numbers", f"{self.result_metric}.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)
