"""Stage `pretrain`: SimCLR on the train split and/or unlabelled/ (train.splits; labels unused), writing
models/simclr.pt and a per-epoch log.

    simclr pretrain --manifest data/manifest.json --model models/simclr.pt --live-dir metrics/pretrain

A step takes train.batch_size images, two augmented views each; when that does not fit, they are
embedded train.chunk_size at a time and train.accumulate (accumulate.py) says how the gradient is
formed. The loop below is the whole schedule; the plumbing is in sibling modules:

    runtime.py      device, threads, precision, deterministic kernels
    distributed.py  several GPUs under torchrun (runtime.gpus > 1 launches it): gather, rank agreement
    checkpoint.py   RunState, atomic checkpoints, the run's fingerprint, RNG capture, signals
    live.py         the per-epoch log (DVCLive's files) in --live-dir
    cache.py        the decoded splits, memory-mapped;  feed.py  batches from them, resident or streamed

Under DDP each rank embeds its share of every batch; only rank 0 writes checkpoints, logs and the model.
"""
from __future__ import annotations

import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import augment as aug, distributed as ddp, io, model as model_lib, optim as optim_lib, runtime as rt
from .accumulate import step_gradients
from .checkpoint import Checkpoints, Interrupted, RunState, fingerprint, restore_rng, rng_states, stop_on_signals
from .distributed import torchrun_command
from .encoder import features
from .feed import Feed, default_budget_mib
from .cache import cache_dir, load_split, stored
from .data import UNLABELLED, read_manifest
from .errors import UserError
from .knn import knn_accuracy
from .live import log_epoch, open_live
from .progress import progress

__all__ = ["Interrupted", "pretrain", "torchrun_command", "train_step", "view_maker"]

# Per-step losses stay on the device and are read back this often (and at every epoch end,
# checkpoint and signal): one host sync per READ_LOSS_EVERY steps instead of one per step.
READ_LOSS_EVERY = 50


class NonFiniteLoss(UserError, FloatingPointError):
    """Training diverged (a NaN or infinite loss); lower optim.base_lr or use train.precision fp32."""


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
    loss = step_gradients(net, v1, v2, train["temperature"], chunk, train["accumulate"], train["precision"],
                          forward_views=train["forward_views"])
    optimizer.step()
    return loss


def per_class_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of at most `per_class` images of each class (a fixed draw of `seed`, sorted); all when None."""
    if per_class is None:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    picks = [idx[torch.randperm(len(idx), generator=gen)[:per_class]]
             for idx in (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))]
    return torch.cat(picks).sort().values


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches only (a dataset smaller than one batch is one step)."""
    return max(1, n_images // batch_size)


def monitor_knn(net: model_lib.SimCLR, splits: dict, device: torch.device, precision: str,
                channels_last: bool, size: int) -> float:
    """kNN top-1 on the test split from un-augmented train features (eval mode; training state untouched)."""
    feats = {name: features(net.encoder, images, 512, device, lambda: rt.autocast(device, precision),
                            channels_last, size=size)
             for name, (images, _, _) in splits.items() if name != UNLABELLED}
    net.train()
    (_, train_y, classes), (_, test_y, _) = splits["train"], splits["test"]
    return knn_accuracy(feats["train"], train_y.to(device), feats["test"], test_y, len(classes))


def read_losses(pending: list[torch.Tensor], run: RunState, per_epoch: int, ckpts: Checkpoints) -> None:
    """Move pending losses (0-dim, on the device) to run.losses in one transfer; stop at a non-finite one."""
    if not pending:
        return
    values = torch.stack(pending).tolist()
    pending.clear()
    for k, value in enumerate(values):
        if not np.isfinite(value):
            at = run.step - len(values) + k
            kept = f"last good checkpoint kept in {ckpts.folder}" if ckpts.last.exists() else "no checkpoint yet"
            raise NonFiniteLoss(f"pretrain: non-finite loss ({value}) at epoch {at // per_epoch + 1}, "
                                     f"step {at + 1}; {kept}; no model written")
    run.losses.extend(values)


def pretrain(params: dict, manifest_path: Path, model_path: Path, live_dir: Path,
             checkpoint_dir: Path | None = None, log=print) -> dict:
    """Train; `params` holds pretrain's tracked sections and `runtime`. Returns the last epoch's row.
    checkpoint_dir None: <cache>/checkpoints/<fingerprint> (data.cache_dir), one folder per run, outside
    the workspace, so a queued DVC experiment killed in its temporary workspace resumes when rerun."""
    rank, world, local_rank = ddp.env()
    cuda = rt.pick_device(params["runtime"]["device"], local_rank).type == "cuda"
    with ddp.process_group(world, cuda):
        return _pretrain(params, Path(manifest_path), Path(model_path), Path(live_dir), checkpoint_dir,
                         log if rank == 0 else (lambda msg: None), rank, world, local_rank)


@dataclass
class Setup:
    """Everything the epoch loop needs, made once by set_up (or restored from a checkpoint)."""
    net: nn.Module                     # the model (rank 0 saves its state)
    step_net: nn.Module                # what a step calls: net, under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    feed: Feed                         # the training images (uint8 N x 3 x S x S), resident or streamed
    batch: int                         # global batch
    share: int                         # this rank's part of it
    chunk: int                         # images embedded at once
    per_epoch: int
    total: int                         # steps
    warmup: int                        # steps
    peak: float                        # lr
    gen: torch.Generator               # data order
    views: object                      # images -> (v1, v2)
    fp: str                            # the run's fingerprint
    ckpts: Checkpoints
    run: RunState
    splits: dict                       # decoded splits (test too when the kNN monitor runs)
    monitor: bool
    device: torch.device
    manifest_hash: str                 # the data it trains on, recorded in the model file
    input_size: int                    # the network's input side (the stored side may be larger)
    save: object                       # () -> None: checkpoint now (collective under DDP)


def set_up(params: dict, manifest_path: Path, checkpoint_dir: Path | None, log, rank: int, world: int,
           local_rank: int) -> Setup:
    """Data, model, optimiser and schedule, and the checkpoint to resume from (if any)."""
    model, train, optim_cfg, runtime = params["model"], params["train"], params["optim"], params["runtime"]
    manifest = read_manifest(manifest_path)
    device = rt.set_up(runtime, train["deterministic"], local_rank)
    monitor = rank == 0 and train["knn_every"] > 0  # only rank 0 evaluates the kNN monitor
    has_unlabelled = UNLABELLED in manifest["splits"]
    if train["splits"] == "unlabelled" and not has_unlabelled:
        raise UserError(f"train.splits: expected an unlabelled/ split to pretrain on, found none in "
                        f"{manifest['root']} ({manifest_path} lists {', '.join(sorted(manifest['splits']))})")
    use = {"train": ("train",), "unlabelled": (UNLABELLED,), "both": ("train", UNLABELLED)}[train["splits"]]
    use = tuple(split for split in use if split in manifest["splits"])
    wanted = set(use) | ({"train", "test"} if monitor else set())
    size, crop = stored(model)
    splits = {split: load_split(manifest, split, size, crop)  # uint8 N x 3 x S x S, mapped
              for split in ("train", "test", UNLABELLED) if split in wanted}
    parts = []
    if "train" in use:
        subset = per_class_subset(splits["train"][1], train["images_per_class"], train["seed"])
        parts.append((splits["train"][0], subset))
    if UNLABELLED in use:
        parts.append((splits[UNLABELLED][0], torch.arange(len(splits[UNLABELLED][0]))))
    budget = runtime["resident_mib"] if runtime.get("resident_mib") is not None else default_budget_mib(device)
    feed = Feed(parts, device, budget)
    n = len(feed)
    batch = min(train["batch_size"], n)
    share = ddp.share_of(batch, world)
    chunk = min(train["chunk_size"] or share, share)

    net = ddp.wrap(model_lib.build(params, train["seed"]).to(device), train["sync_bn"], device, log)
    if train["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    step_net = DistributedDataParallel(net) if world > 1 else net
    step_net = torch.compile(step_net) if train["compile"] else step_net
    optimizer = optim_lib.build(net, optim_cfg, batch)
    peak = optim_lib.peak_lr(optim_cfg, batch)  # scaled by the global batch
    per_epoch = steps_per_epoch(n, batch)
    gen = torch.Generator(device=device).manual_seed(train["seed"])  # data order: the same on every rank
    # augmentation: its own stream per rank under DDP (a single process keeps one stream for both)
    aug_gen = gen if world == 1 else torch.Generator(device=device).manual_seed(train["seed"] * 1000 + 1 + rank)
    whole = "train" not in use or len(parts[0][1]) == len(splits["train"][1])
    log(f"pretrain: {n} images ({' + '.join(use)}{'' if whole else ', train.images_per_class'}; "
        f"{'resident on' if feed.resident else 'streamed to'} {device}, {feed.nbytes / 2**20:.0f} MiB), "
        f"batch {batch} ({world} x {share}, chunk {chunk}, {train['accumulate']}), "
        f"{per_epoch} steps/epoch x {train['epochs']} epochs, peak lr {peak:.4g}, device {device}")

    fp = fingerprint({k: v for k, v in params.items() if k != "runtime"}, manifest, world)
    ckpts = Checkpoints(Path(checkpoint_dir) if checkpoint_dir is not None
                        else cache_dir() / "checkpoints" / fp[:16])
    if rank == 0:
        ckpts.lock()  # one process at a time writes a run's checkpoints
    run = RunState()
    saved = ckpts.load(fp, log) if runtime["resume"] == "auto" else None
    if saved is not None:
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        run = RunState.from_dict(saved["run"], device)
        restore_rng(saved["rng"][rank], gen, aug_gen)
        log(f"pretrain: resuming from epoch {run.epoch + 1}, step {run.step} ({saved['path']})")

    def save() -> None:
        rngs = ddp.all_ranks(rng_states(gen, aug_gen))  # collective: every rank calls save
        if rank == 0:
            ckpts.save(fp, run, net.state_dict(), optimizer.state_dict(), rngs)

    return Setup(net, step_net, optimizer, feed, batch, share, chunk, per_epoch, per_epoch * train["epochs"],
                 round(optim_cfg["warmup_epochs"] * per_epoch), peak, gen, view_maker(params, aug_gen), fp, ckpts,
                 run, splits, monitor, device, manifest["content_hash"], model["input_size"], save)


def train_epochs(s: Setup, train: dict, runtime: dict, live, log, rank: int) -> None:
    """The schedule from s.run's position to the last epoch: steps, the per-epoch row, checkpoints."""
    run, n = s.run, len(s.feed)
    pending: list[torch.Tensor] = []  # this epoch's losses not yet read back (0-dim, on the device)
    s.net.train()
    with stop_on_signals() as caught:
        while run.epoch < train["epochs"]:
            start, first = time.perf_counter(), run.batch
            if run.order is None:
                run.order = torch.randperm(n, generator=s.gen, device=s.device)
            lr = optim_lib.lr_at(max(run.step - 1, 0), s.total, s.warmup, s.peak)  # for the log if no step is left
            order = run.order if s.feed.resident else run.order.cpu()  # streamed: gathered on the host
            batches = s.feed.batches(order[i * s.batch:(i + 1) * s.batch][rank * s.share:(rank + 1) * s.share]
                                     for i in range(first, s.per_epoch))
            for i in progress(range(first, s.per_epoch), s.per_epoch - first,
                              f"epoch {run.epoch + 1}/{train['epochs']}", log, enabled=rank == 0):
                lr = optim_lib.lr_at(run.step, s.total, s.warmup, s.peak)
                pending.append(train_step(s.step_net, s.optimizer, next(batches), lr, train, s.chunk, s.views))
                run.step, run.batch = run.step + 1, i + 1
                if len(pending) == READ_LOSS_EVERY:
                    read_losses(pending, run, s.per_epoch, s.ckpts)
                if ddp.any_rank(bool(caught), s.device):
                    read_losses(pending, run, s.per_epoch, s.ckpts)
                    s.save()
                    signum = caught[0] if caught else signal.SIGTERM
                    raise Interrupted(signum, f"pretrain: stopped by {signal.Signals(signum).name} at epoch "
                                      f"{run.epoch + 1}, step {run.step}; checkpoint written to {s.ckpts.last}; "
                                      "run the same command again to resume")
            read_losses(pending, run, s.per_epoch, s.ckpts)
            seconds = time.perf_counter() - start
            row = {"epoch": run.epoch + 1, "loss": sum(run.losses) / len(run.losses), "lr": lr,
                   "epoch_time_s": round(seconds, 3),
                   "views_per_s": round(2 * s.batch * (s.per_epoch - first) / seconds, 1),
                   "gpu_peak_mib": round(torch.cuda.max_memory_allocated(s.device) / 2**20, 1)
                   if s.device.type == "cuda" else 0.0,
                   "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            if s.monitor and ((run.epoch + 1) % train["knn_every"] == 0 or run.epoch + 1 == train["epochs"]):
                row["knn_top1"] = round(monitor_knn(s.net, s.splits, s.device, train["precision"],
                                                    train["channels_last"], s.input_size), 6)
            run.rows.append(row)
            log(f"epoch {row['epoch']}/{train['epochs']}: loss {row['loss']:.4f}, lr {lr:.4g}, {seconds:.1f}s"
                + (f", kNN top-1 {row['knn_top1']:.4f}" if "knn_top1" in row else ""))
            if live is not None:
                log_epoch(live, row)
            run.next_epoch()
            if runtime["checkpoint_every"] and run.epoch % runtime["checkpoint_every"] == 0:
                s.save()


def _pretrain(params, manifest_path, model_path, live_dir, checkpoint_dir, log, rank, world, local_rank):
    # train.precision auto is resolved once: the run's fingerprint and the model file hold what ran
    params = rt.with_precision(params, "train", rt.pick_device(params["runtime"]["device"], local_rank), log)
    s = set_up(params, manifest_path, checkpoint_dir, log, rank, world, local_rank)
    try:
        live = open_live(live_dir, s.run.rows) if rank == 0 else None
        train_epochs(s, params["train"], params["runtime"], live, log, rank)
        if rank == 0:
            live.end()
            io.save_torch(model_path, {
                "model": {k: v.cpu() for k, v in s.net.state_dict().items()},
                "params": {k: v for k, v in params.items() if k != "runtime"},
                "manifest_hash": s.manifest_hash,
            })
    finally:
        s.feed.close()
        s.ckpts.unlock()
    return s.run.rows[-1]
