"""The kNN classifier shared by the probe and pretrain's monitor, against scikit-learn's answer."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from simclr.knn import knn_accuracy, knn_predict


@pytest.mark.parametrize("k,t", [(5, 0.1), (20, 0.5)])
def test_matches_sklearn_weighted_cosine_knn(k, t):
    d = load_digits()
    x, y = d.data.astype(np.float64), d.target
    tr, ytr, te = x[:1200], y[:1200], x[1200:]
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                               weights=lambda dist: np.exp((1 - dist) / t)).fit(tr, ytr).predict(te)
    got = knn_predict(tr, ytr, te, k=k, t=t, n_classes=10, batch=100).numpy()
    assert (got == ref).mean() > 0.995  # only exact distance ties may break differently
    assert knn_accuracy(tr, ytr, te, y[1200:], 10, k, t) == pytest.approx((ref == y[1200:]).mean(), abs=0.005)


def test_votes_are_weighted_by_similarity_not_counted():
    # two far neighbours of class 1 against one near neighbour of class 0: with t small the near one wins
    tr = torch.tensor([[1.0, 0.05], [0.2, 1.0], [0.25, 1.0]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    assert knn_predict(tr, y, q, k=3, t=0.05, n_classes=2).item() == 0
    assert knn_predict(tr, y, q, k=3, t=100.0, n_classes=2).item() == 1  # flat weights: a plain vote


def test_caps_k_at_train_size():
    pred = knn_predict(np.eye(3), np.array([0, 1, 2]), np.eye(3), k=200, t=0.1, n_classes=3)
    assert pred.tolist() == [0, 1, 2]


def encoder_features():
    """Real features: a (random-init, narrow) encoder of this project on scikit-learn's digits."""
    from simclr.model import ResNet

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32).div(16).unsqueeze(1).expand(-1, 3, -1, -1)
    torch.manual_seed(0)
    net = ResNet("resnet18", width=8).eval()
    with torch.no_grad():
        return net(torch.nn.functional.interpolate(images, size=16)).double().numpy(), d.target


def test_majority_vote_is_sklearns_k10_cosine_knn_on_real_features():
    """dkobak/simclr-cifar10 (README: "I prefer KNeighborsClassifier(n_neighbors=10, metric="cosine")
    for evaluation"; simclr-cifar10.py scores it the same way): the probe's knn_vote_top1."""
    x, y = encoder_features()
    tr, ytr, te, yte = x[:1200], y[:1200], x[1200:], y[1200:]
    ref = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(tr, ytr)
    got = knn_predict(tr, ytr, te, k=10, t=None, n_classes=10, batch=100).numpy()
    assert (got == ref.predict(te)).all()
    assert (got == yte).mean() == pytest.approx(ref.score(te, yte), abs=1e-12)
    weighted = knn_predict(tr, ytr, te, k=10, t=0.1, n_classes=10).numpy()
    assert (weighted != got).any()  # the two kNN metrics really differ on these features


def test_majority_vote_breaks_a_tie_towards_the_smaller_class_as_sklearn_does():
    tr = np.array([[1.0, 0.1], [1.0, -0.1], [0.9, 0.3], [0.9, -0.3]])
    y = np.array([1, 0, 1, 0])
    ref = KNeighborsClassifier(n_neighbors=4, metric="cosine").fit(tr, y).predict([[1.0, 0.0]])
    assert knn_predict(tr, y, [[1.0, 0.0]], k=4, t=None, n_classes=2).tolist() == ref.tolist() == [0]


def test_the_probe_s_float32_knn_predicts_what_float64_predicts():
    """probe runs kNN in float32 (on the GPU when there is one); on real features its predictions are
    float64's but for near-ties (docs/results.md counts them on CIFAR-10: none or a handful)."""
    from simclr.probe import knn_both

    d = load_digits()
    x, y = d.data, d.target
    cfg = {"knn_k": 200, "knn_t": 0.1, "vote_k": 10}
    p32 = knn_both(x[:1200].astype(np.float32), y[:1200], x[1200:].astype(np.float32), cfg, 10)
    p64 = knn_both(x[:1200], y[:1200], x[1200:], cfg, 10, dtype=torch.float64)
    assert p32[0].dtype == p64[0].dtype
    for a, b in zip(p32, p64):
        assert (a != b).sum() <= 1


def test_knn_memory_is_bounded_by_the_query_batch():
    """At most `batch` test rows against all of train at once: the similarity block is batch x N."""
    tr = torch.randn(5000, 8)
    seen = []
    real = torch.Tensor.topk

    def spy(self, *a, **k):
        seen.append(tuple(self.shape))
        return real(self, *a, **k)
    try:
        torch.Tensor.topk = spy
        knn_predict(tr, torch.zeros(5000, dtype=torch.long), torch.randn(2500, 8), 10, None, 2, batch=1024)
    finally:
        torch.Tensor.topk = real
    assert seen == [(1024, 5000), (1024, 5000), (452, 5000)]
