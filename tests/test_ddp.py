"""DDP on CPU (gloo, 2 processes): global negatives, exact gradients, rank-0 outputs, resume after a kill."""
import os
import signal
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import BIN, prepare_micro, relative_error, run_cli, wait_for
from simclr import config, distributed, model as model_lib
from simclr.losses import nt_xent
from simclr.accumulate import step_gradients

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


def net_and_views(norm="group"):
    """ResNet-18 (GroupNorm: no batch statistics, unless norm='batch'), float64, and one batch of two views."""
    params = config.validate_params({"model": {"norm": norm, "input_size": SIZE}})
    net = model_lib.build(params, 0).double()
    g = torch.Generator().manual_seed(1)
    v1, v2 = (torch.rand(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2))
    return net, v1, v2


def grads_of(net):
    """Gradients of the trainable parameters (the head's last BN has a frozen zero shift)."""
    return {k: p.grad for k, p in net.named_parameters() if p.requires_grad}


CASES = {  # name: (accumulate, chunk per rank, gather, norm)
    "one_chunk": ("naive", BATCH // WORLD, None, "group"),
    "exact_chunks": ("exact", 1, None, "group"),
    "broken_gather": ("naive", BATCH // WORLD, "broken", "group"),
    "batchnorm": ("naive", BATCH // WORLD, None, "batch"),  # each rank normalises its own share
}


def _rank(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        for name, (accumulate, chunk, broken, norm) in CASES.items():
            net, v1, v2 = net_and_views(norm)
            share = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
            ddp = DistributedDataParallel(net)
            gather = LocalSliceGather.apply if broken else distributed.gather
            step_gradients(ddp, v1[share], v2[share], 0.5, chunk, accumulate, gather=gather)
            if rank == 0:
                torch.save(grads_of(net), f"{out}/{name}.pt")
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
    step_gradients(net, v1, v2, 0.5, BATCH, "naive")
    return grads_of(net)


@pytest.mark.parametrize("case", ["one_chunk", "exact_chunks"])
def test_two_ranks_give_the_single_process_global_batch_gradient(ddp_grads, single_process_grads, case):
    assert relative_error(ddp_grads[case], single_process_grads) < 1e-8


def test_a_gather_that_drops_other_ranks_gradients_is_caught(ddp_grads, single_process_grads):
    assert relative_error(ddp_grads["broken_gather"], single_process_grads) > 1e-2


def test_two_ranks_with_batchnorm_give_the_exact_gradient_of_per_share_statistics(ddp_grads):
    """BatchNorm without SyncBN: each rank normalises its own share (both views of its images, unlike
    leak-free chunks in one process), so the global gradient is that of the whole-batch loss over
    embeddings made share by share - and not the whole-batch-statistics one."""
    net, v1, v2 = net_and_views("batch")
    half = BATCH // WORLD
    z = [net(torch.cat([v1[a:a + half], v2[a:a + half]])) for a in range(0, BATCH, half)]
    nt_xent(torch.cat([zi[:half] for zi in z]), torch.cat([zi[half:] for zi in z]), 0.5).backward()
    assert relative_error(ddp_grads["batchnorm"], grads_of(net)) < 1e-8
    net, v1, v2 = net_and_views("batch")
    step_gradients(net, v1, v2, 0.5, BATCH, "naive")
    assert relative_error(ddp_grads["batchnorm"], grads_of(net)) > 1e-3


# --- a real 2-process micro pretrain through torchrun ---------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepare_micro(tmp_path_factory.mktemp("ddp_run"), **{
        "data.limit_per_class": 8, "train.batch_size": 8, "train.epochs": 2, "runtime.gpus": 2,
        "train.knn_every": 1, "runtime.threads": 1})


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
    assert sorted(p.name for p in (work / "ckpt").iterdir()) == ["last.pt", "lock", "previous.pt"]  # rank 0's lock
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
    wait_for(tmp_path / "ckpt" / "last.pt", proc)
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
    assert "train.batch_size: expected a multiple of runtime.gpus (3), found 8" in proc.stderr
    assert not (tmp_path / "model.pt").exists()
