"""Checkpoint files: reading a checkpoint safely (the one place that unpickles, and only on opt-in) and the
``.safetensors`` weights file with its model card. Building an ``ImageClassifier`` from a file lives in
``lit_vision.models.inference.classifier_loading`` (it needs the training module; these files do not)."""
