import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from simclr import probe

CFG = {"c_min": 1e-4, "c_max": 10.0, "c_num": 6, "val_fraction": 0.25, "max_iter": 500, "shots": 3,
       "shot_draws": 3, "shot_c": 0.1, "knn_k": 20, "knn_t": 0.1, "seed": 0}


@pytest.fixture(scope="module")
def feats():
    d = load_digits()
    x, tx, y, ty = train_test_split(d.data, d.target, test_size=0.3, random_state=0, stratify=d.target)
    return {"train_x": x, "train_y": y, "test_x": tx, "test_y": ty, "classes": np.array([str(i) for i in range(10)])}


def test_c_is_chosen_on_held_out_train_never_on_test(feats, monkeypatch):
    seen = []
    real = probe.choose_c

    def spy(x, y, *args, **kwargs):
        seen.append(x)
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(probe, "choose_c", spy)
    metrics, _ = probe.evaluate(feats, CFG)
    assert len(seen) == 1 and seen[0] is feats["train_x"]
    grid = np.geomspace(CFG["c_min"], CFG["c_max"], CFG["c_num"])
    c, scores = real(feats["train_x"], feats["train_y"], grid, CFG["val_fraction"], CFG["max_iter"], CFG["seed"])
    assert metrics["linear_C"] == c == grid[int(np.argmax(scores))]


def test_choice_follows_validation_not_test(feats):
    """With the test labels scrambled, the chosen C (and so the model) must not change."""
    scrambled = dict(feats, test_y=np.roll(feats["test_y"], 1))
    a, _ = probe.evaluate(feats, CFG)
    b, _ = probe.evaluate(scrambled, CFG)
    assert a["linear_C"] == b["linear_C"]
    assert b["linear_top1"] < 0.3 < a["linear_top1"]


def test_linear_probe_is_accurate_on_real_features(feats):
    m, pred = probe.evaluate(feats, CFG)
    assert m["linear_top1"] > 0.9 and m["linear_top5"] >= m["linear_top1"]
    assert pred.shape == feats["test_y"].shape
    assert 0.5 < m["fewshot_3_top1"] <= 1 and m["fewshot_3_std"] >= 0
    assert m["knn_top1"] > 0.9


def test_knn_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    tr, te = rng.normal(size=(30, 5)), rng.normal(size=(7, 5))
    y = rng.integers(0, 3, 30)
    got = probe.knn_predict(tr, y, te, k=4, t=0.1, n_classes=3, batch=3)
    for i, q in enumerate(te):
        sim = tr @ q / np.linalg.norm(tr, axis=1) / np.linalg.norm(q)
        top = np.argsort(-sim)[:4]
        votes = np.zeros(3)
        for j in top:
            votes[y[j]] += np.exp(sim[j] / 0.1)
        assert got[i] == votes.argmax()


def test_knn_caps_k_at_train_size():
    tr = np.eye(3)
    pred = probe.knn_predict(tr, np.array([0, 1, 2]), np.eye(3), k=200, t=0.1, n_classes=3)
    assert list(pred) == [0, 1, 2]


def test_few_shot_uses_exactly_shots_per_class(feats, monkeypatch):
    sizes = []
    real = probe.fit_logistic

    def spy(x, y, c, max_iter):
        sizes.append(np.bincount(y, minlength=10))
        return real(x, y, c, max_iter)

    monkeypatch.setattr(probe, "fit_logistic", spy)
    probe.few_shot(feats["train_x"], feats["train_y"], feats["test_x"], feats["test_y"], 3, 2, 0.1, 300, 0)
    assert len(sizes) == 2 and all((s == 3).all() for s in sizes)
