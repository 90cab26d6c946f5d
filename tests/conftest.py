"""Shared test fixtures: offline hub, one thread, tiny random models, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NLUFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
GLUE_DIR = SHARED_DATA / "glue"
ADVGLUE_FILE = SHARED_DATA / "advglue" / "dev.json.gz"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(int(os.environ.get("NLUFORGE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE_DIR.is_dir():
        pytest.fail(f"shared GLUE data not found at {GLUE_DIR}; set NLUFORGE_SHARED_DATA")
    return GLUE_DIR


@pytest.fixture(scope="session")
def advglue_file() -> Path:
    if not ADVGLUE_FILE.is_file():
        pytest.fail(f"shared AdvGLUE data not found at {ADVGLUE_FILE}; set NLUFORGE_SHARED_DATA")
    return ADVGLUE_FILE


@pytest.fixture(scope="session")
def sst2_run(glue_dir, tmp_path_factory):
    """The one real training of a test session: `default` fully fine-tuned on 2,000 seeded SST-2
    examples for one epoch (about a minute on 2 cores), evaluated on SST-2 dev and AdvGLUE-SST-2.

    Compress, attack, distill and audit tests reuse it as a parent, read-only: a test that writes
    derived runs copies the run directory into its own ``tmp_path`` first (``shutil.copytree``), so
    tests never see each other's children. Returns ``(results_dir, result)``; the run lives in
    ``results_dir / result.run_info.id``.
    """
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell

    results = tmp_path_factory.mktemp("sst2_run")
    cfg = resolve({"task": "sst2", "model": "default", "method": "full", "seed": 42,
                   "data": {"data_dir": str(glue_dir), "max_train_samples": 2000},
                   "train": {"epochs": 1, "checkpoint_every": None},
                   "eval": {"latency": False}})
    result = run_cell(cfg, results)
    assert result.run_info.status == "completed", result.run_info.error
    return results, result


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from nluforge.models.loading import default_model_path as path

    return path()


@pytest.fixture(scope="session")
def tokenizer(default_model_path):
    """The default model's (BERT uncased WordPiece) tokenizer; tiny models share its vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, vocab_size=30522)


def make_tiny(arch: str = "bert", num_labels: int = 2, *, seed: int = 0, head: str = "seq_cls"):
    """A tiny random Hugging Face model built from a config, sharing the default tokenizer's ids."""
    import torch
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        BertConfig,
        RobertaConfig,
    )

    torch.manual_seed(seed)
    if arch == "bert":
        config = BertConfig(**TINY, num_labels=num_labels)
    elif arch == "roberta":
        config = RobertaConfig(**{**TINY, "max_position_embeddings": 130}, num_labels=num_labels,
                               pad_token_id=0, type_vocab_size=1)
    else:
        raise ValueError(arch)
    if num_labels == 1:
        config.problem_type = "regression"
    cls = AutoModelForMaskedLM if head == "masked_lm" else AutoModelForSequenceClassification
    return cls.from_config(config).eval()


@pytest.fixture
def tiny_model():
    """Factory: ``tiny_model("roberta", num_labels=3)``."""
    return make_tiny


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """Factory: save a tiny model and the default tokenizer to a folder usable as ``--model PATH``."""

    def save(arch: str = "bert", num_labels: int = 2) -> Path:
        path = tmp_path / f"tiny-{arch}"
        make_tiny(arch, num_labels).save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return save


def src_pythonpath(*first: str) -> str:
    """PYTHONPATH for a test's subprocess: ``first`` (default: this checkout's src), then whatever the
    caller's PYTHONPATH holds (a machine whose libraries live on it keeps them)."""
    return os.pathsep.join([*(first or (str(REPO / "src"),)), *filter(None, [os.environ.get("PYTHONPATH")])])
