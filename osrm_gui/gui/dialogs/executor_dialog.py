"""Settings ▸ Where sweeps and searches run: in this process, or on the workers of a Ray cluster.
The choice is an app setting (kept in QSettings, not in workspaces). Nothing here imports or
starts Ray: a Ray executor connects inside the job, off the GUI thread."""

from __future__ import annotations

import importlib.util
import json

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QButtonGroup, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QRadioButton, QSpinBox, QVBoxLayout,
    QWidget,
)

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.execution import LOCAL, ExecutorSettings

SETTINGS_KEY = "executor"
INSTALL_RAY = "pip install 'osrm-gui[ray]'"
ADDRESS_HELP = ("empty: start a Ray instance on this machine · auto: the cluster `ray start --head` runs here · "
                "ray://HOST:PORT: a remote cluster (Ray Client) · HOST:PORT: the head of a cluster this machine belongs to")


def ray_installed() -> bool:
    """Whether Ray can be imported (found, not imported: importing it takes seconds)."""
    return importlib.util.find_spec("ray") is not None


def check_address(text: str) -> str | None:
    """The Ray address typed, or None (empty: a local instance); OsrmError in one line for a malformed one."""
    address = text.strip()
    if not address or address == "auto":
        return address or None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OsrmError(f"Ray address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT (empty: start a local instance)")
    return address


def saved_executor(settings: QSettings) -> tuple[ExecutorSettings, str | None]:
    """The executor kept in the app's settings (local when none), and why a saved one was unusable."""
    value = settings.value(SETTINGS_KEY)
    if not value:
        return LOCAL, None
    try:
        data = json.loads(str(value))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return ExecutorSettings.from_dict(data), None
    except (ValueError, TypeError, OsrmError) as exc:
        return LOCAL, f"The saved executor setting is unusable ({exc}); sweeps and searches run in this process"


def remember_executor(settings: QSettings, executor: ExecutorSettings) -> None:
    # one JSON value: an INI file reads numbers and None back as strings
    settings.setValue(SETTINGS_KEY, json.dumps(executor.to_dict()))


class ExecutorDialog(QDialog):
    def __init__(self, current: ExecutorSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Where sweeps and searches run")
        self.setObjectName("executorDialog")
        self.local = QRadioButton("Local: in this process, one point or trial after the other")
        self.local.setObjectName("executorLocal")
        self.ray = QRadioButton("Ray: side by side on Ray workers, each loading the model once")
        self.ray.setObjectName("executorRay")
        self.kind = QButtonGroup(self)
        self.kind.addButton(self.local)
        self.kind.addButton(self.ray)

        self.address = QLineEdit(current.address or "")
        self.address.setObjectName("rayAddress")
        self.address.setPlaceholderText("empty: start a local Ray instance")
        self.address.setToolTip(ADDRESS_HELP)
        address_help = QLabel(ADDRESS_HELP.replace(" · ", "<br>").replace("`ray start --head`", "<code>ray start --head</code>"))
        address_help.setTextFormat(Qt.RichText)  # line breaks of its own: no word wrap, which QFormLayout pads with blank space
        font = address_help.font()
        font.setPointSizeF(font.pointSizeF() * 0.9)  # a hint, not a control
        address_help.setFont(font)
        self.workers = QSpinBox(minimum=1, maximum=1024, value=current.workers)
        self.workers.setObjectName("rayWorkers")
        self.workers.setToolTip("Ray actors, each holding the base, the adapters and the task data, scoring one point at a time")
        self.threads = QSpinBox(minimum=0, maximum=1024, value=current.threads_per_worker or 0, specialValueText="CPUs shared out")
        self.threads.setObjectName("rayThreads")
        self.threads.setToolTip("Torch threads per worker; Ray reserves as many CPUs for it (CPUs shared out: this machine's CPUs "
                                "divided among the workers)")
        self.gpus = QDoubleSpinBox(minimum=0.0, maximum=64.0, value=current.gpus_per_worker, singleStep=0.25, decimals=2)
        self.gpus.setObjectName("rayGpus")
        self.gpus.setToolTip("GPUs Ray reserves per worker (fractions share one); above 0 the workers compute on CUDA")
        self.ray_fields = QWidget()
        form = QFormLayout(self.ray_fields)
        form.setContentsMargins(24, 0, 0, 0)
        form.addRow("Address", self.address)
        form.addRow("", address_help)
        form.addRow("Workers", self.workers)
        form.addRow("Threads per worker", self.threads)
        form.addRow("GPUs per worker", self.gpus)

        self.missing = QLabel(f"Ray is not installed. To run on Ray: <code>{INSTALL_RAY}</code>, then restart the app.")
        self.missing.setObjectName("rayMissing")
        self.missing.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setObjectName("executorSummary")
        self.summary.setWordWrap(True)
        self.error = QLabel()
        self.error.setObjectName("executorError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020")
        note = QLabel("Applies from the next sweep or search; one running now keeps its workers.")
        note.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        for widget in (self.local, self.ray, self.ray_fields, self.missing, self.summary, self.error, note, self.buttons):
            layout.addWidget(widget)
        available = ray_installed()
        self.ray.setEnabled(available)
        self.missing.setVisible(not available)
        (self.ray if current.remote and available else self.local).setChecked(True)
        for signal in (self.kind.buttonToggled, self.address.textChanged, self.workers.valueChanged, self.threads.valueChanged,
                       self.gpus.valueChanged):
            signal.connect(self._validate)
        self.setMinimumWidth(560)
        self._validate()

    def settings(self) -> ExecutorSettings:
        """The settings chosen; OsrmError in one line when they cannot be used."""
        if not self.ray.isChecked():
            return LOCAL
        return ExecutorSettings("ray", check_address(self.address.text()), self.workers.value(), self.gpus.value(),
                                self.threads.value() or None)

    def accept(self) -> None:
        try:
            self.settings()
        except OsrmError:
            return  # Enter in the address field: the error is already shown
        super().accept()

    def _validate(self, *_) -> None:
        self.ray_fields.setEnabled(self.ray.isChecked())
        try:
            chosen = self.settings()
        except OsrmError as exc:
            self.error.setText(str(exc))
            self.error.show()
            self.summary.hide()
            self.buttons.button(QDialogButtonBox.Ok).setEnabled(False)
            return
        self.error.clear()
        self.error.hide()
        self.summary.setText(f"Sweeps and searches will run: {chosen.describe()}")
        self.summary.show()
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(True)
