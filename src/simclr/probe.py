"""Stage `probe`: how good are the frozen features? Linear, label-scarce and kNN classifiers.

- linear: scikit-learn LogisticRegression (L2, L-BFGS) on standardised float32 features; C is
  chosen by accuracy on a stratified held-out part (probe.val_fraction) of the train split, along
  the C grid in increasing order, each fit warm-started from the previous C's solution; then refit on
  all of train at the chosen C, warm-started from that C's held-out solution. Test top-1/top-5,
  per-class accuracy, confusion matrix.
- label-scarce: the same classifier trained on `shots` labelled images per class, averaged over
  `shot_draws` fixed draws (where self-supervised features matter most); the standardisation is fit
  on all train features, which needs no labels.
- kNN: cosine similarity, k nearest train features, votes weighted by exp(sim / t) (MoCo's CIFAR demo;
  knn_top1), and the majority vote of the vote_k nearest (dkobak/simclr-cifar10's k=10; knn_vote_top1);
  in float32, on the GPU when there is one, 1,024 test rows at a time (knn.py).
Each for the SimCLR encoder and the random-init baseline.

It also writes a picture of the learned space (plots.py: a 2-D t-SNE or PCA map of a fixed sample
of test features, coloured by class, SimCLR beside random-init) and the per-class and confusion tables.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from . import io, plots
from .errors import UserError
from .knn import knn_predict

ENCODERS = ("simclr", "random")


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, unlabelled: np.ndarray | None = None,
                 init: tuple[np.ndarray, np.ndarray] | None = None):
    """Logistic regression on standardised features (float32 stays float32: L-BFGS takes it). The
    scaler is fit on `unlabelled` when given (the label-scarce probe: every train feature, which
    needs no label), else on x. init: (coef, intercept) to start L-BFGS from (warm start)."""
    scaler = StandardScaler().fit(x if unlabelled is None else unlabelled)
    clf = LogisticRegression(C=c, max_iter=max_iter, warm_start=init is not None)
    if init is not None:
        clf.coef_, clf.intercept_ = init[0].copy(), init[1].copy()
    clf.fit(scaler.transform(x), y)
    clf.scaler_ = scaler
    return clf


def _fit_predict(x, y, tx, c: float, max_iter: int, unlabelled=None, init=None):
    """(test probabilities, classes, iterations) of one fit on (x, y), on one thread: single-threaded
    fits side by side beat BLAS threads on these problems, and give the same numbers on any machine."""
    with threadpool_limits(1):
        clf = fit_logistic(x, y, c, max_iter, unlabelled, init)
        return clf.predict_proba(clf.scaler_.transform(tx)), clf.classes_, int(clf.n_iter_.max())


def c_path(x, y, vx, vy, grid, max_iter: int, patience: int | None = None) -> list[tuple[float, tuple, int]]:
    """The C grid in increasing order on (x, y), each fit warm-started from the previous C's solution;
    for each C its held-out accuracy on (vx, vy), its solution and its iterations. With `patience`,
    the path stops once that many C values in a row score below the best so far (the larger C are
    the slow fits: on CIFAR-10 features the last two fitted took about half of the path's L-BFGS
    iterations and did not win, docs/results.md). One thread (see _fit_predict)."""
    out, behind = [], 0
    with threadpool_limits(1):
        scaler = StandardScaler().fit(x)
        xs, vs = scaler.transform(x), scaler.transform(vx)
        clf = LogisticRegression(max_iter=max_iter, warm_start=True)
        for c in sorted(grid):
            clf.set_params(C=float(c))
            clf.fit(xs, y)
            acc = float(np.mean(clf.classes_[clf.predict_proba(vs).argmax(1)] == vy))
            behind = behind + 1 if out and acc < max(a for a, _, _ in out) else 0
            out.append((acc, (clf.coef_.copy(), clf.intercept_.copy()), int(clf.n_iter_.max())))
            if patience is not None and behind >= patience:
                break
    return out


def _pool(jobs: int | None):
    from joblib import Parallel  # ships with scikit-learn

    return Parallel(n_jobs=jobs or len(os.sched_getaffinity(0)))


def _held_out(x, y, val_fraction: float, seed: int):
    try:
        return train_test_split(x, y, test_size=val_fraction, random_state=seed, stratify=y)  # xa, xb, ya, yb
    except ValueError as exc:  # too few train images of some class for a stratified split
        raise UserError(f"probe.val_fraction: expected a held-out part of train ({val_fraction} of {len(y)} images) "
                        f"that every class reaches on both sides, found: {exc}") from None


def topk(proba: np.ndarray, classes: np.ndarray, y: np.ndarray, k: int) -> float:
    k = min(k, proba.shape[1])
    best = classes[np.argsort(-proba, axis=1)[:, :k]]
    return float(np.mean((best == y[:, None]).any(axis=1)))


def shot_indices(y: np.ndarray, shots: int, draws: int, seed: int) -> list[np.ndarray]:
    """`draws` fixed draws of `shots` labelled train images per class."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.choice(np.flatnonzero(y == cls), size=min(shots, int(np.sum(y == cls))), replace=False)
                            for cls in np.unique(y)]) for _ in range(draws)]


def evaluate_all(feats: dict[str, dict], cfg: dict, jobs: int | None = None) -> dict[str, tuple[dict, np.ndarray]]:
    """Metrics and linear-probe test predictions of every encoder in feats (name -> features).

    Each encoder's C path (c_path: the grid warm-started in increasing order on the held-out split),
    then each refit on all of train and the few-shot draws, are single-threaded jobs in a pool of
    `jobs` processes (default: one per core the process may use), so the fits run side by side. A tie
    in held-out accuracy goes to the smallest C, as before. `iterations` in the result: L-BFGS
    iterations of each C of the path and of the refit (the cost driver: each is O(N x D x K))."""
    from joblib import delayed

    grid = np.geomspace(cfg["c_min"], cfg["c_max"], cfg["c_num"])
    it, shots, draws = cfg["max_iter"], cfg["shots"], cfg["shot_draws"]
    feats = {name: {**f, "train_x": f["train_x"].astype(np.float32, copy=False),
                    "test_x": f["test_x"].astype(np.float32, copy=False)} for name, f in feats.items()}
    held = {name: _held_out(f["train_x"], f["train_y"], cfg["val_fraction"], cfg["seed"]) for name, f in feats.items()}
    draw_idx = {name: shot_indices(f["train_y"], shots, draws, cfg["seed"]) for name, f in feats.items()}
    with _pool(jobs) as pool:
        paths = dict(zip(feats, pool(delayed(c_path)(held[n][0], held[n][2], held[n][1], held[n][3], grid, it,
                                                     cfg.get("c_patience"))
                                     for n in feats)))
        best = {name: int(np.argmax([acc for acc, _, _ in paths[name]])) for name in feats}  # first max: smallest C
        chosen = {name: float(sorted(grid)[best[name]]) for name in feats}
        fits = [(name, None) for name in feats] + [(name, idx) for name in feats for idx in draw_idx[name]]
        outs = pool(
            delayed(_fit_predict)(feats[n]["train_x"], feats[n]["train_y"], feats[n]["test_x"], chosen[n], it,
                                  None, paths[n][best[n]][1])
            if idx is None else
            delayed(_fit_predict)(feats[n]["train_x"][idx], feats[n]["train_y"][idx], feats[n]["test_x"],
                                  cfg["shot_c"], it, feats[n]["train_x"])
            for n, idx in fits)
    result = {}
    for name, f in feats.items():
        x, y, tx, ty = f["train_x"], f["train_y"], f["test_x"], f["test_y"]
        mine = [out for (n, _), out in zip(fits, outs) if n == name]
        (p, classes, refit_iter), shot_outs = mine[0], mine[1:]
        pred = classes[p.argmax(1)]
        accs = [float(np.mean(cl[sp.argmax(1)] == ty)) for sp, cl, _ in shot_outs]
        knn, vote = knn_both(x, y, tx, cfg, len(f["classes"]))
        result[name] = ({
            "linear_top1": float(np.mean(pred == ty)),
            "linear_top5": topk(p, classes, ty, 5),
            "linear_C": chosen[name],
            "fewshot_top1": float(np.mean(accs)),  # probe.shots per class; the name stays when it changes
            "fewshot_std": float(np.std(accs)),
            "knn_top1": float(np.mean(knn == ty)),
            "knn_vote_top1": float(np.mean(vote == ty)),
        }, pred, {"c_path": [n for _, _, n in paths[name]], "refit": refit_iter})
    return result


def knn_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def knn_both(x, y, tx, cfg: dict, n_classes: int, device=None, dtype=None):
    """(weighted kNN, majority-vote kNN) test predictions, float32 on the GPU when there is one:
    the features once on the device, 1,024 test rows at a time against all of train (knn.py)."""
    import torch
    device = device or knn_device()
    dtype = dtype or torch.float32
    tr = torch.as_tensor(x).to(device, dtype)
    te = torch.as_tensor(tx).to(device, dtype)
    knn = knn_predict(tr, y, te, cfg["knn_k"], cfg["knn_t"], n_classes).cpu().numpy()
    vote = knn_predict(tr, y, te, cfg["vote_k"], None, n_classes).cpu().numpy()
    return knn, vote


def evaluate(feats: dict, cfg: dict, jobs: int | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of one encoder's features, and its linear probe's test predictions."""
    return evaluate_all({"encoder": feats}, cfg, jobs)["encoder"][:2]


FEATURE_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes")


def read_features(path: Path) -> dict:
    """One encoder's features as extract writes them; anything else is a UserError naming the file."""
    f = io.load_npz(path, "features written by simclr extract", keys=FEATURE_KEYS)
    for split in ("train", "test"):
        x, y = f[f"{split}_x"], f[f"{split}_y"]
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or not len(y):
            raise UserError(f"{path}: expected {split}_x (N x D) and {split}_y (N) with N > 0, "
                            f"found shapes {x.shape} and {y.shape}")
        if y.min() < 0 or y.max() >= len(f["classes"]):
            raise UserError(f"{path}: expected {split}_y in 0..{len(f['classes']) - 1}, found {y.min()}..{y.max()}")
    if f["train_x"].shape[1] != f["test_x"].shape[1]:
        raise UserError(f"{path}: train_x has {f['train_x'].shape[1]} dimensions, test_x {f['test_x'].shape[1]}")
    return f


HEADLINE = (("linear_top1", "linear"), ("knn_vote_top1", "kNN k=10"), ("knn_top1", "kNN k=200"),
            ("fewshot_top1", "few-shot"))


def headline(metrics: dict, metrics_path, plot_path) -> str:
    """Two lines a run ends with: SimCLR against random-init on each probe, and where to look next."""
    s, r = metrics["simclr"], metrics["random"]
    numbers = ", ".join(f"{name} {100 * s[k]:.1f}% vs {100 * r[k]:.1f}%" for k, name in HEADLINE if k in s and k in r)
    return f"SimCLR vs random-init: {numbers}\nmetrics: {metrics_path}; picture: {plot_path}"


def probe(params: dict, features_dir: Path, metrics_path: Path, plots_dir: Path, log=print) -> dict:
    cfg = params["probe"]
    result, per_class, confusion, loaded = {}, [], [], {}
    for name in ENCODERS:
        loaded[name] = read_features(Path(features_dir) / f"{name}.npz")
    start = time.perf_counter()
    evaluated = evaluate_all(loaded, cfg)
    log(f"probe: {len(ENCODERS)} encoders evaluated in {time.perf_counter() - start:.1f}s")
    for name in ENCODERS:
        feats = loaded[name]
        metrics, pred, iterations = evaluated[name]
        log(f"probe: {name}: L-BFGS iterations along the C path {iterations['c_path']}, refit {iterations['refit']}")
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
    start = time.perf_counter()
    plots.save_embedding(plots_dir / "embedding.png", loaded, cfg)
    log(f"probe: {plots.METHOD_NAMES[cfg['embedding']]} picture of both encoders ({time.perf_counter() - start:.1f}s)")
    io.write_text(plots_dir / "per_class.csv", plots.csv_text(per_class))
    io.write_text(plots_dir / "confusion.csv", plots.csv_text(confusion))
    io.write_json(metrics_path, result)
    log(headline(result, metrics_path, plots_dir / "embedding.png"))
    return result
