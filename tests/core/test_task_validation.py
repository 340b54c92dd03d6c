"""Task data that cannot be what it claims is refused in one line naming the file and the
column, both by the loader and by the command line; rows left out are counted in a warning;
label names must match those the adapter's head was trained on."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from osrm_gui.cli import main
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.inputs.tasks import align_to_head, resolve_task
from osrm_gui.core.merge.spec import pair_tasks
from tests.conftest import make_adapter, write_task_csv

N = 30


def texts(n=N):
    return [f"red cat number {i}" for i in range(n)]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def parquet(path, columns):
    pd.DataFrame(columns).to_parquet(path)


# name -> (file name, writer of the file, task options, what the one-line error says after "PATH: ")
BAD_FILES = {
    "text lists (parquet)": ("t.parquet", lambda p: parquet(p, {"text": [["red", "cat"]] * N, "label": [0, 1] * (N // 2)}), "",
                             "column 'text' holds lists, not text; name the text column with @text=COLUMN"),
    "text lists (jsonl)": ("t.jsonl", lambda p: jsonl(p, [{"text": ["red"], "label": i % 2} for i in range(N)]), "",
                           "column 'text' holds lists, not text; name the text column with @text=COLUMN"),
    "text dicts (jsonl)": ("t.jsonl", lambda p: jsonl(p, [{"text": {"a": "red"}, "label": i % 2} for i in range(N)]), "",
                           "column 'text' holds dicts, not text; name the text column with @text=COLUMN"),
    "text numbers (parquet)": ("t.parquet", lambda p: parquet(p, {"text": np.arange(N) * 0.5, "label": [0, 1] * (N // 2)}), "",
                               "column 'text' holds numbers, not text; name the text column with @text=COLUMN"),
    "one number among texts (jsonl)": ("t.jsonl", lambda p: jsonl(p, [{"text": 7 if i == 3 else "red cat", "label": i % 2} for i in range(N)]), "",
                                       "column 'text' holds numbers, not text; name the text column with @text=COLUMN"),
    "pair lists": ("t.parquet", lambda p: parquet(p, {"text": texts(), "p": [["blue"]] * N, "label": [0, 1] * (N // 2)}), "@pair=p",
                   "column 'p' holds lists, not text; name the second text column with @pair=COLUMN"),
    "label dicts (parquet)": ("t.parquet", lambda p: parquet(p, {"text": texts(), "label": [{"x": 1}, {"y": 2}] * (N // 2)}), "",
                              "column 'label' holds dicts, not class names or numbers; name the label column with @label=COLUMN"),
    "label lists (jsonl)": ("t.jsonl", lambda p: jsonl(p, [{"text": "red", "y": [i % 2]} for i in range(N)]), "@label=y",
                            "column 'y' holds lists, not class names or numbers; name the label column with @label=COLUMN"),
    "fractional labels": ("t.csv", lambda p: pd.DataFrame({"text": texts(), "label": [0.5, 1.7] * (N // 2)}).to_csv(p, index=False), "",
                          "column 'label' holds labels such as 0.5, which are not class ids; add @regression if the task is a regression"),
    "text labels for a regression": ("t.csv", lambda p: pd.DataFrame({"text": texts(), "label": ["x", "y"] * (N // 2)}).to_csv(p, index=False),
                                     "@regression", "column 'label' holds 'x', not a finite number; a regression task (@regression) needs numeric labels"),
    "every label missing": ("t.jsonl", lambda p: jsonl(p, [{"text": "red", "label": None if i % 2 else ""} for i in range(N)]), "",
                            "the label column 'label' is empty (no row has a label)"),
    "empty file": ("t.csv", lambda p: p.write_text(""), "", "the file is empty"),
    "header only": ("t.csv", lambda p: p.write_text("text,label\n"), "", "no rows"),
    "no such column": ("t.csv", lambda p: pd.DataFrame({"text": texts(), "label": [0, 1] * (N // 2)}).to_csv(p, index=False), "@text=sentence",
                       "no text column 'sentence' (columns: text, label); set it with the column options"),
    "a single class": ("t.csv", lambda p: pd.DataFrame({"text": texts(), "label": ["x"] * N}).to_csv(p, index=False), "",
                       "only one label value ('x') in column 'label'; a classification task needs at least two"),
    "regression metric for classes": ("t.csv", lambda p: pd.DataFrame({"text": texts(), "label": ["x", "y"] * (N // 2)}).to_csv(p, index=False),
                                      "@metric=pearson", "metric 'pearson' does not score a classification task; use one of accuracy, macro_f1, mcc"),
}


@pytest.fixture(params=list(BAD_FILES))
def bad_file(request, tmp_path):
    file_name, write, options, message = BAD_FILES[request.param]
    path = tmp_path / file_name
    write(path)
    return f"{path}{options}", f"{path}: {message}"


def test_bad_task_data_is_one_line_naming_the_file(bad_file):
    spec, message = bad_file
    with pytest.raises(OsrmError) as error:
        resolve_task(spec)
    assert str(error.value) == message


def assert_one_line_error(capsys, argv, message):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err == f"osrm: error: {message}\n"
    assert "Traceback" not in out + err


def test_bad_task_data_through_the_cli(capsys, bad_file, tiny_base_dir, tiny_adapters):
    spec, message = bad_file
    assert_one_line_error(capsys, ["eval", tiny_adapters[0], "--base", tiny_base_dir, "--task", spec], message)


def test_integers_written_as_floats_are_class_ids(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": texts(), "label": [1.0, 2.0] * (N // 2)}).to_csv(path, index=False)
    assert resolve_task(str(path)).label_names == ["1", "2"]


def test_fractional_labels_make_a_regression_when_asked(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": texts(), "label": [0.5, 1.7] * (N // 2)}).to_csv(path, index=False)
    task = resolve_task(f"{path}@regression")
    assert task.is_regression and sorted(set(task.split("train").labels.tolist())) == pytest.approx([0.5, 1.7])


def test_rows_without_a_label_are_left_out_and_counted(tmp_path):
    path = tmp_path / "gaps.jsonl"
    rows = [{"text": f"red {i}", "y": ["a", "b", None, ""][i % 4]} for i in range(40)]
    jsonl(path, rows)
    task = resolve_task(f"{path}@label=y")
    assert sum(len(s) for s in task.splits.values()) == 20
    assert task.warnings == [f"{path}: 20 of 40 rows have no label in column 'y'; they are left out"]


def test_complete_files_give_no_warning(tiny_tasks):
    assert resolve_task(str(tiny_tasks["colour"])).warnings == []


def test_rows_left_out_are_reported_by_the_cli(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    path = tmp_path / "colour.csv"
    pd.DataFrame({"text": texts(), "label": ["warm", "cold", None] * (N // 3)}).to_csv(path, index=False)
    code = main([str(a) for a in ["merge", "--base", tiny_base_dir, tiny_adapters[0], "--task", path, "--limit", "5"]])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert f"warning: {path}: 10 of 30 rows have no label in column 'label'; they are left out\n" in err


# -- label names against the adapter's head ---------------------------------------------------

POS = ["adjective", "adverb", "noun", "verb"]


@pytest.fixture(scope="module")
def four_label_adapter(tmp_path_factory, tiny_base_dir):
    return make_adapter(tiny_base_dir, tmp_path_factory.mktemp("pos") / "pos", None, num_labels=4, seed=3)


def adapter_recording(tmp_path, source, label_names):
    folder = shutil.copytree(source, tmp_path / "pos-adapter")
    (folder / "osrm_adapter.json").write_text(json.dumps({"task": "pos", "init": "random", "label_names": label_names}))
    return folder


def pos_task_file(tmp_path, names):
    return write_task_csv(tmp_path / "pos.csv", dict(zip(["red", "cat", "run", "big"], names)), n=60)


def test_other_label_names_than_the_head_was_trained_on_are_refused(capsys, tmp_path, four_label_adapter, tiny_base_dir):
    adapter = adapter_recording(tmp_path, four_label_adapter, POS)
    data = pos_task_file(tmp_path, ["w", "x", "y", "z"])
    message = f"{adapter}: its head was trained on labels adjective, adverb, noun, verb; task 'pos' ({data}) has w, x, y, z"
    with pytest.raises(OsrmError) as error:
        pair_tasks([load_adapter(adapter)], [resolve_task(f"{data}@name=pos")])
    assert str(error.value) == message
    assert_one_line_error(capsys, ["eval", adapter, "--base", tiny_base_dir, "--task", f"{data}@name=pos"], message)


def test_label_names_in_another_order_are_numbered_as_the_head_was_trained(capsys, tmp_path, four_label_adapter, tiny_base_dir):
    trained_order = ["verb", "noun", "adverb", "adjective"]
    adapter = adapter_recording(tmp_path, four_label_adapter, trained_order)
    data = pos_task_file(tmp_path, POS)
    task = resolve_task(f"{data}@name=pos")
    assert task.label_names == POS  # the file's own numbering is sorted
    before = {s: [task.label_names[i] for i in split.labels] for s, split in task.splits.items()}
    pair_tasks([load_adapter(adapter)], [task])
    assert task.label_names == trained_order
    assert {s: [task.label_names[i] for i in split.labels] for s, split in task.splits.items()} == before
    code = main([str(a) for a in ["eval", adapter, "--base", tiny_base_dir, "--task", f"{data}@name=pos"]])
    assert code == 0, capsys.readouterr().err


def test_integer_label_names_match_however_they_were_written(tmp_path):
    data = tmp_path / "t.csv"
    written = dict(zip(texts(), [2, 1, 10] * (N // 3)))
    pd.DataFrame({"text": list(written), "label": list(written.values())}).to_csv(data, index=False)
    task = resolve_task(str(data))
    assert task.label_names == ["1", "2", "10"]
    align_to_head(task, ["10.0", "1.0", "2.0"], "adapter")  # as a head trained on a file with gaps recorded them
    assert task.label_names == ["10", "1", "2"]
    train = task.split("train")
    assert [task.label_names[i] for i in train.labels] == [str(written[t]) for t in train.texts]


def test_a_head_without_recorded_names_is_paired_by_count(tiny_tasks):
    task = resolve_task(str(tiny_tasks["colour"]))
    align_to_head(task, None, "adapter")
    assert task.label_names == ["cold", "warm"]
