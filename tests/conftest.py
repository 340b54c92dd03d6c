"""Shared fixtures: a tiny random BERT, tiny tasks and real-peft adapters; no downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# feature statistics are cached on disk: keep the tests' out of the user's cache
os.environ["OSRM_GUI_CACHE"] = __import__("tempfile").mkdtemp(prefix="osrm-gui-test-cache-")
# and so is the run history
os.environ["OSRM_GUI_DATA"] = __import__("tempfile").mkdtemp(prefix="osrm-gui-test-data-")

import numpy as np
import pytest
import torch

WORDS = [
    "red", "green", "blue", "yellow", "cat", "dog", "bird", "fish", "run", "jump", "swim", "fly",
    "big", "small", "fast", "slow", "good", "bad", "happy", "sad", "the", "a", "is", "very",
]


def _write_tiny_base(folder: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    return _write_tiny_base(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory) -> Path:
    """A base of another width: adapters for it must be refused by the tiny base."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("wide-bert")
    _write_tiny_base(folder)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def write_task_csv(path: Path, keyword_labels: dict[str, str], n: int = 120, seed: int = 0) -> Path:
    """Short texts whose label is given by which keyword they contain."""
    rng = np.random.default_rng(seed)
    keywords = list(keyword_labels)
    filler = [w for w in WORDS if w not in keywords]
    rows = ["text,label"]
    for _ in range(n):
        key = keywords[rng.integers(len(keywords))]
        words = list(rng.choice(filler, size=3)) + [key]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{keyword_labels[key]}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tasks")
    return {
        "colour": write_task_csv(folder / "colour.csv", {"red": "warm", "yellow": "warm", "blue": "cold", "green": "cold"}, seed=1),
        "animal": write_task_csv(folder / "animal.csv", {"cat": "land", "dog": "land", "fish": "water", "bird": "air"}, seed=2),
    }


def make_adapter(base_dir: Path, out: Path, task_csv: Path | None, num_labels: int, seed: int = 0, rank: int = 4,
                 targets=("query", "value"), alpha: float = 8.0, rslora: bool = False) -> Path:
    """A random (non-zero B) LoRA adapter with a random head, saved by real peft."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels, ignore_mismatched_sizes=True)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=alpha, target_modules=list(targets),
                        init_lora_weights=False, use_rslora=rslora)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    peft_model.save_pretrained(out)
    if task_csv is not None:
        (out / "osrm_adapter.json").write_text(json.dumps({"task": task_csv.stem, "task_spec": str(task_csv), "init": "random"}))
    return out


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory, tiny_base_dir, tiny_tasks) -> list[Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return [
        make_adapter(tiny_base_dir, folder / "colour", tiny_tasks["colour"], num_labels=2, seed=1, rank=4),
        make_adapter(tiny_base_dir, folder / "animal", tiny_tasks["animal"], num_labels=3, seed=2, rank=2),
    ]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_base_dir) -> Path:
    """A tiny random Llama-style decoder (sequence classification through its `score` head)."""
    import shutil

    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-llama")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_base_dir / name).exists():
            shutil.copy(tiny_base_dir / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS) + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, num_labels=2)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    return folder


RELOAD_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
root, data = sys.argv[1], json.load(open(sys.argv[2]))
out = {}
for name, d in data.items():
    model = AutoModelForSequenceClassification.from_pretrained(root + "/" + name).eval()
    tok = AutoTokenizer.from_pretrained(root + "/" + name)
    with torch.inference_mode():
        pred = model(**tok(d["texts"], return_tensors="pt", padding=True, truncation=True, max_length=128)).logits.argmax(-1)
    out[name] = float((pred == torch.tensor(d["labels"])).float().mean())
print(json.dumps(out))
"""


def accuracy_after_reload(full_dir: Path, tasks, limit: int | None = None) -> dict[str, float]:
    """Each exported task model loaded by plain transformers in a fresh process, scored on its test split."""
    import subprocess
    import sys

    data = {t.name: {"texts": t.split("test").texts[:limit], "labels": t.split("test").labels[:limit].tolist()} for t in tasks}
    data_file = full_dir.parent / f"{full_dir.name}-reload-data.json"
    data_file.write_text(json.dumps(data))
    result = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(full_dir), str(data_file)], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, ref: str = "main", commit: str | None = None) -> str:
    """Put ``folder``'s files into ``cache`` the way huggingface_hub stores a downloaded snapshot:
    content-addressed blobs, a snapshot folder of symlinks named by the commit, and a ref naming it."""
    import hashlib

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    files = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    commit = commit or hashlib.sha1(repr(sorted((str(k), hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face Hub cache for this test (no network: ids resolve from here or fail)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def one_thread():
    """Modules of tiny-model tests that time nothing: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from tests.job_support import one_torch_thread

    with one_torch_thread():
        yield
