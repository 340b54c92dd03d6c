"""Tasks: named labelled texts with a metric, loaded from files or from a registered task source (the demo suite)."""

from __future__ import annotations

import hashlib
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
        raise OsrmError(f"{path}: cannot read as {suffix[1:]} ({str(exc).splitlines()[0]})") from None
    raise OsrmError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .parquet or a datasets folder")


def _read_datasets_folder(path: Path):
    import pandas as pd
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise OsrmError(f"{path}: not a datasets folder saved with save_to_disk ({str(exc).splitlines()[0]})") from None
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
    if len(frame) == 0:
        raise OsrmError(f"{path}: no rows")
    columns = list(map(str, frame.columns))
    for role, column in (("text", text_column), ("label", label_column), ("text pair", text_pair_column)):
        if column is not None and column not in columns:
            raise OsrmError(f"{path}: no {role} column {column!r} (columns: {', '.join(columns)}); set it with the column options")
    frame = frame.dropna(subset=[text_column])
    if frame[label_column].isna().all():
        raise OsrmError(f"{path}: the label column {label_column!r} is empty")
    frame = frame.dropna(subset=[label_column])
    raw_labels = frame[label_column].to_numpy()
    if regression is None:
        regression = raw_labels.dtype.kind == "f" and len(np.unique(raw_labels)) > 10
    if regression:
        labels = raw_labels.astype(np.float32)
        label_names = None
    else:
        label_names = sorted({str(v) for v in raw_labels}, key=_natural_key)
        if len(label_names) < 2:
            raise OsrmError(f"{path}: only one label value ({label_names[0]!r}); a classification task needs at least two")
        index = {v: i for i, v in enumerate(label_names)}
        labels = np.array([index[str(v)] for v in raw_labels], dtype=np.int64)
    metric = metric or default_metric(regression)
    if metric not in METRICS:
        raise OsrmError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    texts = frame[text_column].astype(str).tolist()
    pairs = frame[text_pair_column].astype(str).tolist() if text_pair_column else None

    if split_column in columns:
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
    return Task(name=name or path.stem, splits=splits, label_names=label_names, metric=metric, source=str(path))


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
        kwargs[TASK_SPEC_KEYS[key]] = int(value) if key == "seed" else value
    task = load_task_file(path, **kwargs)
    task.extra["spec"] = spec
    return task
