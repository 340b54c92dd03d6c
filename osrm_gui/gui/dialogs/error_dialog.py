"""Errors from jobs: the one-line reason up front, the traceback (for bugs, not bad input) under "details";
and the one question before replacing a user's files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget, title: str, reason: str, details: str = "") -> QMessageBox:
    box = QMessageBox(QMessageBox.Warning, title, reason, QMessageBox.Ok, parent)
    box.setObjectName("errorDialog")
    if details:
        box.setDetailedText(details)
    box.open()  # not exec(): the app keeps running while the message is shown
    return box


def confirm_replace(parent: QWidget, paths: list[Path]) -> bool:
    """Ask before replacing existing outputs (the app's counterpart of the CLI's --force)."""
    names = "\n".join(str(p) for p in paths[:6]) + ("\n…" if len(paths) > 6 else "")
    answer = QMessageBox.question(parent, "Replace?", f"{'This exists' if len(paths) == 1 else 'These exist'} already:\n{names}\n\nReplace?",
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes
