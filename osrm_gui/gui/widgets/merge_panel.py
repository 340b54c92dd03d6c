"""Method, its parameters, a coefficient per adapter and the global λ."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox,
    QVBoxLayout, QWidget,
)

from osrm_gui.core.merge import METHODS, get_method
from osrm_gui.gui.state import SessionModel

SLIDER_STEPS = 100  # slider positions per unit of coefficient


LABEL_MAX_PX = 150  # longer adapter names are elided in the middle (the tooltip has them whole)


class CoefficientRow(QObject):
    """A name, a slider and a spin box for one number, placed on a row of the panel's grid
    (so every row's slider starts and ends at the same x); dragging previews after a pause,
    releasing at once."""

    def __init__(self, label: str, value: float, minimum: float, maximum: float, on_change, parent=None):
        super().__init__(parent)
        self.on_change = on_change
        self.label = QLabel(label)
        self.label.setToolTip(label)
        self.label.setMaximumWidth(LABEL_MAX_PX)
        self.label.setText(self.label.fontMetrics().elidedText(label, Qt.ElideMiddle, LABEL_MAX_PX))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(int(minimum * SLIDER_STEPS), int(maximum * SLIDER_STEPS))
        self.slider.setMinimumWidth(80)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(minimum, maximum)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setKeyboardTracking(False)
        self.set_value(value)
        self.slider.valueChanged.connect(self._slid)
        self.slider.sliderReleased.connect(lambda: self.on_change(self.spin.value(), True))
        self.spin.valueChanged.connect(self._typed)

    def widgets(self) -> tuple[QWidget, QWidget, QWidget]:
        return self.label, self.slider, self.spin

    def place(self, grid: QGridLayout, row: int) -> None:
        for column, widget in enumerate(self.widgets()):
            grid.addWidget(widget, row, column)

    def remove(self, grid: QGridLayout) -> None:
        for widget in self.widgets():
            # removed from the layout and deleted: a widget merely un-parented would pop up as its own window
            grid.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self.deleteLater()

    def setEnabled(self, enabled: bool) -> None:
        for widget in self.widgets():
            widget.setEnabled(enabled)

    def isEnabled(self) -> bool:
        return self.slider.isEnabled()

    def setToolTip(self, text: str) -> None:
        for widget in (self.slider, self.spin):
            widget.setToolTip(text)
        self.label.setToolTip(f"{self.label.toolTip()}: {text}")

    def set_value(self, value: float) -> None:
        for widget in (self.slider, self.spin):
            widget.blockSignals(True)
        self.slider.setValue(round(value * SLIDER_STEPS))
        self.spin.setValue(value)
        for widget in (self.slider, self.spin):
            widget.blockSignals(False)

    def _slid(self, position: int) -> None:
        value = position / SLIDER_STEPS
        self.spin.blockSignals(True)
        self.spin.setValue(value)
        self.spin.blockSignals(False)
        # keyboard and clicks on the track move the slider without a drag: treat those as final
        self.on_change(value, not self.slider.isSliderDown())

    def _typed(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(value * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self.on_change(value, True)


class MergePanel(QWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.method = QComboBox()
        self.method.setObjectName("methodPicker")
        for method in METHODS.values():
            self.method.addItem(method.label, method.name)
            self.method.setItemData(self.method.count() - 1, method.doc, Qt.ToolTipRole)
        self.method.currentIndexChanged.connect(lambda: model.set_method(self.method.currentData()))
        self.doc = QLabel()
        self.doc.setWordWrap(True)
        self.doc.setStyleSheet("color: palette(mid)")
        self.params_box = QGroupBox("Parameters")
        self.params_form = QFormLayout(self.params_box)
        self.coefficients_box = QGroupBox("Coefficients")
        # one grid for every coefficient and λ: a shared name column, so all sliders line up
        self.coefficients_layout = QGridLayout(self.coefficients_box)
        self.coefficients_layout.setColumnStretch(1, 1)
        self.lam = CoefficientRow("global λ", 1.0, 0.0, 2.0, lambda v, final: model.set_lambda(v, final), self)
        self.lam.setObjectName("lambdaRow")
        self.lam.setToolTip("Scales the whole merged update: 0 is the bare base, 1 the plain (weighted) merge")
        self.rows: list[CoefficientRow] = []
        average = QPushButton("Average")
        average.setToolTip("Linear merge, equal weights, λ = 1")
        average.clicked.connect(lambda: model.apply_preset("average"))
        arithmetic = QPushButton("Task arithmetic λ=1")
        arithmetic.setToolTip("Sum of the task vectors, coefficients 1, λ = 1")
        arithmetic.clicked.connect(lambda: model.apply_preset("task_arithmetic"))
        self.full = QPushButton("Full evaluation")
        self.full.setToolTip("Score the current merge on every test example (the preview uses a subset)")
        self.full.clicked.connect(model.full_evaluation)
        self.preview_size = QSpinBox()
        self.preview_size.setRange(10, 100000)
        self.preview_size.setSingleStep(50)
        self.preview_size.setToolTip("Test examples per task in the live preview")
        self.preview_size.editingFinished.connect(lambda: model.set_preview_limit(self.preview_size.value()))
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Presets:"))
        presets.addWidget(average)
        presets.addWidget(arithmetic)
        presets.addStretch()
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Preview examples per task:"))
        bottom.addWidget(self.preview_size)
        bottom.addStretch()
        bottom.addWidget(self.full)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        form.addRow("Method", self.method)
        layout.addLayout(form)
        layout.addWidget(self.doc)
        layout.addWidget(self.params_box)
        layout.addWidget(self.coefficients_box)
        layout.addLayout(presets)
        layout.addLayout(bottom)
        layout.addStretch()
        model.mergeChanged.connect(self.refresh)
        model.adaptersChanged.connect(self.rebuild_rows)
        model.baseChanged.connect(self.rebuild_rows)
        self.rebuild_rows()

    def rebuild_rows(self) -> None:
        grid = self.coefficients_layout
        for row in self.rows:
            row.remove(grid)
        for widget in self.lam.widgets():
            grid.removeWidget(widget)
        self.rows = []
        for i, slot in enumerate(self.model.slots):
            row = CoefficientRow(slot.label, slot.coefficient, -1.0, 2.0, lambda v, final, i=i: self.model.set_coefficient(i, v, final), self)
            row.setEnabled(slot.enabled)
            row.setObjectName(f"coefficient:{slot.label}")
            row.place(grid, i)
            self.rows.append(row)
        self.lam.place(grid, len(self.rows))
        self.refresh()

    def refresh(self) -> None:
        session = self.model.session
        index = self.method.findData(session.method)
        if index != self.method.currentIndex():
            self.method.blockSignals(True)
            self.method.setCurrentIndex(index)
            self.method.blockSignals(False)
        method = get_method(session.method)
        self.doc.setText(method.doc)
        self._rebuild_params(method)
        for row, slot in zip(self.rows, self.model.slots):
            if abs(row.spin.value() - slot.coefficient) > 1e-9:
                row.set_value(slot.coefficient)
        if abs(self.lam.spin.value() - session.lam) > 1e-9:
            self.lam.set_value(session.lam)
        self.preview_size.setValue(session.preview_limit)

    def _rebuild_params(self, method) -> None:
        if getattr(self, "_params_for", None) == method.name:
            self._refresh_param_values()  # a loaded point or applied search result may change them
            return
        self._params_for = method.name
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        values = self.model.session.method_params()
        for param in method.params:
            widget = self._param_widget(param, values[param.name])
            widget.setObjectName(f"param:{param.name}")
            widget.setToolTip(param.doc)
            label = QLabel(param.title)
            label.setToolTip(param.doc)
            self.params_form.addRow(label, widget)
        self.params_box.setVisible(bool(method.params))

    def _refresh_param_values(self) -> None:
        values = self.model.session.method_params()
        for name, value in values.items():
            widget = self.findChild(QWidget, f"param:{name}")
            if widget is None:
                continue
            widget.blockSignals(True)  # the session already holds the value: do not echo it back as an edit
            if isinstance(widget, QComboBox):
                widget.setCurrentText(str(value))
            elif widget.value() != value:
                widget.setValue(value)
            widget.blockSignals(False)

    def _param_widget(self, param, value):
        if param.choices:
            widget = QComboBox()
            widget.addItems(list(param.choices))
            widget.setCurrentText(str(value))
            widget.currentTextChanged.connect(lambda v, n=param.name: self.model.set_param(n, v))
            return widget
        if param.kind is int:
            widget = QSpinBox()
            widget.setRange(int(param.minimum if param.minimum is not None else -10**6), int(param.maximum if param.maximum is not None else 10**6))
        else:
            widget = QDoubleSpinBox()
            widget.setDecimals(3)
            widget.setSingleStep(0.05)
            low = param.minimum if param.minimum is not None else -1e6
            widget.setRange(low + (1e-3 if param.min_exclusive else 0.0), param.maximum if param.maximum is not None else 1e6)
        widget.setKeyboardTracking(False)
        widget.setValue(value)
        widget.valueChanged.connect(lambda v, n=param.name: self.model.set_param(n, v))
        return widget
