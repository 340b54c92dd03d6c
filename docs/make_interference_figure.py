"""Make docs/interference.png: the demo's two adapter families side by side, the
interference matrix (mean over layers) of peft's default init next to OSRM-cov's,
on one colour scale, plus the one-number summary of each.

    make figures        # or: .venv/bin/python docs/make_interference_figure.py docs/interference.png

The numbers come from the same code as `osrm analyze … --metric interference`
(feature statistics of each task on the pretrained base, cached).
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def family_matrix(family: str):
    from osrm_gui.core.analysis import pairwise as analysis
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.workspace import open_workspace
    from osrm_gui.core.inputs.demo_set import demo_adapter_paths

    ws = open_workspace(None, demo_adapter_paths(family=family), device="cpu")
    grams = run_to_end(ws.adapter_grams())
    per_layer = analysis.interference(ws.adapters, grams)
    return [a.task or a.name for a in ws.adapters], analysis.aggregate(per_layer, "mean"), per_layer


def main(out: str) -> int:
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QGridLayout, QLabel, QWidget

    from osrm_gui.core.analysis.pairwise import mean_off_diagonal
    from osrm_gui.gui.plots.heatmap import Heatmap

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tempfile.mkdtemp())
    app = QApplication(sys.argv[:1])  # noqa: F841 - widgets need it alive
    figure = QWidget()
    figure.setStyleSheet("background: white; color: black")
    grid = QGridLayout(figure)
    results = [(family, *family_matrix(family)) for family in ("peft-default", "osrm-cov")]
    values = np.concatenate([m[~np.eye(len(m), dtype=bool)] for _, _, m, _ in results])
    levels = (float(np.floor(values.min() * 10) / 10), float(np.ceil(values.max() * 10) / 10))
    for column, (family, names, matrix, per_layer) in enumerate(results):
        heatmap = Heatmap()
        heatmap.set_matrix(matrix, names, names, title=family, levels=levels)
        heatmap.set_axis_titles("adapter i", "task j (its inputs)")
        heatmap.setMinimumSize(620, 520)
        caption = QLabel(f"<b>{family}</b>: off-diagonal mean interference {mean_off_diagonal(per_layer):.3f} "
                         f"(lower merges better)")
        grid.addWidget(caption, 0, column)
        grid.addWidget(heatmap, 1, column)
        print(f"{family}: off-diagonal mean interference over {len(per_layer)} layers = {mean_off_diagonal(per_layer):.4f}")
    figure.resize(1300, 600)
    figure.show()
    for _ in range(20):
        app.processEvents()
    figure.grab().save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/interference.png"))
