"""The Optuna side of the merge search: samplers, and studies kept in an SQLite storage that a
later search continues, refusing one made with other settings."""

from __future__ import annotations

import json
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.search_space import SearchSpace
from osrm_gui.core.workspace import Workspace

SAMPLERS = ("tpe", "cmaes", "nsga2", "random")
CMAES_SIGMA0 = 1 / 6  # mergekit-evolve's, in Optuna's [0, 1]-scaled coordinates
NSGA2_POPULATION = 50  # Optuna's default; smaller for budgets too short to breed such generations


def study_settings(ws: Workspace, space: SearchSpace, chunks, objectives: tuple[str, ...], normalise: bool,
                   min_task_fraction: float | None) -> dict:
    """What makes two runs the same study: the data, the adapters, the space, the chunks and the objective."""
    settings = {
        "base": ws.base.fingerprint, "adapters": [a.content_hash for a in ws.adapters],
        "tasks": {t.name: t.content_hash() for t in ws.tasks}, "space": space.describe(), "chunk": chunks.size,
        "order_seed": chunks.seed, "objectives": list(objectives), "normalise": normalise, "min_task_fraction": min_task_fraction,
        "evaluation": {"batch_size": ws.batch_size, "max_length": ws.max_length},
    }
    return json.loads(json.dumps(settings))  # as the storage gives it back (tuples become lists)


def make_sampler(name: str, seed: int, x0: dict | None, trials: int | None, parallel: bool = False):
    """``parallel``: several trials are in flight at once (TPE then gives the running ones a
    pessimistic value, its constant liar, so that it does not draw the same point again)."""
    import optuna

    with warnings.catch_warnings():
        # multivariate/group TPE are marked experimental, CMA-ES's x0 and sigma0 deprecated in Optuna 4.9 (they
        # still work, and they are what METHODS.md §6 asks for): not the user's concern
        warnings.simplefilter("ignore")
        if name == "tpe":
            # group: each method's own parameters form their own subspace (a conditional space)
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, constant_liar=parallel)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401  (Optuna's CmaEsSampler imports it lazily, at the first trial)
            except ImportError:
                raise OsrmError("the cmaes sampler needs the 'cmaes' package, which is not installed (pip install cmaes)") from None
            return optuna.samplers.CmaEsSampler(x0=x0, sigma0=CMAES_SIGMA0, seed=seed)
        if name == "nsga2":
            population = NSGA2_POPULATION if trials is None else min(NSGA2_POPULATION, max(4, trials // 2))
            return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)


def open_study(storage: str | Path | None, name: str, n_objectives: int, settings: dict, prune: bool, chunks: int):
    """The study called ``name`` in ``storage`` (an SQLite file; None: in memory), made or continued;
    Hyperband pruning over ``chunks`` rungs when ``prune``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the progress bar
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=chunks, reduction_factor=3) if prune else optuna.pruners.NopPruner()
    where = "memory"
    url = None
    if storage is not None:
        path = Path(storage).expanduser()
        _check_storage(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OsrmError(f"{path}: cannot create the study storage ({exc.strerror})") from None
        where, url = str(path), f"sqlite:///{path.resolve()}"
    try:
        study = optuna.create_study(storage=url, study_name=name, directions=["maximize"] * n_objectives, load_if_exists=True,
                                    pruner=pruner)
        known = study.user_attrs.get("settings")
    except Exception as exc:  # SQLAlchemy's and Optuna's many errors: one line, naming the file
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OsrmError(f"{where}: cannot use as a study storage ({message})") from None
    if known is None:
        if study.trials:
            raise OsrmError(f"{where}: study {name!r} was not made by osrm search; name another study")
        study.set_user_attr("settings", settings)
    elif known != settings:
        differ = sorted(k for k in set(known) | set(settings) if known.get(k) != settings.get(k))
        raise OsrmError(f"{where}: study {name!r} was searched with other settings ({', '.join(differ)}); "
                        "continue it with the same ones, or name another study")
    return study


def _check_storage(path: Path) -> None:
    """Refuse, without writing to it, a file that is not an SQLite database, and a run history
    (Optuna would add its tables to it, and the history would then be refused as foreign)."""
    if not path.is_file() or path.stat().st_size == 0:
        if path.is_dir():
            raise OsrmError(f"{path}: is a folder; name a file for the study storage")
        return
    with open(path, "rb") as fh:
        if not fh.read(16).startswith(b"SQLite format 3"):
            raise OsrmError(f"{path}: not a study storage (not an SQLite file)")
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise OsrmError(f"{path}: cannot read the study storage ({exc})") from None
    if "points" in tables:
        raise OsrmError(f"{path}: is a run history, not a study storage; name another file")
    if tables and "studies" not in tables:
        raise OsrmError(f"{path}: not a study storage (its tables: {', '.join(sorted(tables))})")
