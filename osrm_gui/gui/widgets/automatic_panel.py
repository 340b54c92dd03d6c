"""The "Automatic" tab: merges the app finds by itself — AdaMerging (coefficients learned on
unlabelled inputs), Search (Optuna over methods and their settings) and Guard (is one adapter
spoiling the merge?) — one inner tab each, so the main tab bar stays as wide as it was."""

from __future__ import annotations

from PySide6.QtWidgets import QTabWidget, QWidget

from osrm_gui.gui.state import SessionModel
from osrm_gui.gui.widgets.adamerging_panel import AdaMergingPanel
from osrm_gui.gui.widgets.guard_panel import GuardPanel
from osrm_gui.gui.widgets.search_panel import SearchPanel


class AutomaticPanel(QTabWidget):
    def __init__(self, model: SessionModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("automaticTabs")
        self.setDocumentMode(True)
        self.adamerging = AdaMergingPanel(model)
        self.search = SearchPanel(model)
        self.guard = GuardPanel(model)
        self.addTab(self.adamerging, "AdaMerging")
        self.addTab(self.search, "Search")
        self.addTab(self.guard, "Guard")
        self.setTabToolTip(0, "Learn the merge coefficients by minimising prediction entropy on unlabelled inputs")
        self.setTabToolTip(1, "Search methods, λ and coefficients with Optuna on validation")
        self.setTabToolTip(2, "Flag an adapter that spoils the merge: data-free pre-screen and leave-one-out")
