"""``osrm`` — every action of the app, headless. A thin layer over ``osrm_gui.core``: one module per
command family, each adding its sub-commands to the parser."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from osrm_gui import __version__  # noqa: E402
from osrm_gui.cli import analyze, demo, explore, info, merging, osrm  # noqa: E402
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osrm", description="Merge LoRA adapters headless: inspect, train, merge, evaluate, export.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"osrm-gui {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (info, osrm, merging, explore, analyze, demo):
        family.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Library deprecation notices are for developers, not for someone merging adapters.
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    hub.configure(online=getattr(args, "online", False))
    try:
        return args.func(args)
    except OsrmError as exc:
        print(f"osrm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("osrm: cancelled", file=sys.stderr)
        return 130

