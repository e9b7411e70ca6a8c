"""Slurm: the dev cluster, sbatch parameters, torch.distributed set-up inside jobs."""
