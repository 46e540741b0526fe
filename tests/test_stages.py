"""The five stages through the `simclr` CLI as dvc.yaml runs them, each given only the keys it tracks,
on settings the other tests leave at their micro values: channels_last (the default), exact mode
with chunks, a projection width other than 128."""
import json

import numpy as np
import pytest
import torch

from conftest import prepare_micro, run_cli
from simclr import config

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    base, params = prepare_micro(tmp_path_factory.mktemp("stages"), **{
        "train.channels_last": True, "train.accumulate": "exact", "train.chunk_size": 4, "model.proj_dim": 64,
        "extract.channels_last": True})
    run_cli("pretrain", "--params", params, "--manifest", base / "manifest.json", "--model", base / "model.pt",
            "--live-dir", base / "live", "--checkpoint-dir", base / "ckpt", check=True)
    run_cli("extract", "--params", params, "--manifest", base / "manifest.json", "--model", base / "model.pt",
            "--out-dir", base / "features", check=True)
    run_cli("probe", "--params", params, "--features-dir", base / "features", "--metrics", base / "probe.json",
            "--plots-dir", base / "plots", check=True)
    return base, params


def test_pretrain_saves_the_tracked_params_and_a_head_of_the_asked_width(ran):
    base, params = ran
    saved = torch.load(base / "model.pt", weights_only=False)
    assert saved["params"] == config.stage_params(config.load_params(params), "pretrain")  # no runtime in it
    assert saved["model"]["head.3.weight"].shape[0] == 64
    assert saved["manifest_hash"] == json.loads((base / "manifest.json").read_text())["content_hash"]


def test_extract_builds_the_model_it_loads_and_writes_both_encoders(ran):
    base, _ = ran
    for name in ("simclr", "random"):
        with np.load(base / "features" / f"{name}.npz") as f:
            assert f["train_x"].shape[1] == 512 and f["test_x"].shape[1] == 512
            assert np.isfinite(f["train_x"]).all()
    with np.load(base / "features" / "simclr.npz") as a, np.load(base / "features" / "random.npz") as b:
        assert not np.allclose(a["train_x"], b["train_x"])  # trained weights were loaded


def test_probe_scores_both(ran):
    base, _ = ran
    metrics = json.loads((base / "probe.json").read_text())
    assert set(metrics) == {"simclr", "random"}
    assert all(0 <= metrics[e]["knn_top1"] <= 1 for e in metrics)
