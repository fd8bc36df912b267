"""Datasets: frozen, split versions of a project's samples, their exports and diffs."""
