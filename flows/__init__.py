"""Prefect flows: chain the stage tasks, nothing else."""
