"""Errors from jobs: the one-line reason up front, the traceback under "details"."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget, title: str, reason: str, details: str = "") -> QMessageBox:
    box = QMessageBox(QMessageBox.Warning, title, reason, QMessageBox.Ok, parent)
    box.setObjectName("errorDialog")
    if details:
        box.setDetailedText(details)
    box.open()  # not exec(): the app keeps running while the message is shown
    return box
