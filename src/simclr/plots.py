"""What probe draws and tabulates: the embedding picture (a 2-D t-SNE or PCA map of a fixed sample of
test features, coloured by class, one panel per encoder; the class-to-colour legend rides in the PNG's
Description text chunk) and the CSV tables that feed `dvc plots`."""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from . import io

METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA"}


def csv_text(rows: list[dict]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def project_2d(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    """n x 2 map of standardised features: PCA, or t-SNE initialised by PCA (after PCA to 50 dims)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    with threadpool_limits(1):  # BLAS and OpenMP sums depend on the thread count; t-SNE amplifies that
        x = StandardScaler().fit_transform(x)
        if method == "pca":
            return PCA(2, random_state=seed).fit_transform(x)
        x = PCA(min(50, *x.shape), random_state=seed).fit_transform(x)
        tsne = TSNE(2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed)
        return tsne.fit_transform(x)


def class_colours(n: int) -> list[str]:
    """n distinct colours (matplotlib's tab10/tab20, else evenly spaced hues), as hex."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return [to_hex(cmap(i)) for i in range(n)]
    return [to_hex(colormaps["hsv"](i / n)) for i in range(n)]


def embedding_figure(maps: dict, labels: np.ndarray, classes, method: str):
    """One scatter per encoder (maps: name -> n x 2), points coloured by class, one shared legend."""
    from matplotlib.figure import Figure  # no pyplot: no display needed (headless)

    colours = class_colours(len(classes))
    fig = Figure(figsize=(6 * len(maps) + 2, 6), dpi=100)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (name, xy) in zip(axes, maps.items()):
        for i, cls in enumerate(classes):
            mask = labels == i
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colours[i], label=str(cls))
        ax.set_title(f"{name} encoder: {METHOD_NAMES[method]} of {len(labels)} test images")
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", title="class", markerscale=2)
    fig.subplots_adjust(left=0.02, right=0.86, wspace=0.05)
    return fig


def save_embedding(path: Path, feats: dict, cfg: dict) -> dict:
    """Draw the embedding picture of every encoder in `feats` and write it as PNG; returns its legend."""
    test_y = next(iter(feats.values()))["test_y"]
    classes = [str(c) for c in next(iter(feats.values()))["classes"]]
    rng = np.random.default_rng(cfg["seed"])
    idx = np.sort(rng.choice(len(test_y), size=min(cfg["embedding_samples"], len(test_y)), replace=False))
    maps = {name: project_2d(f["test_x"][idx], cfg["embedding"], cfg["seed"]) for name, f in feats.items()}
    fig = embedding_figure(maps, test_y[idx], classes, cfg["embedding"])
    legend = dict(zip(classes, class_colours(len(classes))))
    with io.atomic_path(path, suffix=".png") as tmp:  # the legend travels inside the PNG (tEXt chunk)
        fig.savefig(tmp, format="png", metadata={"Description": json.dumps({"legend": legend})})
    return legend
