"""SimCLR (Chen et al. 2020, Appendix B.9) as a reproducible pipeline: prepare -> validate -> pretrain -> extract -> probe."""

__version__ = "0.1.0"
