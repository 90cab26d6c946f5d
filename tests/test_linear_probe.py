"""The linear probe fits its head in closed form on frozen features (issue #16)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_tiny

from nluforge.methods import method_config, method_module
from nluforge.models.features import embed, fit_linear
from nluforge.models.inputs import Encoded
from nluforge.models.pooling import apply_pooling


def _separable(n: int = 60, seed: int = 0) -> Encoded:
    """Class 1 sentences contain token 2204 ("good"), class 0 token 2919 ("bad"); the rest is noise."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(n):
        label = i % 2
        body = list(rng.integers(2000, 2100, size=rng.integers(3, 8)))
        body.insert(int(rng.integers(0, len(body))), 2204 if label else 2919)
        ids.append([101, *map(int, body), 102])
        labels.append(label)
    return Encoded(ids, None, labels)


def test_probe_reaches_full_train_accuracy_and_model_reproduces_it(tmp_path):
    from nluforge.eval.predict import predict

    probe = method_module("linear_probe")
    cfg = method_config("linear_probe", {"C": 10.0})
    model = probe.adapt(apply_pooling(make_tiny("bert"), "mean"), cfg)
    train = _separable()
    before = predict(model, train, batch_size=16, pad_id=0, regression=False).argmax(1)
    result = probe.prefit(model, cfg, train, pad_id=0, batch_size=16)
    logits = predict(model, train, batch_size=16, pad_id=0, regression=False)
    assert (logits.argmax(1) == np.array(train.labels)).mean() == 1.0
    assert (before == np.array(train.labels)).mean() < 1.0
    assert result.summary["train_score"] == 1.0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    probe.save(model, tmp_path / "m")
    again = probe.load(tmp_path / "m", apply_pooling(make_tiny("bert"), "mean"), cfg)
    np.testing.assert_allclose(predict(again, train, batch_size=16, pad_id=0, regression=False), logits, rtol=1e-5)


def test_fit_linear_folds_standardisation_exactly():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(200, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    fit = fit_linear(x, y, num_labels=2, c=1.0)
    from sklearn.linear_model import LogisticRegression

    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(z, y)
    margin = fit.logits(x)[:, 1] - fit.logits(x)[:, 0]
    np.testing.assert_allclose(margin, ref.decision_function(z), rtol=1e-3, atol=1e-3)


def test_probe_regression_uses_ridge():
    probe = method_module("linear_probe")
    cfg = method_config("linear_probe", {})
    model = probe.adapt(apply_pooling(make_tiny("bert", num_labels=1), "mean"), cfg)
    train = _separable()
    train = Encoded(train.input_ids, None, [float(v) * 5 for v in train.labels])
    probe.prefit(model, cfg, train, pad_id=0, batch_size=16)
    x = embed(model, train, batch_size=16, pad_id=0)
    with torch.no_grad():
        pred = x @ model.classifier.weight.numpy().T + model.classifier.bias.numpy()
    assert np.corrcoef(pred[:, 0], train.labels)[0, 1] > 0.9


def test_embedding_baselines_logreg_knn_and_zero_shot_cosine(tokenizer):
    from nluforge.eval.embed_baselines import embedding_baselines, knn_predict
    from nluforge.tasks import get_task

    model = apply_pooling(make_tiny("bert"), "mean")
    good, bad = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
    texts = [(f"the movie was {w}",) for w in good + bad] * 3
    labels = ([1] * 4 + [0] * 4) * 3
    out = embedding_baselines(model, tokenizer, (texts, labels), {"validation": (texts, labels)},
                              get_task("sst2"), k=1, normalize=False)
    assert out["validation"]["knn"]["accuracy"] == 1.0  # each example is its own nearest neighbour
    assert out["validation"]["logreg"]["accuracy"] >= 0.9
    assert "cosine" not in out["validation"]
    query = np.array([[0.9, 0.1, 0.0]])
    assert knn_predict(np.eye(3), [0, 1, 1], query, k=3, regression=False).tolist() == [1]  # majority
    assert knn_predict(np.eye(3)[:2], [0, 1], query, k=2, regression=False).tolist() == [0]  # tie: nearest
    pairs = [("a good movie", "a good movie"), ("a good movie", "awful plot and actors")] * 4
    scores = [5.0, 0.5] * 4
    sts = embedding_baselines(model, tokenizer, (pairs, scores), {"validation": (pairs, scores)}, get_task("stsb"))
    assert set(sts["validation"]) == {"logreg", "knn", "cosine"}
    assert sts["validation"]["cosine"]["pearson"] > 0.99  # identical sentences: cosine 1, others lower
