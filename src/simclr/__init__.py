"""SimCLR (Chen et al. 2020, Appendix B.9) as a reproducible pipeline: prepare -> validate -> pretrain -> extract -> probe."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from simclr import load_encoder` (simclr.encoder), imported on first use: no stage runs it."""
    if name == "load_encoder":
        import importlib

        return importlib.import_module("simclr.encoder").load_encoder
    raise AttributeError(f"module 'simclr' has no attribute {name!r}")
