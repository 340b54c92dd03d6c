"""The demo's comparison of initialisation families, as `osrm demo compare` saved it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QDialog, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.compare import LAMBDAS, FamilyRun, load_runs, summarise
from osrm_gui.gui.plots.plot_style import LegendBelow, plain_numbers, plot_axes
from osrm_gui.gui.plots.sweep_plot import PALETTE


def read_runs(path: Path, command: str, make: str) -> tuple[dict, list[FamilyRun]]:
    """The (meta, runs) that `osrm ``command`` --json` saved at ``path``; an OsrmError in one line
    (naming the file, and ``make``: how to make one) when it is missing or something else."""
    try:
        return load_runs(path)
    except FileNotFoundError:
        raise OsrmError(f"{path}: no such file; make it with `{make}`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OsrmError(f"{path}: not a file `osrm {command} --json` writes ({type(exc).__name__}: {exc})") from None


class CompareDialog(QDialog):
    def __init__(self, path: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Demo: initialisation families compared")
        self.resize(900, 620)
        meta, runs = read_runs(path, "demo compare", f"osrm demo compare --json {path}")
        rows = summarise(runs)
        header = QLabel(f"From {path.name}, made by <code>{meta.get('command', '?')}</code>. Average test accuracy over the demo tasks; "
                        "task arithmetic's λ is chosen per run on the validation split. ± is the standard deviation over seeds. "
                        "Rerun that command to recompute.")
        header.setWordWrap(True)
        self.table = QTableWidget(len(rows), len(rows[0]) if rows else 0)
        self.table.setObjectName("compareTable")
        if rows:
            self.table.setHorizontalHeaderLabels(list(rows[0]))
            for r, row in enumerate(rows):
                for c, value in enumerate(row.values()):
                    self.table.setItem(r, c, QTableWidgetItem(str(value)))
        self.table.resizeColumnsToContents()
        self.plot = pg.PlotWidget(background="w", axisItems=plot_axes())
        self.plot.setObjectName("comparePlot")
        plain_numbers(self.plot.plotItem)
        self.plot.setLabel("bottom", "task arithmetic λ")
        self.plot.setLabel("left", "average accuracy")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        LegendBelow(self.plot)
        for i, family in enumerate(dict.fromkeys(r.family for r in runs)):
            mine = [r for r in runs if r.family == family]
            curve = np.array([[np.mean(list(r.task_arithmetic[f"{lam:g}"].values())) for lam in LAMBDAS] for r in mine])
            colour = PALETTE[i % len(PALETTE)]
            self.plot.plot(list(LAMBDAS), curve.mean(0), pen=pg.mkPen(colour, width=2), symbol="o", symbolBrush=colour, name=family)
            if len(mine) > 1:
                self.plot.addItem(pg.ErrorBarItem(x=np.array(LAMBDAS), y=curve.mean(0), height=2 * curve.std(0, ddof=1), pen=colour))
        notes = QLabel("<br>".join(f"<b>{name}</b>: {text}" for name, text in meta.get("families", {}).items()))
        notes.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(self.table)
        layout.addWidget(self.plot, 1)
        layout.addWidget(notes)
