"""Saved results as read-only tables that sort numbers as numbers ("0.781 ± 0.004" by its mean)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem


class _Item(QTableWidgetItem):
    """Sorts "0.781 ± 0.004" by its mean, text as text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = _number(self.text()), _number(other.text())
        if a is not None and b is not None:
            return a < b
        return self.text() < other.text()


def _number(text: str) -> float | None:
    try:
        return float(text.split(" ", 1)[0].split(",", 1)[0])
    except ValueError:
        return None


def fill_table(table: QTableWidget, rows: list[dict], tips: dict[str, str] | None = None) -> None:
    """``rows`` (one dict each, the same keys) into ``table``, read-only and sortable; ``tips``: a
    tooltip for the first column's cells by their text."""
    table.setSortingEnabled(False)
    table.setRowCount(len(rows))
    table.setColumnCount(len(rows[0]) if rows else 0)
    if rows:
        table.setHorizontalHeaderLabels(list(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row.values()):
            item = _Item(str(value))
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            if c == 0 and tips and str(value) in tips:
                item.setToolTip(tips[str(value)])
            table.setItem(r, c, item)
    table.setSortingEnabled(True)
    table.resizeColumnsToContents()
