"""Stage `pretrain`: SimCLR on the train split (labels unused), writing models/simclr.pt and a per-epoch log.

A step takes train.batch_size images (two views each). When that does not fit, train.chunk_size
images are embedded at a time and train.accumulate says how the batch is formed:

- naive: the seed's loss accumulation. Each chunk's anchors see only that chunk's negatives; the
  gradient is the size-weighted mean of the chunk losses' gradients - a different objective from
  one large batch.
- exact: gradient caching (Gao et al. 2021). Embed every chunk without a graph, take the full-batch
  NT-Xent and its gradient with respect to the embeddings, then re-embed each chunk with a graph and
  backpropagate that cached gradient. The parameter gradient equals the full-batch one; BatchNorm
  statistics are per chunk, as on several GPUs without SyncBN.

Interruptions: every train.checkpoint_every epochs, and at the next step boundary after SIGTERM or
SIGINT, the whole training state (model, optimiser, step, data order, every RNG) is written
atomically to the checkpoint folder, which no orchestrator deletes. Started again with the same
params and data, pretrain resumes there and ends with the model an uninterrupted run gives.

Several GPUs: `torchrun --nproc_per_node N -m simclr pretrain ...` (or train.gpus: N, which launches
torchrun itself). Each rank embeds train.batch_size / N images of every batch; the embeddings are
all-gathered so NT-Xent sees every global negative, and the gather's backward sums the gradients all
ranks computed for each rank's rows, so after DistributedDataParallel's mean every rank holds the
gradient of the global-batch loss. BatchNorm becomes SyncBatchNorm when train.sync_bn (CUDA only).
Only rank 0 writes checkpoints, logs and the model.

Logging: DVCLive, one step per epoch (loss, lr, epoch time, views/s, peak GPU memory and, every
train.knn_every epochs and at the last, the kNN monitor accuracy on the test split), into the folder given by
--live-dir. It never writes dvc.yaml and never saves a DVC experiment itself: under `dvc exp run` DVC
records the experiment, and under Snakemake there is none to record.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import augment as aug
from . import io, model as model_lib, optim as optim_lib
from .data import load_split
from .knn import knn_accuracy
from .losses import nt_xent
from .progress import progress


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device: expected a CUDA device for 'cuda', found none")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun: local rank {local_rank} needs GPU {local_rank}, "
                               f"found {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


class _Gather(torch.autograd.Function):
    """All-gather whose backward sums, over ranks, the gradient each rank computed for these rows.

    Every rank evaluates the loss on the gathered batch, so the rows of rank r receive gradient on
    every rank; dropping the other ranks' share (returning only the local slice of the local
    gradient) is the bug behind lightly#1528 and Spijkervet/SimCLR#30."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)  # (world x n) x D, rank order

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks; DDP's mean over ranks then gives the global gradient
        r = dist.get_rank()
        return grad[r * ctx.rows:(r + 1) * ctx.rows]


def distributed() -> bool:
    """True inside a process group of more than one rank (torchrun with N > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def share_of(batch: int, world: int) -> int:
    """Images of each batch that one of `world` processes embeds."""
    if batch % world:
        raise ValueError(f"train.batch_size: expected a multiple of the {world} processes (train.gpus), "
                         f"found {batch}")
    return batch // world


def gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank (identity in a single process)."""
    return _Gather.apply(x) if distributed() else x


def _no_sync(net: nn.Module, sync: bool):
    """DDP's no_sync() for every backward of a step but the last (one gradient all-reduce per step)."""
    ddp = net if isinstance(net, DistributedDataParallel) else getattr(net, "_orig_mod", None)
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def set_threads(n: int) -> None:
    """torch's CPU threads: n, or every core this process may run on when n is 0."""
    torch.set_num_threads(n or len(os.sched_getaffinity(0)))


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def frozen_norm_stats(net: nn.Module):
    """Run forwards in train mode without leaving any trace in BatchNorm running statistics."""
    saved = [(b, b.detach().clone()) for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def step_gradients(net: nn.Module, v1: torch.Tensor, v2: torch.Tensor, temperature: float,
                   chunk_size: int, accumulate: str, precision: str = "fp32", gather=gather) -> torch.Tensor:
    """Accumulate into .grad the gradient of one SimCLR step on views v1, v2 (B x C x H x W each).

    Returns the loss as a 0-dim tensor on the device (read it back when needed: no host sync here).
    Under DDP, v1 and v2 are this rank's share and `gather` makes every loss global."""
    b = len(v1)
    device = v1.device
    bounds = [(a, min(a + chunk_size, b)) for a in range(0, b, chunk_size)]

    def embed(a, e):
        with autocast(device, precision):
            z = net(torch.cat([v1[a:e], v2[a:e]]))  # z: 2n x D, first the v1 rows, then the v2 rows
        return z[: e - a], z[e - a:]

    if accumulate == "naive" or len(bounds) == 1:
        total = torch.zeros((), device=device)
        for k, (a, e) in enumerate(bounds):
            with _no_sync(net, k == len(bounds) - 1):
                z1, z2 = embed(a, e)
                loss = nt_xent(gather(z1), gather(z2), temperature) * ((e - a) / b)
                loss.backward()
            total += loss.detach()
        return total

    # exact: 1) embed every chunk without a graph, remembering the RNG state each forward saw
    states, leaves = [], []
    with torch.no_grad():
        for a, e in bounds:
            states.append(_rng_state(device))
            z1, z2 = embed(a, e)
            wide = torch.promote_types(z1.dtype, torch.float32)  # bf16 embeddings are cached in fp32
            leaves.append((z1.to(wide).requires_grad_(), z2.to(wide).requires_grad_()))
    # 2) the full-batch (all ranks) loss and its gradient with respect to this rank's embeddings
    loss = nt_xent(gather(torch.cat([l1 for l1, _ in leaves])), gather(torch.cat([l2 for _, l2 in leaves])),
                   temperature)
    loss.backward()
    # 3) re-embed each chunk with a graph (same RNG, BN statistics untouched) and push the cached gradient
    with frozen_norm_stats(net):
        for k, ((a, e), state, (l1, l2)) in enumerate(zip(bounds, states, leaves)):
            _set_rng_state(state, device)
            with _no_sync(net, k == len(bounds) - 1):
                z1, z2 = embed(a, e)
                torch.autograd.backward([z1, z2], [l1.grad.to(z1.dtype), l2.grad.to(z2.dtype)])
    return loss.detach()


def view_maker(params: dict, gen: torch.Generator):
    """images -> (v1, v2): the two augmented views pretrain trains on. With train.compile, the
    deterministic part (crop, flip, jitter, grayscale given the drawn parameters) is compiled too:
    eager, it is a few hundred small kernels, launch-bound on a GPU."""
    cfg = aug.AugmentConfig.from_params(params["augment"])
    render = torch.compile(aug.render, dynamic=False) if params["train"]["compile"] else aug.render
    size = params["model"]["input_size"]
    return lambda images: aug.two_views(images, size, cfg, gen, render)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, lr: float, train: dict,
               chunk: int, views) -> torch.Tensor:
    """One optimiser step on uint8 images (B x 3 x H x W, on the device): two augmented views
    (`views`, from view_maker), the gradient of train.accumulate over chunks, the update. Returns
    the loss on the device: nothing here reads back to the host (benchmarks/gpu_node.py runs it
    under CUDA's sync debug mode)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    v1, v2 = views(images)  # B x 3 x size x size each, in [0, 1]
    if train["channels_last"]:
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    loss = step_gradients(net, v1, v2, train["temperature"], chunk, train["accumulate"], train["precision"])
    optimizer.step()
    return loss


# Per-step losses stay on the device and are read back this often (and at every epoch end,
# checkpoint and signal): one host sync per READ_LOSS_EVERY steps instead of one per step.
READ_LOSS_EVERY = 50


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches only (a dataset smaller than one batch is one step)."""
    return max(1, n_images // batch_size)


# Keys that do not change what is trained: a checkpoint stays valid when only these differ.
NOT_FINGERPRINTED = ("checkpoint_every", "resume", "threads", "knn_every", "gpus")
# The code that decides what is trained: a checkpoint from other code is not resumed.
TRAINING_CODE = ("pretrain.py", "augment.py", "model.py", "losses.py", "optim.py", "data.py")


def fingerprint(params: dict, manifest: dict, code_dir: Path | None = None, world: int = 1) -> str:
    """Identity of a training run: its params (except NOT_FINGERPRINTED), the dataset's content hash,
    the training code and the number of processes, so that a resumed run is the run that was interrupted."""
    p = copy.deepcopy({k: params[k] for k in ("model", "augment", "train", "optim")})
    for key in NOT_FINGERPRINTED:
        p["train"].pop(key, None)
    here = Path(code_dir or Path(__file__).parent)
    code = {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in TRAINING_CODE}
    blob = json.dumps({"params": p, "data": manifest["content_hash"], "code": code, "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Checkpoints:
    """last.pt and previous.pt in one folder; every write is temp file + fsync + rename."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"
        self.previous = self.folder / "previous.pt"

    def save(self, state: dict) -> None:
        with io.atomic_path(self.last) as tmp:
            torch.save(state, tmp)
            if self.last.exists():
                os.replace(self.last, self.previous)  # a kill here leaves previous.pt, still good

    def load(self, want: str, log) -> dict | None:
        """The newest readable checkpoint of this run, or None (a fresh start, with the reason logged)."""
        for path in (self.last, self.previous):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
                if not isinstance(state, dict) or "fingerprint" not in state:
                    raise ValueError("not a pretrain checkpoint")
            except Exception as exc:  # torn or foreign file: say so and fall back
                log(f"warning: {path}: unreadable checkpoint ({type(exc).__name__}: {exc}); ignoring it")
                continue
            if state["fingerprint"] != want:
                log(f"pretrain: {path} belongs to other params, data or code (fingerprint "
                    f"{state['fingerprint'][:12]}, this run {want[:12]}); starting fresh")
                return None
            return state
        return None


def _rng_states(gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "data": gen.get_state(), "augment": aug_gen.get_state()}


def _restore_rng(states: dict, gen: torch.Generator, aug_gen: torch.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    gen.set_state(states["data"])
    aug_gen.set_state(states["augment"])


def set_determinism(on: bool, device: torch.device) -> None:
    """Deterministic kernels (bitwise-repeatable runs) or, when off, the fastest cuDNN choices."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = not on


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag that the loop checks at each step boundary."""
    caught: list[int] = []
    handler = lambda signum, frame: caught.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (a signal reached only some ranks)."""
    if not distributed():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _all_ranks(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_for_ranks(net: nn.Module, train: dict, device: torch.device, log) -> nn.Module:
    """Under torchrun, BatchNorm becomes SyncBatchNorm when train.sync_bn (CUDA only in this torch)."""
    if not distributed():
        return net
    if train["sync_bn"] and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    elif train["sync_bn"]:
        log("warning: train.sync_bn: SyncBatchNorm runs on CUDA only in this torch; on CPU every rank "
            "normalises its own share of the batch (as with train.sync_bn: false)")
    return net


def monitor_knn(net: model_lib.SimCLR, splits: dict, device: torch.device, precision: str,
                channels_last: bool) -> float:
    """kNN top-1 on the test split from un-augmented train features (eval mode; training state untouched)."""
    feats = {name: model_lib.features(net.encoder, images, 512, device, lambda: autocast(device, precision),
                                      channels_last)
             for name, (images, _, _) in splits.items()}
    net.train()
    (_, train_y, classes), (_, test_y, _) = splits["train"], splits["test"]
    return knn_accuracy(feats["train"], train_y.to(device), feats["test"], test_y, len(classes))


class PlainLive:
    """DVCLive's files (metrics.json and plots/metrics/<name>.tsv, one row per step) written without
    dvclive, for machines that have torch but not the DVC stack (an offline GPU node)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.step = 0
        self.latest: dict = {}
        shutil.rmtree(self.folder / "plots" / "metrics", ignore_errors=True)  # a fresh run, as Live() starts
        (self.folder / "plots" / "metrics").mkdir(parents=True, exist_ok=True)

    def log_metric(self, name: str, value) -> None:
        path = self.folder / "plots" / "metrics" / f"{name}.tsv"
        new = not path.exists()
        with path.open("a") as f:
            f.write((f"step\t{name}\n" if new else "") + f"{self.step}\t{value}\n")
        self.latest[name] = value

    def make_summary(self) -> None:
        io.write_json(self.folder / "metrics.json", {**self.latest, "step": self.step})

    def end(self) -> None:
        self.make_summary()


def open_live(live_dir: Path, rows: list[dict]):
    """A DVCLive logger that writes only into live_dir (no dvc.yaml, no `dvc exp save`), holding `rows`;
    the same files without dvclive where it is not installed."""
    try:
        from dvclive import Live
    except ImportError:
        live = PlainLive(live_dir)
    else:
        live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)  # starts the folder afresh
    for row in rows:  # a resumed run replays its logged epochs, so the folder is the uninterrupted one
        log_epoch(live, row)
    return live


def log_epoch(live, row: dict) -> None:
    live.step = row["epoch"]
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.make_summary()


def pretrain(params: dict, manifest_path: Path, model_path: Path, live_dir: Path,
             checkpoint_dir: Path = Path("checkpoints/pretrain"), log=print) -> dict:
    rank, world, local_rank = dist_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if pick_device(params["train"]["device"]).type == "cuda" else "gloo")
    try:
        return _pretrain(params, manifest_path, model_path, live_dir, checkpoint_dir,
                         log if rank == 0 else (lambda msg: None), rank, world, local_rank)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _pretrain(params, manifest_path, model_path, live_dir, checkpoint_dir, log, rank, world, local_rank):
    train, optim_cfg = params["train"], params["optim"]
    manifest = json.loads(Path(manifest_path).read_text())
    device = pick_device(train["device"], local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    set_determinism(train["deterministic"], device)
    set_threads(train["threads"])
    size = params["model"]["input_size"]
    monitor = rank == 0 and train["knn_every"] > 0  # only rank 0 evaluates the kNN monitor
    splits = {split: load_split(manifest, split, size)  # uint8 N x 3 x S x S
              for split in (("train", "test") if monitor else ("train",))}
    images = splits["train"][0].to(device)
    n = len(images)
    batch = min(train["batch_size"], n)
    share = share_of(batch, world)
    chunk = min(train["chunk_size"] or share, share)

    net = model_lib.build(params, train["seed"]).to(device)
    net = wrap_for_ranks(net, train, device, log)
    if train["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    step_net = DistributedDataParallel(net) if world > 1 else net
    step_net = torch.compile(step_net) if train["compile"] else step_net
    optimizer = optim_lib.build(net, optim_cfg, batch)
    peak = optim_lib.peak_lr(optim_cfg, batch)  # scaled by the global batch
    per_epoch = steps_per_epoch(n, batch)
    total = per_epoch * train["epochs"]
    warmup = round(optim_cfg["warmup_epochs"] * per_epoch)
    gen = torch.Generator(device=device).manual_seed(train["seed"])  # data order: the same on every rank
    # augmentation: its own stream per rank under DDP (a single process keeps one stream for both)
    aug_gen = gen if world == 1 else torch.Generator(device=device).manual_seed(train["seed"] * 1000 + 1 + rank)
    views = view_maker(params, aug_gen)
    log(f"pretrain: {n} images, batch {batch} ({world} x {share}, chunk {chunk}, {train['accumulate']}), "
        f"{per_epoch} steps/epoch x {train['epochs']} epochs, peak lr {peak:.4g}, device {device}")

    fp = fingerprint(params, manifest, world=world)
    ckpts = Checkpoints(checkpoint_dir)
    # where the run stands: epoch in progress, next step within it, its data order and losses so far
    epoch, first, step, order, losses, rows = 0, 0, 0, None, [], []
    state = ckpts.load(fp, log) if train["resume"] == "auto" else None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, first, step, rows, losses = state["epoch"], state["batch"], state["step"], state["rows"], state["losses"]
        order = state["order"].to(device) if state["order"] is not None else None
        _restore_rng(state["rng"][rank], gen, aug_gen)
        log(f"pretrain: resuming from epoch {epoch + 1}, step {step} ({ckpts.last.parent})")

    def save(next_batch: int) -> None:
        rngs = _all_ranks(_rng_states(gen, aug_gen))  # collective: every rank calls save
        if rank == 0:
            ckpts.save({"fingerprint": fp, "epoch": epoch, "batch": next_batch, "step": step, "rows": rows,
                        "losses": losses, "order": None if order is None else order.cpu(),
                        "model": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": rngs})

    live = open_live(live_dir, rows) if rank == 0 else None
    pending: list[torch.Tensor] = []  # this epoch's losses not yet read back (0-dim, on the device)

    def read_losses() -> None:
        """Move pending losses to the host in one transfer; stop at the first non-finite one."""
        nonlocal pending
        if not pending:
            return
        values = torch.stack(pending).tolist()
        first = step - len(values)  # global index of pending[0]
        pending = []
        for k, value in enumerate(values):
            if not np.isfinite(value):
                at = first + k
                kept = f"last good checkpoint kept in {ckpts.folder}" if ckpts.last.exists() else "no checkpoint yet"
                raise FloatingPointError(f"pretrain: non-finite loss ({value}) at epoch {at // per_epoch + 1}, "
                                         f"step {at + 1}; {kept}; no model written")
        losses.extend(values)

    net.train()
    with stop_on_signals() as caught:
        while epoch < train["epochs"]:
            start = time.perf_counter()
            if order is None:
                order = torch.randperm(n, generator=gen, device=device)
            lr = optim_lib.lr_at(max(step - 1, 0), total, warmup, peak)  # for the log if no step is left
            steps = progress(range(first, per_epoch), per_epoch - first, f"epoch {epoch + 1}/{train['epochs']}",
                             log, enabled=rank == 0)
            for i in steps:
                lr = optim_lib.lr_at(step, total, warmup, peak)
                mine = order[i * batch:(i + 1) * batch][rank * share:(rank + 1) * share]
                pending.append(train_step(step_net, optimizer, images[mine], lr, train, chunk, views))
                step += 1
                if len(pending) == READ_LOSS_EVERY:
                    read_losses()
                if _any_rank(bool(caught), device):
                    read_losses()
                    save(i + 1)
                    signum = caught[0] if caught else signal.SIGTERM
                    raise Interrupted(signum, f"pretrain: stopped by {signal.Signals(signum).name} at epoch "
                                      f"{epoch + 1}, step {step}; checkpoint written to {ckpts.last}; "
                                      "run the same command again to resume")
            read_losses()
            seconds = time.perf_counter() - start
            row = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "lr": lr,
                   "epoch_time_s": round(seconds, 3),
                   "views_per_s": round(2 * batch * (per_epoch - first) / seconds, 1),
                   "gpu_peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                   if device.type == "cuda" else 0.0}
            if monitor and ((epoch + 1) % train["knn_every"] == 0 or epoch + 1 == train["epochs"]):
                row["knn_top1"] = round(monitor_knn(net, splits, device, train["precision"], train["channels_last"]), 6)
            rows.append(row)
            log(f"epoch {epoch + 1}/{train['epochs']}: loss {row['loss']:.4f}, lr {lr:.4g}, {seconds:.1f}s"
                + (f", kNN top-1 {row['knn_top1']:.4f}" if "knn_top1" in row else ""))
            if live is not None:
                log_epoch(live, row)
            epoch, first, order, losses = epoch + 1, 0, None, []
            if train["checkpoint_every"] and epoch % train["checkpoint_every"] == 0:
                save(0)
    if rank != 0:
        return rows[-1]
    live.end()
    io.save_torch(model_path, {
        "model": {k: v.cpu() for k, v in net.state_dict().items()},
        "params": params,
        "manifest_hash": manifest["content_hash"],
    })
    return rows[-1]
