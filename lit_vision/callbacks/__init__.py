"""Lightning callbacks of lit_vision."""

from lit_vision.callbacks.prediction_writer import CSVPredictionWriter

__all__ = ["CSVPredictionWriter"]
