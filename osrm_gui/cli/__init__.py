"""``osrm`` — every action of the app, headless. A thin layer over ``osrm_gui.core``: one module per
command family, each adding its sub-commands to the parser."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from osrm_gui import __version__  # noqa: E402
from osrm_gui.cli import adamerging, analyze, continual, demo, explore, guard, info, merging, osrm, search  # noqa: E402
from osrm_gui.core.errors import OsrmError  # noqa: E402
from osrm_gui.core.inputs import hub  # noqa: E402

EXAMPLES = """\
examples:
  osrm demo run                                   merge the built-in demo adapters and print per-task metrics
  osrm info resources/demo/adapters/*             what the adapters are, and whether they fit the base
  osrm train --task demo:word-topic --out my-adapter --steps 300
  osrm merge ADAPTER1 ADAPTER2 --method ties --param density=0.5 --lambda 1.0
  osrm export ADAPTER1 ADAPTER2 --kind full --out merged-models
  osrm merge --recipe merged.recipe.json          replay a saved merge
"""


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one line on stderr, like every other error (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="osrm", description="Merge LoRA adapters headless: inspect, train, merge, evaluate, export.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"osrm-gui {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (info, osrm, merging, explore, search, analyze, guard, continual, adamerging, demo):
        family.add_parsers(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it unwinds as on Ctrl-C: temporary outputs removed."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Library deprecation notices are for developers, not for someone merging adapters.
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    hub.configure(online=getattr(args, "online", False))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except OsrmError as exc:
        print(f"osrm: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("osrm: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("osrm: cancelled", file=sys.stderr)
        return 130

