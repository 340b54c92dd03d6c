"""The merge-method leaderboard saved by ``osrm demo leaderboard``, as a sortable table."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QDialog, QLabel, QTableWidget, QVBoxLayout, QWidget

from osrm_gui.core.explore.leaderboard import family_margin, load, summarise
from osrm_gui.gui.dialogs.result_table import fill_table


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
        fill_table(self.table, summarise(runs))
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(self.table, 1)
        families = list(dict.fromkeys(r.family for r in runs))
        self.margins = QTableWidget()
        self.margins.setObjectName("marginTable")
        if len(families) == 2:
            layout.addWidget(QLabel(f"Does {families[1]} beat {families[0]} by more than the spread of the seeds?"))
            fill_table(self.margins, family_margin(runs, families[1], families[0]))
            layout.addWidget(self.margins, 1)
