"""The trade-off study as `osrm demo tradeoff --json` saved it: the summary per setting (mean ± std
over seeds), the Pareto plot, each setting against the references and the verdict. A study still
running, or stopped early, shows what it has: a setting with one seed has no spread (no error
bars, no verdict on it), and without both references there is no verdict yet."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QDialog, QLabel, QSplitter, QTableWidget, QVBoxLayout, QWidget

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore import tradeoff as study
from osrm_gui.core.explore.compare import FamilyRun
from osrm_gui.gui.dialogs.compare_dialog import read_runs
from osrm_gui.gui.dialogs.result_table import fill_table
from osrm_gui.gui.plots.tradeoff_figure import FRONT, LEGEND_TEXT, draw_pareto, names_note, pareto_plot

MAKE = "osrm demo tradeoff --json {path}"


def usable(runs: list[FamilyRun]) -> list[FamilyRun]:
    """The runs the study's measures apply to: trade-off runs whose λ could be chosen on validation."""
    return [r for r in runs if study.is_study_run(r) and r.chosen_lambda is not None]


def seeds_per_setting(runs: list[FamilyRun]) -> dict[str, int]:
    return {family: sum(r.family == family for r in runs) for family in dict.fromkeys(r.family for r in runs)}


def verdict_text(runs: list[FamilyRun]) -> tuple[str, bool]:
    """The study's answer, or why there is none yet; and whether it is one (else the reason)."""
    seeds = seeds_per_setting(runs)
    missing = [r for r in study.REFERENCES if r not in seeds]
    if missing:
        return f"No verdict yet: the study has no {' or '.join(missing)} runs to compare with.", False
    others = [f for f in seeds if f not in study.REFERENCES]
    if not others:
        return f"No verdict yet: only the references ({', '.join(study.REFERENCES)}) were run.", False
    thin = [f for f in seeds if seeds[f] < 2]
    if any(f in thin for f in study.REFERENCES) or all(f in thin for f in others):
        who = "every setting has" if len(thin) == len(seeds) else f"{', '.join(thin)} {'has' if len(thin) == 1 else 'have'}"
        return f"No verdict yet: {who} one seed, so no spread to judge by; run more seeds (--seeds 0,1,2 --resume).", False
    note = f" ({', '.join(thin)}: one seed, not judged)" if thin else ""
    return f"Does any setting beat {' and '.join(study.REFERENCES)} on both axes? {study.verdict(runs)}{note}", True


class CaptionedPlot(QWidget):
    """The plot with its wrapped caption below. Its least height counts the caption's lines at
    the width it has: a splitter asks only minimumSizeHint, which counts a word-wrapped label as
    one line, so in a small window the caption's second line was drawn over the plot's axis."""

    def __init__(self, plot: QWidget, caption: QLabel):
        super().__init__()
        self.plot, self.caption = plot, caption
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(plot, 1)
        layout.addWidget(caption)

    def minimumSizeHint(self) -> QSize:
        width = self.width() if self.width() > 0 else self.sizeHint().width()
        lines = self.caption.heightForWidth(width)
        return QSize(super().minimumSizeHint().width(),
                     self.plot.minimumHeight() + self.layout().spacing() + max(lines, self.caption.minimumSizeHint().height()))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()  # the caption's line count, and with it the least height, may have changed


class TradeoffDialog(QDialog):
    def __init__(self, path: Path, parent: QWidget | None = None):
        """OsrmError (one line) when ``path`` is missing or not a saved study."""
        super().__init__(parent)
        self.setWindowTitle("Demo: the trade-off study")
        self.resize(1100, 760)
        meta, saved = read_runs(path, "demo tradeoff", MAKE.format(path=path))
        runs = usable(saved)
        if saved and not runs:
            raise OsrmError(f"{path}: no run in it has the trade-off study's measures (a file `osrm demo compare` wrote?); "
                            f"make one with `{MAKE.format(path=path)}`")
        skipped = len(saved) - len(runs)
        seeds = seeds_per_setting(runs)
        fewest, most = min(seeds.values(), default=0), max(seeds.values(), default=0)
        partial = study.coverage(meta, runs)
        header = QLabel(
            f"From {Path(path).name}, made by <code>{meta.get('command', '?')}</code>: {len(seeds)} setting(s), "
            + (f"{most} seed(s) each" if fewest == most else f"{fewest} to {most} seeds each")
            + (f"; {skipped} run(s) without the study's measures left out" if skipped else "")
            + (f". <b>{partial[0].upper()}{partial[1:]}</b>" if partial else "")
            + ". Test accuracy averaged over the tasks; normalised = merged / each adapter alone, at the λ chosen on "
            "validation; ± is the standard deviation over seeds. Hover a setting's name for what it trains.")
        header.setWordWrap(True)
        header.setObjectName("tradeoffHeader")
        families = meta.get("families", {})

        self.table = QTableWidget()
        self.table.setObjectName("tradeoffTable")
        self.table.verticalHeader().setVisible(False)
        fill_table(self.table, study.summarise(runs) if runs else [], families)
        self.points = study.pareto_points(runs) if runs else []
        self.front = study.non_dominated(self.points)
        self.plot = pareto_plot()
        self.plot.setObjectName("tradeoffPlot")
        self.plot.setLabel("left", "merged normalised (TA)", color="k")  # the figure's longer title is cut at this height
        self.plot.setMinimumHeight(260)
        draw_pareto(self.plot, self.points, self.front)
        green = "#{:02x}{:02x}{:02x}".format(*FRONT)
        note = names_note(self.points)
        names = f"; {note}" if note else ""
        legend = QLabel(f"One point per setting, mean over seeds; {LEGEND_TEXT}{names}. Pareto front: "
                        f"<span style='color:{green}'><b>{', '.join(self.front) or '–'}</b></span>.")
        legend.setWordWrap(True)
        self.margins = QTableWidget()
        self.margins.setObjectName("tradeoffMargins")
        self.margins.verticalHeader().setVisible(False)
        text, decided = verdict_text(runs)
        if decided:
            fill_table(self.margins, study.dominance(runs), families)
        self.margins.setVisible(decided)
        self.verdict = QLabel(f"<b>{text}</b>")
        self.verdict.setObjectName("tradeoffVerdict")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextSelectableByMouse)

        plot_side = CaptionedPlot(self.plot, legend)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.table)
        split.addWidget(plot_side)
        split.addWidget(self.margins)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([170, 420, 130])
        layout = QVBoxLayout(self)
        layout.addWidget(header)
        layout.addWidget(split, 1)
        layout.addWidget(self.verdict)
