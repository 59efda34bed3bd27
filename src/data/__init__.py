"""Datasets: one loader per kind, all returning the same :class:`Dataset`."""

from src.data.dataset import TASKS, Dataset

__all__ = ["TASKS", "Dataset"]
