"""Inspecting backbones without training them: parameter and MAC counts, receptive fields
(``python -m lit_vision.models list|show``)."""
