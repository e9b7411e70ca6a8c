"""frugalcv: resource-constrained vision training workflows on Slurm."""

__version__ = "0.1.0"
