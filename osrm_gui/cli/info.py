"""``osrm info`` and ``osrm methods``: what the base, the adapters and the merge methods are."""

from __future__ import annotations

import sys

from osrm_gui.cli.console import format_table
from osrm_gui.cli.options import add_base


def cmd_info(args):
    from osrm_gui.core.inputs.adapters import load_adapter
    from osrm_gui.core.merge.spec import validate_all
    from osrm_gui.core.inputs.models import load_base
    from osrm_gui.core.device import describe_device

    adapters = [load_adapter(p) for p in args.adapters]
    base = load_base(args.base, args.device, args.dtype, args.trust_remote_code)
    print(f"base: {base.name}  ({base.model_type}, {base.parameter_count() / 1e6:.1f}M parameters, {base.dtype}, {describe_device(base.device)})")
    print(f"      {base.path}")
    print(f"      default LoRA targets: {','.join(base.default_targets)}; head: {base.head_name}")
    for warning in validate_all(base, adapters):
        print(f"warning: {warning}", file=sys.stderr)
    if adapters:
        print()
        print(format_table([{k: v for k, v in a.summary().items() if k != "path"} for a in adapters]))
    return 0


def _bounds(param) -> str:
    if param.choices:
        return "one of " + ", ".join(param.choices)
    low = "" if param.minimum is None else f"{param.minimum:g} {'<' if param.min_exclusive else '≤'} "
    high = "" if param.maximum is None else f" ≤ {param.maximum:g}"
    return f"{low}{param.name}{high}"


def cmd_methods(args):
    from osrm_gui.core.merge import METHODS

    for method in METHODS.values():
        print(f"{method.name}  — {method.label}")
        print(f"    {method.doc}")
        for p in method.params:
            print(f"    --param {p.name}=… (default {p.default}; {_bounds(p)}): {p.doc}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("info", help="summarise the base model and adapters, and check they fit")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    add_base(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("methods", help="list the merge methods and their parameters")
    p.set_defaults(func=cmd_methods)
