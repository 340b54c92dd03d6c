import numpy as np
import pandas as pd
import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.metrics import compute_metrics
from osrm_gui.core.inputs.tasks import load_task_file, resolve_task


@pytest.fixture()
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "sentence": [f"text number {i}" for i in range(50)],
        "other": [f"second {i}" for i in range(50)],
        "y": rng.choice(["neg", "pos", "neutral"], size=50),
    })


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", "datasets"])
def test_every_format_gives_the_same_task(tmp_path, frame, suffix):
    if suffix == ".csv":
        path = tmp_path / "t.csv"
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        path = tmp_path / "t.tsv"
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path = tmp_path / "t.jsonl"
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        path = tmp_path / "t.parquet"
        frame.to_parquet(path)
    else:
        from datasets import Dataset

        path = tmp_path / "t"
        Dataset.from_pandas(frame).save_to_disk(str(path))
    task = load_task_file(path, name="t", text_column="sentence", text_pair_column="other", label_column="y", seed=3)
    assert task.label_names == ["neg", "neutral", "pos"]
    assert sum(len(s) for s in task.splits.values()) == 50
    test = task.split("test")
    assert len(test) == 10
    # the same seeded split whatever the format
    reference = load_task_file(_csv(tmp_path, frame), name="t", text_column="sentence", text_pair_column="other", label_column="y", seed=3)
    assert test.texts == reference.split("test").texts
    assert test.pairs[0].startswith("second")
    labels = [task.label_names[i] for i in test.labels]
    row = frame.set_index("sentence").loc[test.texts[0]]
    assert labels[0] == row["y"]


def _csv(tmp_path, frame):
    path = tmp_path / "ref.csv"
    frame.to_csv(path, index=False)
    return path


def test_datasetdict_splits_are_kept(tmp_path, frame):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_pandas(frame[:40]), "test": Dataset.from_pandas(frame[40:])}).save_to_disk(str(tmp_path / "dd"))
    task = load_task_file(tmp_path / "dd", text_column="sentence", label_column="y")
    assert len(task.split("train")) == 40 and len(task.split("test")) == 10


def test_split_column_is_used(tmp_path, frame):
    frame["split"] = ["train"] * 30 + ["validation"] * 10 + ["test"] * 10
    task = load_task_file(_csv(tmp_path, frame), text_column="sentence", label_column="y")
    assert task.split("test").texts == frame["sentence"][40:].tolist()


def test_regression_labels(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": np.linspace(0, 5, 40)})
    task = load_task_file(_csv(tmp_path, frame))
    assert task.is_regression and task.metric == "pearson" and task.num_labels == 1


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(OsrmError, match=r"e.csv: the file is empty"):
        load_task_file(tmp_path / "e.csv")


def test_header_only_file(tmp_path):
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(OsrmError, match=r"h.csv: no rows"):
        load_task_file(tmp_path / "h.csv")


def test_label_less_file(tmp_path, frame):
    with pytest.raises(OsrmError, match=r"no label column 'label' \(columns: sentence, other, y\)"):
        load_task_file(_csv(tmp_path, frame), text_column="sentence")


def test_empty_label_column(tmp_path):
    (tmp_path / "n.csv").write_text("text,label\na,\nb,\n")
    with pytest.raises(OsrmError, match="label column 'label' is empty"):
        load_task_file(tmp_path / "n.csv")


def test_single_label(tmp_path):
    (tmp_path / "s.csv").write_text("text,label\na,x\nb,x\n")
    with pytest.raises(OsrmError, match="only one label value"):
        load_task_file(tmp_path / "s.csv")


def test_task_spec_options(tmp_path, frame):
    path = _csv(tmp_path, frame)
    task = resolve_task(f"{path}@text=sentence,label=y,name=mine,metric=macro_f1")
    assert task.name == "mine" and task.metric == "macro_f1"
    with pytest.raises(OsrmError, match="not key=value"):
        resolve_task(f"{path}@colour=red")


def test_metrics_match_direct_formulas():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    scores = compute_metrics(y, p, regression=False)
    assert scores["accuracy"] == pytest.approx(np.mean(y == p))
    f1s = []
    for c in range(3):
        tp = np.sum((p == c) & (y == c))
        precision, recall = tp / np.sum(p == c), tp / np.sum(y == c)
        f1s.append(2 * precision * recall / (precision + recall))
    assert scores["macro_f1"] == pytest.approx(np.mean(f1s))
    # binary MCC by its formula
    yb, pb = y % 2, p % 2
    tp, tn = np.sum((pb == 1) & (yb == 1)), np.sum((pb == 0) & (yb == 0))
    fp, fn = np.sum((pb == 1) & (yb == 0)), np.sum((pb == 0) & (yb == 1))
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert compute_metrics(yb, pb, regression=False)["mcc"] == pytest.approx(mcc)
    yr = rng.normal(size=100)
    pr = yr + rng.normal(scale=0.5, size=100)
    reg = compute_metrics(yr, pr, regression=True)
    assert reg["pearson"] == pytest.approx(np.corrcoef(yr, pr)[0, 1])
    ranks = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert reg["spearman"] == pytest.approx(np.corrcoef(ranks(yr), ranks(pr))[0, 1])
