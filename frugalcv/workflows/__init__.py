"""Stages, the shared trainer loop and pipelines."""
