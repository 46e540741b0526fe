"""The training feed: the images pretrain draws its batches from, resident on the device or streamed.

Resident (the split fits runtime.resident_mib): the chosen rows are copied to the device once and a
batch is one index into them, as before streaming existed. Streamed (it does not fit): each batch is
gathered from the memory-mapped decode cache (cache.py) into pinned memory by a background thread, one
batch ahead of the step, and copied to the device. Both give the same uint8 batch for the same indices,
so a streamed run and a resident run of the same params train the same weights (tests/test_scale.py),
and resuming is unaffected: the order is pretrain's, not the feed's.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def default_budget_mib(device: torch.device) -> float:
    """runtime.resident_mib null: half the GPU's memory, or a quarter of the host's RAM on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20 / 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / 4
    except (ValueError, OSError, AttributeError):
        return 4096.0


class Feed:
    """Rows of one or more mapped splits as one indexable set of uint8 N x 3 x S x S images.

    parts: [(images, rows)], images a (mapped) uint8 tensor, rows the int64 indices of it to use;
    row k of the feed is the k-th chosen row, parts in order."""

    def __init__(self, parts: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device, budget_mib: float):
        self.device = device
        self.parts = [(images, rows.cpu()) for images, rows in parts]
        self.sizes = [len(rows) for _, rows in self.parts]
        self.starts = np.cumsum([0] + self.sizes)
        self.shape = tuple(self.parts[0][0].shape[1:])
        self.nbytes = sum(self.sizes) * int(np.prod(self.shape))
        self.resident = self.nbytes / 2**20 <= budget_mib
        self.images = None
        if self.resident:
            self.images = torch.cat([images[rows] for images, rows in self.parts]).to(device)
        self.pin = device.type == "cuda"
        self._pool = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 batch of feed rows `index` (CPU int64), from the maps; pinned when feeding a GPU."""
        out = torch.empty((len(index), *self.shape), dtype=torch.uint8, pin_memory=self.pin)
        for k, (images, rows) in enumerate(self.parts):
            lo, hi = int(self.starts[k]), int(self.starts[k + 1])
            take = torch.nonzero((index >= lo) & (index < hi)).flatten()
            if len(take):
                src = rows[index[take] - lo].numpy()
                out[take] = torch.from_numpy(images.numpy()[src])  # reads only these rows of the map
        return out

    def batches(self, indices):
        """The device batch for each index tensor of `indices` (an iterable, consumed one ahead)."""
        if self.resident:
            for index in indices:
                yield self.images[index]
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="simclr-feed")
        it = iter(indices)
        pending = None
        first = next(it, None)
        if first is not None:
            pending = self._pool.submit(self._gather, first.cpu())
        while pending is not None:
            batch = pending.result()
            following = next(it, None)
            pending = None if following is None else self._pool.submit(self._gather, following.cpu())
            yield batch.to(self.device, non_blocking=self.pin)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
