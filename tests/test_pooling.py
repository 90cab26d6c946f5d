"""Pooling (issue #16): auto reads a sentence-transformers checkpoint's own pooling; mean ignores padding;
the mode survives peft wrapping and a save/reload round trip."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny

from nluforge.core.errors import UserError
from nluforge.models.pooling import apply_pooling, pool, pooling_of, resolve_pooling, restore_pooling


def _batch(rows: list[list[int]], width: int) -> dict[str, torch.Tensor]:
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_auto_is_mean_for_default_and_cls_for_plain_bert(default_model_path, tmp_path):
    from transformers import AutoConfig, BertConfig

    assert resolve_pooling("auto", default_model_path, AutoConfig.from_pretrained(default_model_path)) == "mean"
    plain = tmp_path / "plain"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(plain)
    assert resolve_pooling("auto", plain, BertConfig.from_pretrained(plain)) == "cls"
    (plain / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                     "type": "sentence_transformers.models.Pooling"}]))
    (plain / "1_Pooling").mkdir()
    (plain / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    assert resolve_pooling("auto", plain, BertConfig.from_pretrained(plain)) == "max"
    assert resolve_pooling("cls", plain, BertConfig.from_pretrained(plain)) == "cls"
    with pytest.raises(UserError, match="pooling 'avg'"):
        resolve_pooling("avg", plain, None)


def test_load_model_default_reads_mean(default_model_path):
    from nluforge.models.loading import load_model

    model = load_model("default", num_labels=2)
    assert pooling_of(model) == "mean"
    assert pooling_of(load_model("default", num_labels=2, pooling="cls")) == "cls"


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_pooled_logits_ignore_padding(arch, mode):
    model = apply_pooling(make_tiny(arch), mode)
    rows = [[101, 2023, 2003, 102], [101, 2307, 3185, 2204, 2143, 102]]
    with torch.no_grad():
        tight = model(**_batch(rows, 6)).logits
        padded = model(**_batch(rows, 11)).logits
        alone = model(**_batch(rows[:1], 4)).logits
    torch.testing.assert_close(tight, padded)
    torch.testing.assert_close(tight[:1], alone)
    cls_model = make_tiny(arch)
    with torch.no_grad():
        assert not torch.allclose(cls_model(**_batch(rows, 6)).logits, tight)


def test_mean_pool_matches_hand_computation():
    model = apply_pooling(make_tiny("bert"), "mean")
    batch = _batch([[101, 2023, 102], [101, 2307, 3185, 2204, 102]], 5)
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state  # (B, T, H)
        by_hand = torch.stack([hidden[0, :3].mean(0), hidden[1, :5].mean(0)])
        torch.testing.assert_close(pool(hidden, batch["attention_mask"], "mean"), by_hand)
        torch.testing.assert_close(model(**batch).logits, model.classifier(by_hand))


def test_prefix_mask_columns_are_cut():
    hidden = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])  # 2 prefix columns, then 4 positions
    torch.testing.assert_close(pool(hidden, mask, "mean")[0], hidden[0, :3].mean(0))


def test_peft_and_save_reload_keep_mean_pooling(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import BertForSequenceClassification

    model = apply_pooling(make_tiny("bert"), "mean")
    batch = _batch([[101, 2023, 102], [101, 2307, 3185, 2204, 102]], 7)
    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"]))
    with torch.no_grad():
        torch.testing.assert_close(lora(**batch).logits, lora(**_batch([[101, 2023, 102], [101, 2307, 3185, 2204, 102]], 5)).logits)
    lora.save_pretrained(tmp_path / "adapter")
    full = apply_pooling(make_tiny("bert", seed=1), "mean")
    full.save_pretrained(tmp_path / "full")
    reloaded = restore_pooling(BertForSequenceClassification.from_pretrained(tmp_path / "full"))
    assert pooling_of(reloaded) == "mean"
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).logits, full(**batch).logits)
        base = apply_pooling(make_tiny("bert"), "mean")
        again = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        torch.testing.assert_close(again(**batch).logits, lora.eval()(**batch).logits)


def test_inline_cls_architecture_refuses_mean():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(UserError, match="only pooling 'cls'"):
        apply_pooling(model, "mean")


def _mean_pooled_folder(path, tokenizer):
    """A tiny BERT saved as a sentence-transformers folder that declares mean pooling."""
    make_tiny("bert").save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                    "type": "sentence_transformers.models.Pooling"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return path


@pytest.mark.parametrize("method,params", [("full", {}), ("linear_probe", {}), ("setfit", {"num_iterations": 1})])
def test_mean_pooled_run_reloads_with_identical_logits(method, params, tmp_path, tokenizer):
    """Through the pipeline: train (or prefit), save, then load_run gives the saved predictions' logits."""
    import numpy as np
    from test_cli import write_sst2

    from nluforge.eval.predict import predict
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import run_cell
    from nluforge.experiments.stages import load_run
    from nluforge.models.inputs import encode
    from nluforge.tasks import load_task

    data = write_sst2(tmp_path / "glue", n_train=40, n_dev=20)
    model_dir = _mean_pooled_folder(tmp_path / "st-tiny", tokenizer)
    cfg = resolve({"task": "sst2", "model": str(model_dir), "method": method, "method_params": params,
                   "data": {"data_dir": str(data), "max_length": 32},
                   "train": {"max_steps": 3, "batch_size": 8},
                   "eval": {"advglue": False, "latency": False}})
    result = run_cell(cfg, tmp_path / "runs")
    assert result.run_info.status == "completed", result.run_info.error
    run_dir = tmp_path / "runs" / cfg.run_id()
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    _, spec, tok, model, _, _ = load_run(run_dir)
    assert pooling_of(model) == "mean"
    dev = load_task("sst2", data_dir=str(data)).splits["validation"]
    logits = predict(model, encode(dev.texts, dev.labels, tok, 32), batch_size=8, pad_id=0, regression=False)
    np.testing.assert_allclose(logits, np.array([r["logits"] for r in saved]), atol=2e-5)


def test_prompt_tuning_on_mean_pooling_counts_virtual_tokens_and_ignores_padding():
    from nluforge.methods import method_config, method_module

    pt = method_module("prompt_tuning")
    model = pt.adapt(apply_pooling(make_tiny("bert"), "mean"), method_config("prompt_tuning", {"num_virtual_tokens": 4}))
    rows = [[101, 2023, 2003, 102], [101, 2307, 3185, 2204, 2143, 102]]
    with torch.no_grad():
        tight, padded = model(**_batch(rows, 6)).logits, model(**_batch(rows, 9)).logits
        torch.testing.assert_close(tight, padded)
        seen = []
        handle = model.base_model.bert.register_forward_hook(lambda _m, _a, out: seen.append(out.last_hidden_state))
        batch = _batch(rows, 6)
        logits = model(**batch).logits
        handle.remove()
        hidden = seen[0]  # (B, 4 + 6, H): the 4 virtual tokens come first
        mask = torch.cat([torch.ones(2, 4), batch["attention_mask"].float()], 1).unsqueeze(-1)
        by_hand = (hidden * mask).sum(1) / mask.sum(1)  # virtual tokens counted, padding not
        torch.testing.assert_close(logits, model.base_model.classifier(by_hand))
