"""DDP on CPU (gloo, 2 processes): global negatives, exact gradients, rank-0 outputs, resume after a kill."""
import os
import signal
import subprocess
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import BIN, micro_params_yaml, run_cli
from simclr import config, model as model_lib, pretrain as pt

pytestmark = pytest.mark.slow  # real snakemake/dvc/torchrun subprocesses or whole micro runs

WORLD, BATCH, SIZE = 2, 8, 8


class LocalSliceGather(torch.autograd.Function):
    """The bug of lightly#1528 / Spijkervet/SimCLR#30: backward keeps only this rank's gradient."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        r = dist.get_rank()
        return grad[r * ctx.rows:(r + 1) * ctx.rows]


def net_and_views():
    """ResNet-18 with GroupNorm (no batch statistics), float64, and one batch of two views."""
    params = config.validate_params({"model": {"norm": "group", "input_size": SIZE}})
    net = model_lib.build(params, 0).double()
    g = torch.Generator().manual_seed(1)
    v1, v2 = (torch.rand(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2))
    return net, v1, v2


CASES = {  # name: (accumulate, chunk per rank, gather)
    "one_chunk": ("naive", BATCH // WORLD, None),
    "exact_chunks": ("exact", 1, None),
    "broken_gather": ("naive", BATCH // WORLD, "broken"),
}


def _rank(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        for name, (accumulate, chunk, broken) in CASES.items():
            net, v1, v2 = net_and_views()
            share = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
            ddp = DistributedDataParallel(net)
            gather = LocalSliceGather.apply if broken else pt.gather
            pt.step_gradients(ddp, v1[share], v2[share], 0.5, chunk, accumulate, gather=gather)
            if rank == 0:
                torch.save({k: p.grad for k, p in net.named_parameters()}, f"{out}/{name}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_rank, args=(str(out / "init"), str(out)), nprocs=WORLD, start_method="spawn")
    return {name: torch.load(out / f"{name}.pt") for name in CASES}


@pytest.fixture(scope="module")
def single_process_grads():
    net, v1, v2 = net_and_views()
    pt.step_gradients(net, v1, v2, 0.5, BATCH, "naive")
    return {k: p.grad for k, p in net.named_parameters()}


def relative_error(a: dict, b: dict) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in b)
    return (num / sum(float(b[k].pow(2).sum()) for k in b)) ** 0.5


@pytest.mark.parametrize("case", ["one_chunk", "exact_chunks"])
def test_two_ranks_give_the_single_process_global_batch_gradient(ddp_grads, single_process_grads, case):
    assert relative_error(ddp_grads[case], single_process_grads) < 1e-8


def test_a_gather_that_drops_other_ranks_gradients_is_caught(ddp_grads, single_process_grads):
    assert relative_error(ddp_grads["broken_gather"], single_process_grads) > 1e-2


# --- a real 2-process micro pretrain through torchrun ---------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_run")
    params = base / "params.yaml"
    params.write_text(micro_params_yaml(**{"data.limit_per_class": 8, "train.batch_size": 8, "train.epochs": 2,
                                           "train.gpus": 2, "train.knn_every": 1, "train.threads": 1}))
    run_cli("prepare", "--params", params, "--out", base / "digits", check=True)
    run_cli("validate", base / "digits", "--manifest", base / "manifest.json", "--params", params, check=True)
    return base, params


def pretrain_args(work, params, manifest):
    return ["pretrain", "--params", str(params), "--manifest", str(manifest), "--model", str(work / "model.pt"),
            "--live-dir", str(work / "live"), "--checkpoint-dir", str(work / "ckpt")]


def torchrun(work, params, manifest):
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={WORLD}", "-m", "simclr",
            *pretrain_args(work, params, manifest)]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """`simclr pretrain` with train.gpus: 2 starts itself under torchrun."""
    base, params = dataset
    work = tmp_path_factory.mktemp("ddp_reference")
    proc = run_cli(*pretrain_args(work, params, base / "manifest.json"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return work, proc.stdout


def test_two_rank_pretrain_writes_one_model_log_and_checkpoint(reference):
    work, out = reference
    assert "torch.distributed.run --standalone --nproc_per_node=2" in out
    assert "batch 8 (2 x 4" in out
    assert out.count("epoch 2/2: loss") == 1  # rank 1 logs nothing
    assert sorted(p.name for p in (work / "ckpt").iterdir()) == ["last.pt", "previous.pt"]
    assert torch.load(work / "model.pt", weights_only=False)["model"]
    assert (work / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 3
    assert "SyncBatchNorm runs on CUDA only" in out  # the CPU situation is said, not hidden
    state = torch.load(work / "ckpt" / "last.pt", weights_only=False)
    assert len(state["rng"]) == WORLD  # every rank's random state, so a resume continues each stream


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and text in open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace"):
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def test_kill_then_rerun_resumes_to_the_uninterrupted_two_rank_model(dataset, reference, tmp_path):
    base, params = dataset
    cmd = torchrun(tmp_path, params, base / "manifest.json")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while not (tmp_path / "ckpt" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    # the whole job dies at once, as when a node is lost (torchrun starts workers in their own sessions)
    for pid in processes_mentioning(str(tmp_path / "ckpt")):
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "model.pt").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from epoch" in again.stdout
    ref = torch.load(reference[0] / "model.pt", weights_only=False)["model"]
    got = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_batch_not_divisible_by_processes_is_a_clear_error(dataset, tmp_path):
    base, params = dataset
    odd = tmp_path / "params.yaml"
    odd.write_text(params.read_text().replace("gpus: 2", "gpus: 3"))
    proc = run_cli(*pretrain_args(tmp_path, odd, base / "manifest.json"))
    assert proc.returncode != 0
    assert "train.batch_size: expected a multiple of the 3 processes (train.gpus), found 8" in proc.stderr
    assert not (tmp_path / "model.pt").exists()
