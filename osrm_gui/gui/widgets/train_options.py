"""The options of a training run in the OSRM tab: initialisation, what A may learn (frozen, its
learning rate, a subspace budget, a penalty on the other tasks' energy) and the run's size."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QLabel, QSpinBox, QWidget

from osrm_gui.core.osrm.training import INITIALISERS, TrainSettings

BUDGETS = (1, 2, 4, 8, 16, 32)
PENALTY_GRID = tuple(m * 10.0 ** e for e in range(-4, 4) for m in (1, 3))  # 1e-4, 3e-4, …, 3e3
A_LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BUDGET_INIT = "osrm-cov"  # the budget's directions are the smallest-eigenvalue ones of the others' second moment


class LogSpinBox(QDoubleSpinBox):
    """A spin box for factors spanning decades: its arrows walk a 1–3–10 grid down to 0, and any
    value (0.002, 1e-3) can be typed."""

    def __init__(self, grid, value: float, zero_text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.grid = sorted(grid)
        self.setDecimals(10)  # the box rounds to this; the text is %g
        self.setRange(0.0, self.grid[-1])
        self.setSpecialValueText(zero_text)  # shown for 0 (the minimum)
        self.setValue(value)

    def stepBy(self, steps: int) -> None:
        value = self.value()
        for _ in range(abs(steps)):
            if steps > 0:
                value = next((g for g in self.grid if g > value * (1 + 1e-9)), value)
            else:
                value = next((g for g in reversed(self.grid) if g < value * (1 - 1e-9)), 0.0)
        self.setValue(value)

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        parsed = self._parse(text)
        return self.value() if parsed is None else parsed

    def validate(self, text: str, pos: int):
        if text == self.specialValueText() and text:
            return QValidator.Acceptable, text, pos
        parsed = self._parse(text)
        if parsed is not None and self.minimum() <= parsed <= self.maximum():
            return QValidator.Acceptable, text, pos
        partial = text.strip().lower().rstrip("e-+.") or "0"
        return (QValidator.Intermediate if self._parse(partial) is not None else QValidator.Invalid), text, pos

    def _parse(self, text: str) -> float | None:
        text = text.strip()
        if text and text == self.specialValueText():
            return 0.0
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None


class TrainOptions(QWidget):
    """The training knobs; ``settings(...)`` is the TrainSettings they stand for."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.init = QComboBox()
        self.init.setObjectName("trainInit")
        for name, initialiser in INITIALISERS.items():
            self.init.addItem(name, name)
            self.init.setItemData(self.init.count() - 1, initialiser.doc, Qt.ToolTipRole)
        self.init.setCurrentIndex(self.init.findData("osrm-cov"))
        self.freeze_a = QCheckBox("Freeze A")
        self.freeze_a.setToolTip("Train only B and the head, so lora_A keeps its initial subspace")
        self.a_lr = LogSpinBox(A_LR_GRID, 1.0)
        self.a_lr.setObjectName("aLrMultiplier")
        self.a_lr.setToolTip("Learning rate of lora_A relative to the others: 0.1 or 0.01 let A drift less "
                             "out of its initial subspace (the arrows step 1, 0.3, 0.1, 0.03, 0.01, …)")
        self.budget = QComboBox()
        self.budget.setObjectName("subspaceBudget")
        self.budget.addItem("off", None)
        for k in BUDGETS:
            self.budget.addItem(str(k), k)
        self.penalty = LogSpinBox(PENALTY_GRID, 0.0, zero_text="0 (off)")
        self.penalty.setObjectName("subspacePenalty")
        self.penalty.setToolTip("β: adds β · tr(A S_others Aᵀ) / tr(A Aᵀ) to the loss, a soft pull of row(A) away from "
                                "the other tasks' features (0: off; the arrows step 0.001, 0.003, 0.01, …)")
        self.steps = QSpinBox(minimum=1, maximum=100000, value=300)
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1.0, value=2e-3, singleStep=5e-4)
        self.rank = QSpinBox(minimum=1, maximum=1024, value=8)

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        rows = ((("Initialisation", self.init), ("", self.freeze_a)),
                (("Subspace budget k", self.budget), ("Penalty β", self.penalty)),
                (("A learning-rate ×", self.a_lr), ("rank", self.rank)),
                (("steps", self.steps), ("lr", self.lr)))
        for row, pairs in enumerate(rows):
            for column, (label, widget) in enumerate(pairs):
                grid.addWidget(QLabel(label), row, 2 * column)
                grid.addWidget(widget, row, 2 * column + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        for combo in (self.init, self.budget):
            combo.currentIndexChanged.connect(self._follow)
        self.freeze_a.toggled.connect(self._follow)
        for box in (self.a_lr, self.penalty, self.lr, self.steps, self.rank):
            box.valueChanged.connect(self._follow)
        self._follow()

    def _follow(self, *_) -> None:
        """The budget only means something with the OSRM-cov init, A's learning rate only with A trained."""
        budgeted = self.init.currentData() == BUDGET_INIT
        self.budget.setEnabled(budgeted)
        r = self.rank.value()
        self.budget.setToolTip(
            f"k: A's rows stay in the span of the m = k·r (here r = {r}) smallest-eigenvalue directions of the other tasks' "
            "feature statistics; A = C·U_m and only C is trained, so the constraint is exact. k = 1 is like freezing A "
            "(the adapter keeps its initial subspace), a large k approaches free training."
            + ("" if budgeted else f" Needs the {BUDGET_INIT} initialisation."))
        self.a_lr.setEnabled(not self.freeze_a.isChecked())
        self.changed.emit()

    def settings(self, **extra) -> TrainSettings:
        budget = self.budget.currentData() if self.budget.isEnabled() else None
        return TrainSettings(rank=self.rank.value(), alpha=2.0 * self.rank.value(), steps=self.steps.value(), lr=self.lr.value(),
                             init=self.init.currentData(), freeze_a=self.freeze_a.isChecked(), a_lr_multiplier=self.a_lr.value(),
                             subspace_budget=budget, subspace_penalty=self.penalty.value(), max_length=64, **extra)

