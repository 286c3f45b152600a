"""Metrics: segmentation scores, and fidelity / diversity of synthetic imagery."""
