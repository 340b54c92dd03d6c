"""The merge-method leaderboard saved by ``osrm demo leaderboard``, as a sortable table."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from osrm_gui.core.explore.leaderboard import family_margin, load, summarise


def _sort_key(text: str):
    """Numbers sort as numbers ("0.781 ± 0.004" by its mean), the rest as text."""
    head = text.split(" ", 1)[0].split(",", 1)[0]
    try:
        return float(head)
    except ValueError:
        return None


class _Item(QTableWidgetItem):
    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = _sort_key(self.text()), _sort_key(other.text())
        if a is not None and b is not None:
            return a < b
        return self.text() < other.text()


def _fill(table: QTableWidget, rows: list[dict]) -> None:
    table.setSortingEnabled(False)
    table.setRowCount(len(rows))
    table.setColumnCount(len(rows[0]) if rows else 0)
    if rows:
        table.setHorizontalHeaderLabels(list(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row.values()):
            item = _Item(str(value))
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            table.setItem(r, c, item)
    table.setSortingEnabled(True)
    table.resizeColumnsToContents()


class LeaderboardDialog(QDialog):
    def __init__(self, path: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Demo: merge methods compared")
        self.resize(1000, 640)
        meta, runs = load(path)
        header = QLabel(f"From {path.name}, made by <code>{meta['command']}</code>. Test average over the demo tasks at the λ each "
                        "run chose on the <b>validation</b> split; ± is the standard deviation over seeds. Click a header to sort.")
        header.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setObjectName("leaderboardTable")
        _fill(self.table, summarise(runs))
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(self.table, 1)
        families = list(dict.fromkeys(r.family for r in runs))
        self.margins = QTableWidget()
        self.margins.setObjectName("marginTable")
        if len(families) == 2:
            layout.addWidget(QLabel(f"Does {families[1]} beat {families[0]} by more than the spread of the seeds?"))
            _fill(self.margins, family_margin(runs, families[1], families[0]))
            layout.addWidget(self.margins, 1)
