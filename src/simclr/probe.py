"""Stage `probe`: how good are the frozen features? Linear, label-scarce and kNN classifiers.

- linear: scikit-learn LogisticRegression (L2, L-BFGS) on standardised features; C is chosen by
  accuracy on a stratified held-out part of the train split, then refit on all of train.
  Test top-1/top-5, per-class accuracy, confusion matrix.
- label-scarce: the same classifier trained on `shots` labelled images per class, averaged over
  `shot_draws` fixed draws (where self-supervised features matter most).
- kNN: cosine similarity, k nearest train features, votes weighted by exp(sim / t) (MoCo's CIFAR demo).
Each for the SimCLR encoder and the random-init baseline.
"""
from __future__ import annotations

import csv
import io as _io
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from . import io

ENCODERS = ("simclr", "random")


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), y)
    return lambda q: clf.predict_proba(scaler.transform(q)), clf.classes_


def choose_c(x: np.ndarray, y: np.ndarray, grid: np.ndarray, val_fraction: float, max_iter: int, seed: int):
    """The C of `grid` with the best accuracy on a stratified held-out part of (x, y); returns (C, scores)."""
    xa, xb, ya, yb = train_test_split(x, y, test_size=val_fraction, random_state=seed, stratify=y)
    scores = []
    for c in grid:
        proba, classes = fit_logistic(xa, ya, c, max_iter)
        scores.append(float(np.mean(classes[proba(xb).argmax(1)] == yb)))
    return float(grid[int(np.argmax(scores))]), scores


def topk(proba: np.ndarray, classes: np.ndarray, y: np.ndarray, k: int) -> float:
    k = min(k, proba.shape[1])
    best = classes[np.argsort(-proba, axis=1)[:, :k]]
    return float(np.mean((best == y[:, None]).any(axis=1)))


def knn_predict(train_x, train_y, test_x, k: int, t: float, n_classes: int, batch: int = 1024) -> np.ndarray:
    """Weighted kNN on cosine similarity: each of the k neighbours votes exp(sim / t) for its class."""
    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    tr, te = unit(train_x.astype(np.float64)), unit(test_x.astype(np.float64))
    k = min(k, len(tr))
    out = []
    for a in range(0, len(te), batch):
        sim = te[a:a + batch] @ tr.T  # q x N
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, idx, axis=1) / t)  # q x k
        votes = np.zeros((len(idx), n_classes))
        np.add.at(votes, (np.arange(len(idx))[:, None], train_y[idx]), w)
        out.append(votes.argmax(1))
    return np.concatenate(out)


def few_shot(x, y, test_x, test_y, shots: int, draws: int, c: float, max_iter: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == cls), size=min(shots, int(np.sum(y == cls))), replace=False)
                              for cls in np.unique(y)])
        proba, classes = fit_logistic(x[idx], y[idx], c, max_iter)
        accs.append(float(np.mean(classes[proba(test_x).argmax(1)] == test_y)))
    return accs


def evaluate(feats: dict, cfg: dict) -> tuple[dict, np.ndarray]:
    """Metrics of one encoder's features, and its linear probe's test predictions."""
    x, y, tx, ty = feats["train_x"], feats["train_y"], feats["test_x"], feats["test_y"]
    grid = np.geomspace(cfg["c_min"], cfg["c_max"], cfg["c_num"])
    c, _ = choose_c(x, y, grid, cfg["val_fraction"], cfg["max_iter"], cfg["seed"])
    proba, classes = fit_logistic(x, y, c, cfg["max_iter"])
    p = proba(tx)
    pred = classes[p.argmax(1)]
    shots = few_shot(x, y, tx, ty, cfg["shots"], cfg["shot_draws"], cfg["shot_c"], cfg["max_iter"], cfg["seed"])
    knn = knn_predict(x, y, tx, cfg["knn_k"], cfg["knn_t"], len(feats["classes"]))
    metrics = {
        "linear_top1": float(np.mean(pred == ty)),
        "linear_top5": topk(p, classes, ty, 5),
        "linear_C": c,
        f"fewshot_{cfg['shots']}_top1": float(np.mean(shots)),
        f"fewshot_{cfg['shots']}_std": float(np.std(shots)),
        "knn_top1": float(np.mean(knn == ty)),
    }
    return metrics, pred


def _csv(rows: list[dict]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def probe(params: dict, features_dir: Path, metrics_path: Path, plots_dir: Path, log=print) -> dict:
    cfg = params["probe"]
    result, per_class, confusion = {}, [], []
    for name in ENCODERS:
        with np.load(Path(features_dir) / f"{name}.npz") as f:
            feats = {k: f[k] for k in f.files}
        metrics, pred = evaluate(feats, cfg)
        result[name] = {k: round(v, 6) for k, v in metrics.items()}
        log(f"probe: {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        classes, ty = feats["classes"], feats["test_y"]
        for i, cls in enumerate(classes):
            mask = ty == i
            if not per_class or len(per_class) < len(classes):
                per_class.append({"class": str(cls)})
            per_class[i][name] = round(float(np.mean(pred[mask] == i)), 6) if mask.any() else 0.0
        if name == "simclr":
            confusion = [{"actual": str(classes[a]), "predicted": str(classes[b])} for a, b in zip(ty, pred)]
    plots_dir = Path(plots_dir)
    io.write_text(plots_dir / "per_class.csv", _csv(per_class))
    io.write_text(plots_dir / "confusion.csv", _csv(confusion))
    io.write_json(metrics_path, result)
    return result
