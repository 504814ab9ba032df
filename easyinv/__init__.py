"""easyinv-bench: a reproducible benchmark harness for diffusion-model image inversion, and the EasyInv method."""

__version__ = "0.1.0"
