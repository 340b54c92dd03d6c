"""Argument groups and helpers shared by the ``osrm`` command families."""

from __future__ import annotations

import sys
from pathlib import Path

from osrm_gui.core.errors import OsrmError


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (ranks, sizes, counts)."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    return _bounded_int(text, 0)


def _bounded_int(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is less than {low}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and ±inf are typos, not settings)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def coefficient(text: str) -> float:
    """An argparse type for coefficients and λ: finite, and within the limit every merge enforces."""
    import argparse

    from osrm_gui.core.merge.spec import COEFFICIENT_LIMIT

    value = finite_float(text)
    if abs(value) > COEFFICIENT_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is beyond ±{COEFFICIENT_LIMIT:g}")
    return value


def add_base(p):
    g = p.add_argument_group("base model")
    g.add_argument("--base", metavar="PATH|ID", help="local Hugging Face model folder, or a Hub id org/name[@revision] "
                   "(default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--online", action="store_true", help="let Hub ids missing from the local Hugging Face cache be downloaded "
                   "(default: cache only, no network)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 …")
    g.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from the folder to run (off by default)")


def add_tasks(p):
    g = p.add_argument_group("evaluation data")
    g.add_argument("--task", action="append", metavar="SPEC", help="demo:NAME or PATH[@text=COL,pair=COL,label=COL,name=NAME,metric=M]; repeat per task "
                   "(default: the tasks recorded in the adapters)")
    g.add_argument("--split", default="test", choices=["train", "validation", "test"])
    g.add_argument("--limit", type=positive_int, metavar="N", help="score only the first N examples of each task")
    g.add_argument("--batch-size", type=positive_int, default=64)
    g.add_argument("--max-length", type=positive_int, default=128)


def add_merge(p):
    g = p.add_argument_group("merge")
    g.add_argument("adapters", nargs="*", metavar="ADAPTER", help="PEFT LoRA adapter folders or Hub ids org/name[@revision]")
    g.add_argument("--method", default="task_arithmetic", help="merge method (see `osrm methods`)")
    g.add_argument("--coef", type=coefficient, nargs="+", metavar="C", help="one coefficient per adapter (default 1.0 each)")
    g.add_argument("--lambda", dest="lam", type=coefficient, default=1.0, help="global scale λ of the merged update (default 1.0)")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter, e.g. density=0.5; repeatable")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of random methods (DARE)")
    g.add_argument("--recipe", metavar="FILE", help="replay a recipe written by `osrm export --kind recipe` (replaces the options above)")


def add_merge_command(sub, name: str, help: str):
    """A sub-command that merges adapters and scores tasks: the merge, data and base options."""
    p = sub.add_parser(name, help=help)
    add_merge(p)
    add_tasks(p)
    add_base(p)
    return p


def add_executor(p, what: str = "points"):
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help=f"where the {what} are computed: local (this process, one after the other; the default) or ray "
                        "(side by side on Ray workers; pip install 'osrm-gui[ray]')")
    g.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="the Ray cluster to join: auto (the one `ray start --head` runs here) or ray://HOST:PORT "
                        "(default: start a Ray instance on this machine)")
    g.add_argument("--workers", type=positive_int, metavar="N", help="Ray workers, each loading the model once (default 1)")
    g.add_argument("--gpus-per-worker", type=finite_float, metavar="G", help="GPUs each Ray worker reserves (default 0: CPU workers)")
    g.add_argument("--threads-per-worker", type=positive_int, metavar="T",
                   help="torch threads of each Ray worker (default: this machine's CPUs shared out among the workers)")


def executor_from(args):
    """The ``--executor`` options as settings, checked (and, for Ray, connected) before any model loads."""
    from osrm_gui.core.execution import ExecutorSettings

    ray_only = {"--address": args.address, "--workers": args.workers, "--gpus-per-worker": args.gpus_per_worker,
                "--threads-per-worker": args.threads_per_worker}
    if args.executor == "local":
        given = [name for name, value in ray_only.items() if value is not None]
        if given:
            raise OsrmError(f"{', '.join(given)}: only with --executor ray")
        return None
    settings = ExecutorSettings("ray", args.address, args.workers or 1, args.gpus_per_worker or 0.0, args.threads_per_worker)
    from osrm_gui.core.execution.ray_executor import connect

    connect(settings)
    print(f"executor: {settings.describe()}", file=sys.stderr)
    return settings


def add_history(p):
    p.add_argument("--history", metavar="FILE", help="run-history database (default: the per-user one; the app keeps one next to each workspace)")
    p.add_argument("--no-history", action="store_true", help="neither read nor record points")


def parse_params(items: list[str]) -> dict:
    """``--param NAME=VALUE`` options as a dict (values are validated by the method)."""
    params = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise OsrmError(f"--param {item!r}: expected NAME=VALUE")
        params[key] = value
    return params


def spec_from(args):
    from osrm_gui.core.merge.spec import MergeSpec

    return MergeSpec(args.method, args.coef, args.lam, parse_params(args.param), args.seed)


def workspace_and_spec(args, need_tasks=True):
    from osrm_gui.core.export import check_recipe_data, read_recipe, recipe_base, recipe_task_specs
    from osrm_gui.core.workspace import open_workspace

    task_specs = getattr(args, "task", None)
    if args.recipe:
        recipe, adapters, spec = read_recipe(args.recipe)
        base_path = args.base or recipe_base(recipe)
        paths = [a.path for a in adapters]
        recorded = recipe_task_specs(recipe)  # a data-dependent merge replays on the data it read
        task_specs, need_tasks = task_specs or recorded, need_tasks or bool(recorded)
    else:
        if not args.adapters:
            raise OsrmError("no adapters given (name adapter folders, or --recipe FILE)")
        base_path, paths, spec = args.base, args.adapters, spec_from(args)
    ws = open_workspace(base_path, paths, task_specs, args.device, args.dtype, args.trust_remote_code, need_tasks)
    ws.batch_size = getattr(args, "batch_size", None) or ws.batch_size
    ws.max_length = getattr(args, "max_length", None) or ws.max_length
    if args.recipe:
        check_recipe_data(args.recipe, recipe, ws.tasks, ws.data_samples(spec))
        if ws.base.fingerprint != recipe["base"]["fingerprint"]:
            print(f"warning: base {ws.base.path} differs from the recipe's ({recipe['base']['name']})", file=sys.stderr)
    print_warnings(ws.warnings)
    return ws, spec


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def open_history(args):
    from osrm_gui.core.explore.history import History, default_history_path

    if getattr(args, "no_history", False):
        return None
    return History(args.history or default_history_path())


def write_csv(path, rows: list[dict], force: bool, inputs=()) -> None:
    from osrm_gui.core.atomic import atomic_write_text
    from osrm_gui.core.tables import rows_to_csv

    atomic_write_text(path, rows_to_csv(rows), force=force, inputs=inputs)
    print(f"wrote {path}")


def cli_inputs(args) -> list[Path]:
    """Every local file or folder the command reads, from its arguments."""
    found = []
    for name in ("adapters", "adapter", "base", "recipe", "history", "task", "osrm_task"):
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Path)) and item:
                path = Path(str(item).partition("@")[0] if name in ("task", "osrm_task") else item).expanduser()
                if path.exists():
                    found.append(path)
    return found


def check_outputs(args, *files, folders=()) -> None:
    """Before any work: each output is new (or --force), is no input, and a file's folder exists."""
    from osrm_gui.core.atomic import refuse_existing

    inputs = cli_inputs(args)
    for path in [*files, *folders]:
        if path is None:
            continue
        refuse_existing(path, getattr(args, "force", False), inputs)
    for path in files:
        if path is not None and not Path(path).expanduser().parent.is_dir():
            raise OsrmError(f"{path}: the folder {Path(path).parent} does not exist")
