"""Tasks: named labelled texts with a metric, loaded from files or from a registered task source (the demo suite)."""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.metrics import METRICS, default_metric

SPLITS = ("train", "validation", "test")
TABLE_READERS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None, ".parquet": None}


@dataclass
class TaskSplit:
    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> "TaskSplit":
        if n is None or n >= len(self):
            return self
        return TaskSplit(self.texts[:n], self.labels[:n], self.pairs[:n] if self.pairs else None)


@dataclass
class Task:
    name: str
    splits: dict[str, TaskSplit]
    label_names: list[str] | None  # None: regression
    metric: str
    source: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # rows the loader left out, and why

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    def split(self, name: str) -> TaskSplit:
        try:
            return self.splits[name]
        except KeyError:
            raise OsrmError(f"task {self.name!r} has no {name!r} split (it has {', '.join(self.splits)})") from None

    def content_hash(self) -> str:
        digest = hashlib.sha256(self.name.encode())
        for split_name in sorted(self.splits):
            split = self.splits[split_name]
            digest.update(split_name.encode())
            digest.update("\x1f".join(split.texts).encode())
            if split.pairs:
                digest.update("\x1f".join(split.pairs).encode())
            digest.update(np.ascontiguousarray(split.labels).tobytes())
        return digest.hexdigest()[:16]

    def renumber(self, label_names: list[str]) -> None:
        """Class ids in the order of ``label_names``, a permutation of this task's."""
        position = {name: i for i, name in enumerate(label_names)}
        new_ids = np.array([position[name] for name in self.label_names], dtype=np.int64)
        for split in self.splits.values():
            split.labels = new_ids[split.labels]
        self.label_names = list(label_names)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "labels": "regression" if self.is_regression else len(self.label_names),
            "metric": self.metric,
            **{split: len(self.splits[split]) for split in SPLITS if split in self.splits},
            "source": self.source,
        }


def seeded_split(n: int, seed: int, validation: float, test: float) -> dict[str, np.ndarray]:
    """Index arrays for train/validation/test, a fixed function of ``n`` and ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test))
    n_val = int(round(n * validation))
    return {"test": order[:n_test], "validation": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def _read_table(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep=TABLE_READERS[suffix])
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise OsrmError(f"{path}: the file is empty") from None
    except (ValueError, OSError) as exc:
        raise OsrmError(f"{path}: cannot read as {suffix[1:]} ({_first_line(exc)})") from None
    raise OsrmError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .parquet or a datasets folder")


def _read_datasets_folder(path: Path):
    import pandas as pd
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise OsrmError(f"{path}: not a datasets folder saved with save_to_disk ({_first_line(exc)})") from None
    if isinstance(loaded, Dataset):
        return loaded.to_pandas()
    assert isinstance(loaded, DatasetDict)
    frames = []
    for split_name, dataset in loaded.items():
        frame = dataset.to_pandas()
        frame["split"] = {"valid": "validation", "dev": "validation"}.get(split_name, split_name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def load_task_file(
    path: str | Path,
    name: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    split_column: str = "split",
    metric: str | None = None,
    regression: bool | None = None,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.2,
) -> Task:
    """A task from CSV/TSV/JSONL/Parquet or a ``save_to_disk`` datasets folder.

    Rows with a ``split`` column keep their split; otherwise a seeded split is made.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise OsrmError(f"{path}: task data not found")
    frame = _read_datasets_folder(path) if path.is_dir() else _read_table(path)
    frame, warnings = _usable_rows(frame, path, {"text": text_column, "pair": text_pair_column, "label": label_column})
    labels, label_names = _labels(frame[label_column], path, label_column, regression)
    regression = label_names is None
    metric = _checked_metric(metric or default_metric(regression), path, regression)
    texts = frame[text_column].astype(str).tolist()
    pairs = frame[text_pair_column].astype(str).tolist() if text_pair_column else None

    if split_column in frame.columns:
        split_values = frame[split_column].astype(str).str.lower().replace({"valid": "validation", "dev": "validation", "val": "validation"})
        indices = {s: np.flatnonzero(split_values.to_numpy() == s) for s in SPLITS}
        if len(indices["test"]) == 0:
            raise OsrmError(f"{path}: the {split_column!r} column has no 'test' rows")
    else:
        indices = seeded_split(len(frame), seed, validation, test)
    splits = {
        s: TaskSplit([texts[i] for i in idx], labels[idx], [pairs[i] for i in idx] if pairs else None)
        for s, idx in indices.items()
        if len(idx)
    }
    if "train" not in splits:
        raise OsrmError(f"{path}: no training rows after splitting")
    return Task(name=name or path.stem, splits=splits, label_names=label_names, metric=metric, source=str(path), warnings=warnings)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# What each column option is called in a task spec and in messages.
ROLE_OPTIONS = {"text": ("text", "text"), "pair": ("pair", "second text"), "label": ("label", "label")}


def _usable_rows(frame, path: Path, columns: dict[str, str | None]):
    """The rows that can be examples, and warnings for those left out. Each named column
    must exist and hold what its role needs: reading converts anything to text, so a
    list or number put where a text belongs would otherwise be scored as its repr."""
    if len(frame) == 0:
        raise OsrmError(f"{path}: no rows")
    frame.columns = present = list(map(str, frame.columns))  # JSON arrays give integer column names
    columns = {role: column for role, column in columns.items() if column is not None}
    for role, column in columns.items():
        if column not in present:
            raise OsrmError(f"{path}: no {ROLE_OPTIONS[role][1]} column {column!r} (columns: {', '.join(present)}); set it with the column options")
    for role, column in columns.items():
        _check_kind(frame[column], path, column, role)
    warnings: list[str] = []
    for role, column in columns.items():
        frame = _drop_missing(frame, path, column, role, warnings)
    return frame, warnings


def _missing(values):
    return values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)


def _kind(value) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "booleans"
    if isinstance(value, numbers.Number):
        return "numbers"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "lists"
    if isinstance(value, dict):
        return "dicts"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return f"{type(value).__name__} values"


def _kinds(values):
    """The kinds of the values present, from the column's type when that settles it."""
    import pandas as pd

    if values.isna().all():
        return iter(())  # an empty column is reported as empty, not as numbers
    if isinstance(values.dtype, pd.StringDtype):
        return iter(["text"])
    if values.dtype.kind in "iufc":
        return iter(["numbers"])
    if values.dtype.kind == "b":
        return iter(["booleans"])
    return (_kind(v) for v in values[~_missing(values)])


def _check_kind(values, path: Path, column: str, role: str) -> None:
    allowed = ("text", "numbers", "booleans") if role == "label" else ("text",)
    kinds = _kinds(values)
    wrong = next((k for k in kinds if k not in allowed), None)
    if wrong is None:
        return
    option, what = ROLE_OPTIONS[role]
    expected = "class names or numbers" if role == "label" else "text"
    raise OsrmError(f"{path}: column {column!r} holds {wrong}, not {expected}; name the {what} column with @{option}=COLUMN")


def _drop_missing(frame, path: Path, column: str, role: str, warnings: list[str]):
    missing = _missing(frame[column])
    what = ROLE_OPTIONS[role][1]
    if missing.all():
        raise OsrmError(f"{path}: the {what} column {column!r} is empty (no row has a {what})")
    if missing.any():
        warnings.append(f"{path}: {int(missing.sum())} of {len(frame)} rows have no {what} in column {column!r}; they are left out")
    return frame[~missing]


def _labels(values, path: Path, column: str, regression: bool | None) -> tuple[np.ndarray, list[str] | None]:
    """Float targets (regression; label names None) or class ids into the sorted label names."""
    if regression is None:
        # Many distinct fractional values: scores to fit, not classes to tell apart.
        regression = values.dtype.kind == "f" and not _integral(values.to_numpy()).all() and values.nunique() > 10
    if regression:
        return _regression_targets(values, path, column), None
    return _class_ids(values, path, column)


def _integral(numbers_: np.ndarray) -> np.ndarray:
    return np.isfinite(numbers_) & (numbers_ == np.round(numbers_))


def _regression_targets(values, path: Path, column: str) -> np.ndarray:
    import pandas as pd

    targets = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    bad = ~np.isfinite(targets)
    if bad.any():
        example = values.to_numpy()[np.flatnonzero(bad)[0]]
        raise OsrmError(f"{path}: column {column!r} holds {example!r}, not a finite number; a regression task (@regression) needs numeric labels")
    return targets.astype(np.float32)


def _class_name(value, path: Path, column: str) -> str:
    """A label value as a class name; integers written as floats (1.0, as pandas reads an
    integer column with gaps) name the same class as 1."""
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise OsrmError(f"{path}: column {column!r} holds labels such as {float(value):g}, which are not class ids; add @regression if the task is a regression")
        return str(int(value))
    return str(value)


def _class_ids(values, path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    names = {v: _class_name(v, path, column) for v in values.unique()}
    label_names = sorted(set(names.values()), key=_natural_key)
    if len(label_names) < 2:
        raise OsrmError(f"{path}: only one label value ({label_names[0]!r}) in column {column!r}; a classification task needs at least two")
    index = {name: i for i, name in enumerate(label_names)}
    return np.array([index[names[v]] for v in values], dtype=np.int64), label_names


def _checked_metric(metric: str, path: Path, regression: bool) -> str:
    if metric not in METRICS:
        raise OsrmError(f"{path}: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if METRICS[metric][1] != regression:
        kind = "regression" if regression else "classification"
        fitting = [name for name, (_, for_regression) in METRICS.items() if for_regression == regression]
        raise OsrmError(f"{path}: metric {metric!r} does not score a {kind} task; use one of {', '.join(fitting)}")
    return metric


def _natural_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


TASK_SPEC_KEYS = {"name": "name", "text": "text_column", "pair": "text_pair_column", "label": "label_column", "split": "split_column", "metric": "metric", "seed": "seed"}


# Named sources of ready-made tasks, by the scheme of their specs (``demo:NAME``). A source
# registers itself when its module is imported; the package's __init__ imports the built-in ones.
TASK_SOURCES: dict[str, Callable[[str], Task]] = {}


def register_task_source(scheme: str, load: Callable[[str], Task]) -> None:
    """Make ``SCHEME:NAME`` task specs resolve through ``load(NAME)``."""
    TASK_SOURCES[scheme] = load


def resolve_task(spec: str) -> Task:
    """``SCHEME:NAME`` for a registered task source (``demo:NAME``), or ``PATH[@key=value,...]``
    for a file (keys: name, text, pair, label, split, metric, seed, regression)."""
    scheme, colon, name = spec.partition(":")
    if colon and scheme in TASK_SOURCES:
        return TASK_SOURCES[scheme](name)
    path, _, options = spec.partition("@")
    kwargs: dict = {}
    for item in filter(None, options.split(",")):
        key, eq, value = item.partition("=")
        if key == "regression":
            kwargs["regression"] = value.lower() in ("1", "true", "yes", "")
            continue
        if not eq or key not in TASK_SPEC_KEYS:
            raise OsrmError(f"task option {item!r} in {spec!r} is not key=value with key one of {', '.join([*TASK_SPEC_KEYS, 'regression'])}")
        if key == "seed" and not value.lstrip("-").isdigit():
            raise OsrmError(f"task option {item!r} in {spec!r}: the seed must be an integer")
        kwargs[TASK_SPEC_KEYS[key]] = int(value) if key == "seed" else value
    task = load_task_file(path, **kwargs)
    task.extra["spec"] = spec
    return task


def align_to_head(task: Task, head_labels, head: str) -> None:
    """Check ``task``'s label names against those a trained head records (``head_labels``,
    None when unknown) and number the task's classes as the head does: output i of the
    head means ``head_labels[i]``, whatever order the task's own names sort in."""
    if head_labels is None or task.is_regression:
        return
    if not isinstance(head_labels, list):
        raise OsrmError(f"{head}: its recorded label names {head_labels!r} are not a list")
    recorded = [_canonical_name(str(n)) for n in head_labels]
    ours = {_canonical_name(n): n for n in task.label_names}
    if sorted(recorded) != sorted(ours) or len(ours) != len(task.label_names):
        where = f" ({task.source})" if task.source else ""
        raise OsrmError(f"{head}: its head was trained on labels {', '.join(map(str, head_labels))}; task {task.name!r}{where} has {', '.join(task.label_names)}")
    task.renumber([ours[name] for name in recorded])


def _canonical_name(name: str) -> str:
    """``1.0`` and ``1`` name one class: heads trained on files read before integral float
    labels were named as integers recorded ``1.0``."""
    try:
        number = float(name)
    except ValueError:
        return name
    return str(int(number)) if number.is_integer() else name
