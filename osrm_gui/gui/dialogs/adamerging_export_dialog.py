"""The export dialog, writing a learned AdaMerging merge (core.explore.adamerging.export_result)
instead of the session's merge: the same choices, with a recipe only for a plain task-wise result
and the exact (uncompressed) adapter only where the learned merge is low-rank (not ++)."""

from __future__ import annotations

from osrm_gui.core.explore.adamerging import AdaMergingResult, export_result
from osrm_gui.gui.dialogs.export_dialog import DEFAULT_NAMES, ExportDialog
from osrm_gui.gui.state import SessionModel


class _ResultExport:
    """What the export dialog asks of a model, for one AdaMerging result: its jobs, and an export
    of the result on the session's current workspace (the panel checked the adapters are the same)."""

    def __init__(self, model: SessionModel, result: AdaMergingResult):
        self.model, self.result, self.jobs = model, result, model.jobs

    def export(self, kind: str, out: str, rank: int | None, force: bool, on_done) -> None:
        session = self.model.session
        self.jobs.start(f"Export {self.result.label} ({kind})",
                        lambda: export_result(session.workspace(), self.result, kind, out, rank, force), on_done)


class AdaMergingExportDialog(ExportDialog):
    def __init__(self, model: SessionModel, result: AdaMergingResult, parent=None, folder: str = "."):
        self.result = result
        super().__init__(_ResultExport(model, result), parent, folder)
        self.setWindowTitle(f"Export {result.label}")
        recipe = next(b for b in self.group.buttons() if b.property("kind") == "recipe")
        recipe.setEnabled(result.replayable)
        if not result.replayable:
            recipe.setToolTip("Only a plain task-wise AdaMerging is a registered merge (concat) that a recipe can replay")
        self.exact.setChecked(not result.plus)  # a concat LoRA is exact as it is: offered first

    def _update(self) -> None:
        defaults = {f"{self.folder}/{name}" for name in DEFAULT_NAMES.values()}
        if not self.path.text() or self.path.text() in defaults:
            self.path.setText(f"{self.folder}/{DEFAULT_NAMES[self.kind]}")
        low_rank = not self.result.plus  # task- and layer-wise are a concat LoRA; ++ is dense
        self.exact.setEnabled(self.kind == "adapter" and low_rank)
        if not low_rank:
            self.exact.setChecked(False)
        self.rank.setEnabled(self.kind == "adapter" and not self.exact.isChecked())
