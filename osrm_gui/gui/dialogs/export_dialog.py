"""Export the current merge: full models per task, PEFT adapters, or a recipe."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)

from osrm_gui.core.merge import get_method
from osrm_gui.gui.dialogs.error_dialog import confirm_replace
from osrm_gui.gui.state import SessionModel

KINDS = {
    "full": "Full model per task (loads with transformers' AutoModelForSequenceClassification)",
    "adapter": "Merged LoRA adapter per task (PEFT format; exact for concat and svd, else SVD-compressed)",
    "recipe": "Recipe JSON (replay with `osrm merge --recipe`)",
}


DEFAULT_NAMES = {"full": "merged-models", "adapter": "merged-adapters", "recipe": "merge.recipe.json"}


class ExportDialog(QDialog):
    def __init__(self, model: SessionModel, parent: QWidget | None = None, folder: str = "."):
        super().__init__(parent)
        self.setWindowTitle("Export merge")
        self.model = model
        self.group = QButtonGroup(self)
        kinds = QVBoxLayout()
        for i, (kind, text) in enumerate(KINDS.items()):
            button = QRadioButton(text)
            button.setObjectName(f"kind:{kind}")
            button.setProperty("kind", kind)
            self.group.addButton(button, i)
            kinds.addWidget(button)
        self.group.buttons()[0].setChecked(True)
        self.rank = QSpinBox(minimum=1, maximum=4096, value=16)
        self.rank.setToolTip("Rank of the SVD-compressed adapter (dense merges such as TIES need one)")
        self.exact = QCheckBox("exact (no compression)")
        self.exact.setToolTip("Only for the low-rank methods (concat, svd): keep the merged factors as they are")
        self.folder = folder
        self.path = QLineEdit()
        self.path.setObjectName("exportPath")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.force = QCheckBox("Replace an existing output")
        self.status = QLabel()
        self.status.setObjectName("exportStatus")
        self.status.setWordWrap(True)
        where = QHBoxLayout()
        where.addWidget(self.path, 1)
        where.addWidget(browse)
        form = QFormLayout()
        form.addRow("Output", where)
        rank_row = QHBoxLayout()
        rank_row.addWidget(self.rank)
        rank_row.addWidget(self.exact)
        form.addRow("Adapter rank", rank_row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.AcceptRole)
        self.export_button.setObjectName("exportButton")
        self.export_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(kinds)
        layout.addLayout(form)
        layout.addWidget(self.force)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.group.buttonToggled.connect(self._update)
        self.exact.toggled.connect(self._update)
        self._update()

    @property
    def kind(self) -> str:
        return self.group.checkedButton().property("kind")

    def _update(self) -> None:
        defaults = {f"{self.folder}/{name}" for name in DEFAULT_NAMES.values()}
        if not self.path.text() or self.path.text() in defaults:
            self.path.setText(f"{self.folder}/{DEFAULT_NAMES[self.kind]}")
        low_rank = get_method(self.model.session.method).low_rank
        self.exact.setEnabled(self.kind == "adapter" and low_rank)
        if not low_rank:
            self.exact.setChecked(False)
        self.rank.setEnabled(self.kind == "adapter" and not self.exact.isChecked())

    def _browse(self) -> None:
        if self.kind == "recipe":
            path, _ = QFileDialog.getSaveFileName(self, "Recipe file", "merge.recipe.json", "JSON (*.json)")
        else:
            path = QFileDialog.getExistingDirectory(self, "Parent folder")
            if path:
                path = f"{path}/merged-{self.kind}"
        if path:
            self.path.setText(path)

    def start(self) -> None:
        out = self.path.text().strip()
        if not out:
            self.status.setText("Choose where to write the export.")
            return
        force = self.force.isChecked()
        if Path(out).exists() and not force:
            if not confirm_replace(self, [Path(out)]):
                self.status.setText(f"Not exported: {out} is kept.")
                return
            force = True
        rank = None if self.kind != "adapter" or self.exact.isChecked() else self.rank.value()
        self.export_button.setEnabled(False)
        self.status.setText("Exporting…")
        self.model.jobs.finished.connect(self._job_finished)
        self.model.export(self.kind, out, rank, force, self._done)

    def _done(self, written: dict) -> None:
        text = f"Written to {written['path']}"
        if written.get("tasks"):
            text += f" ({', '.join(written['tasks'])})"
        if written.get("truncation_error") is not None:
            text += f"; worst relative truncation error {written['truncation_error']:.4g}"
        self.status.setText(text)

    def _job_finished(self, label: str, outcome: str) -> None:
        self.model.jobs.finished.disconnect(self._job_finished)
        self.export_button.setEnabled(True)
        if outcome == "failed":
            self.status.setText("Export failed (see the error message); nothing was written.")
        elif outcome == "cancelled":
            self.status.setText("Export cancelled; nothing was written.")
