"""SimCLR (Chen et al. 2020, Appendix B.9) as a reproducible pipeline: prepare -> validate -> pretrain -> extract -> probe."""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while they wait collapse a CPU run as soon as anything else shares the cores
# (measured: 2 threads, one other busy process: 360 images/s spinning, 683 passive, against 1,369 on a
# quiet machine; passive costs 7% when quiet). So passive waiting unless the user chose a policy. It
# must be set before torch's OpenMP runtime starts: here, before any stage imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    """`from simclr import load_encoder` (simclr.encoder), imported on first use: no stage runs it."""
    if name == "load_encoder":
        import importlib

        return importlib.import_module("simclr.encoder").load_encoder
    raise AttributeError(f"module 'simclr' has no attribute {name!r}")
