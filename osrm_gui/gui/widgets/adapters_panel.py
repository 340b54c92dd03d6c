"""The adapters table: what is loaded, which are merged, and their evaluation data."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from osrm_gui.gui.state import SessionModel

COLUMNS = ["Merge", "Name", "Task", "Rank", "Alpha", "Targets", "Size", "Init"]
COLUMN_MAX_PX = 150  # a long name is elided rather than pushing the other columns out of sight
HINT = "Drop PEFT LoRA adapter folders here, or use Add…"


class DropMark(QWidget):
    """Drawn over the table while a drag that carries files hovers over the window: where they
    will go. It takes no mouse or drag events: the window under it receives the drop."""

    def __init__(self, table: QTableWidget):
        super().__init__(table)
        self.setObjectName("dropMark")
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.hide()

    def show_over(self, table: QTableWidget) -> None:
        self.setGeometry(table.rect())
        self.raise_()
        self.show()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        colour = self.palette().color(QPalette.Highlight)
        fill = QColor(colour)
        fill.setAlpha(40)
        painter.fillRect(self.rect(), fill)
        painter.setPen(QPen(colour, 2, Qt.DashLine))
        painter.drawRect(self.rect().adjusted(1, 1, -2, -2))


class AdaptersPanel(QWidget):
    addRequested = Signal()
    hubRequested = Signal()
    pairRequested = Signal(int)

    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("adapterTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setMaximumSectionSize(COLUMN_MAX_PX)
        self.table.setWordWrap(False)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.table.setToolTip("Drop adapter folders (or their adapter_config.json) anywhere on the window")
        self.hint = QLabel(HINT)
        self.hint.setObjectName("dropHint")
        self.hint.setWordWrap(True)
        self.drop_count = 0  # adapters a hovering drag carries
        self.drop_mark = DropMark(self.table)
        self.refusals = QLabel()
        self.refusals.setObjectName("refusals")
        self.refusals.setWordWrap(True)
        self.refusals.setStyleSheet("color: #b00020")
        self.refusals.hide()
        self.clear_refusals = QPushButton("Clear messages")
        self.clear_refusals.setObjectName("clearRefusals")
        self.clear_refusals.clicked.connect(self._clear_refusals)
        self.clear_refusals.hide()
        add = QPushButton("Add…")
        add.clicked.connect(self.addRequested)
        from_hub = QPushButton("From Hub…")
        from_hub.setObjectName("addFromHub")
        from_hub.setToolTip("Add an adapter by its Hugging Face Hub id (from the local cache unless Hub downloads are allowed)")
        from_hub.clicked.connect(self.hubRequested)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove)
        self.pair_button = QPushButton("Pair data…")
        self.pair_button.setToolTip("Choose the evaluation data file (CSV, TSV, JSONL, JSON or Parquet) of the selected adapter's task")
        self.pair_button.clicked.connect(lambda: self._selected() is not None and self.pairRequested.emit(self._selected()))
        buttons = QHBoxLayout()
        for b in (add, from_hub, self.remove_button, self.pair_button):
            buttons.addWidget(b)
        buttons.addStretch()
        buttons.addWidget(self.clear_refusals)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.hint)
        layout.addWidget(self.refusals)
        layout.addLayout(buttons)
        self._filling = False
        self.table.itemChanged.connect(self._edited)
        model.adaptersChanged.connect(self.refresh)
        model.baseChanged.connect(self.refresh)
        model.adapterRefused.connect(self._refused)
        self.refresh()

    def show_drop_target(self, count: int) -> None:
        """Mark the table as where ``count`` dragged adapters will go, or unmark it (0)."""
        self.drop_count = count
        if count:
            self.drop_mark.show_over(self.table)
        else:
            self.drop_mark.hide()
        plural = "s" if count != 1 else ""
        self.hint.setText(f"<b>Release to add {count} adapter{plural}</b>" if count else HINT)
        self.hint.setVisible(bool(count) or not self.model.slots)

    def _selected(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _remove(self) -> None:
        row = self._selected()
        if row is not None:
            self.model.remove_adapter(row)

    def _refused(self, path: str, reason: str) -> None:
        lines = [line for line in self.refusals.text().split("\n") if line][-3:]
        self.refusals.setText("\n".join([*lines, f"Refused: {reason}"]))
        self.refusals.show()
        self.clear_refusals.show()

    def _clear_refusals(self) -> None:
        self.refusals.clear()
        self.refusals.hide()
        self.clear_refusals.hide()

    def refresh(self) -> None:
        self._filling = True
        slots = self.model.slots
        self.table.setRowCount(len(slots))
        for row, slot in enumerate(slots):
            summary = slot.adapter.summary()
            enabled = QTableWidgetItem()
            enabled.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            enabled.setCheckState(Qt.Checked if slot.enabled else Qt.Unchecked)
            cells = [enabled, QTableWidgetItem(slot.label), QTableWidgetItem(slot.task.name if slot.task else "— no data —")]
            cells += [QTableWidgetItem(str(summary[k])) for k in ("rank", "alpha", "targets", "size", "init")]
            for column, item in enumerate(cells):
                if column != 1 and column != 0:
                    item.setFlags(item.flags() & ~Qt.ItemIsEditable)
                item.setToolTip(str(slot.path))
                self.table.setItem(row, column, item)
        self.hint.setVisible(not slots or bool(self.drop_count))
        self._filling = False

    def _edited(self, item: QTableWidgetItem) -> None:
        if self._filling:
            return
        row = item.row()
        if item.column() == 0:
            self.model.set_enabled(row, item.checkState() == Qt.Checked)
        elif item.column() == 1:
            self.model.rename_adapter(row, item.text().strip())
