"""``osrm-gui`` entry point."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ORGANISATION = "osrm-gui"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="osrm-gui", description="LoRA merging workbench (opens on the built-in demo)")
    parser.add_argument("adapters", nargs="*", help="PEFT LoRA adapter folders or Hub ids (org/name[@revision]) to load")
    parser.add_argument("--base", help="local Hugging Face model folder or Hub id (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--workspace", help="a workspace file saved by the app")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 … (default auto: CUDA when present; remembered until changed)")
    parser.add_argument("--preview-size", type=int, help="test examples per task in the live preview, at least 10 (remembered)")
    args = parser.parse_args(argv)
    if args.preview_size is not None and args.preview_size < 10:
        parser.error("--preview-size must be at least 10")
    if args.device is not None:
        from osrm_gui.core.device import pick_device
        from osrm_gui.core.errors import OsrmError

        try:
            if args.device != "auto":
                pick_device(args.device)
        except OsrmError as exc:
            parser.error(str(exc))
    return args


def settings():
    from PySide6.QtCore import QSettings

    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANISATION, "osrm-gui")


def build_window(args: argparse.Namespace):
    from osrm_gui.core.session import MergeSession
    from osrm_gui.gui.main_window import MainWindow
    from osrm_gui.gui.state import SessionModel

    from osrm_gui.core.inputs import hub
    from osrm_gui.gui.main_window import HUB_DOWNLOADS

    store = settings()
    hub.configure(online=store.value(HUB_DOWNLOADS, False, type=bool))
    if args.device:
        store.setValue("device", args.device)
    if args.preview_size is not None:
        store.setValue("preview_size", args.preview_size)
    device = store.value("device") or None
    session = MergeSession(device=None if device == "auto" else device, preview_limit=int(store.value("preview_size", 100)))
    model = SessionModel(session)
    window = MainWindow(model, store)
    if args.workspace:
        model.open_workspace(args.workspace)
    elif args.base or args.adapters:
        model.open_paths(args.base, args.adapters)
    else:
        model.open_demo()
    return window


def main(argv: list[str] | None = None) -> int:
    import warnings

    from PySide6.QtWidgets import QApplication

    warnings.filterwarnings("ignore", category=FutureWarning)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("osrm-gui")
    app.setOrganizationName(ORGANISATION)
    from osrm_gui.gui.gc_guard import MainThreadCollector

    collector = MainThreadCollector(parent=app)
    window = build_window(args)
    window.show()
    try:
        return app.exec()
    finally:
        collector.stop()


if __name__ == "__main__":
    sys.exit(main())
