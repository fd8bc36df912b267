"""Preference data: comparison items, pairwise review, preference versions and their exports."""
