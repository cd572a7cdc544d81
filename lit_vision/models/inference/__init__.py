"""Inference outside a Trainer: a classifier rebuilt from a checkpoint, ensembles, test-time views and
heatmaps (used by ``predict.py``, ``report``, ``explain`` and the TTA callback)."""
