"""Test-time augmentation as a callback: ``test`` and ``predict`` average the model over the views of
:class:`lit_vision.models.inference.test_time_views.TestTimeViews` (flips and translations, airbench's
TTA); validation stays a plain forward (cheap, comparable across epochs).
"""

from __future__ import annotations

import lightning as L

from lit_vision.models.inference.test_time_views import TestTimeViews, TTAView

__all__ = ["TTAView", "TestTimeAugmentation"]


class TestTimeAugmentation(TestTimeViews, L.Callback):
    """Average the model's probabilities over flipped and translated views in ``test`` and ``predict``.

    Takes :class:`~lit_vision.models.inference.test_time_views.TestTimeViews`'s arguments (``hflip``,
    ``translate``, ``translate_weight``, ``max_batch``, ``average``).
    """

    _option_prefix = "--tta.init_args."  # refused values are named as the CLI's trick key spells them

    def _install(self, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "eval_forward"):
            raise TypeError("TestTimeAugmentation needs a lit_vision ImageClassifier (eval_forward).")
        pl_module.eval_forward = lambda x: self.logits(pl_module, x)

    def _remove(self, pl_module: L.LightningModule) -> None:
        if hasattr(pl_module, "eval_forward"):
            pl_module.eval_forward = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove(pl_module)
