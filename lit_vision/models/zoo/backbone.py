"""The interface every backbone shares (timm's convention).

``forward_features(x)`` maps images to features (a feature map or pooled vector), ``forward_head(features)``
maps those to logits, ``num_features`` is the width of the vector the head's final linear layer sees,
``get_classifier()`` is that final layer and ``reset_classifier(num_classes)`` replaces it (fine-tuning,
explain and export use these, as for timm models, instead of guessing attribute names).

Two optional hooks, for backbones whose training needs more than a forward pass (any ``nn.Module`` may
define them; :class:`~lit_vision.models.ImageClassifier` calls them):

* ``init_from_data(images)`` with ``data_init_images`` (an int): weights computed from the training data
  (airbench's patch whitening). Called once when ``fit`` starts from scratch, with that many normalized
  training images (N, 3, H, W), before the optimizer is built; not when resuming or loading pretrained
  weights (the weights come from the file then).
* ``set_epoch(epoch)``: called at the start of every training epoch (0-based, resumed runs included), e.g.
  to freeze a layer after some epochs.
"""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class for the project's own backbones.

    Subclasses set ``num_features`` and implement :meth:`forward_features` and :meth:`forward_head`; their
    classifier is the attribute named by ``classifier_attr`` (an ``nn.Linear`` or a 1x1 ``nn.Conv2d``).
    """

    num_features: int
    #: attribute holding the final classifier layer
    classifier_attr: str = "fc"

    def get_classifier(self) -> nn.Module:
        """The final layer mapping ``num_features`` to logits."""
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one for ``num_classes`` (same kind, same input
        width, same bias setting)."""
        old = self.get_classifier()
        bias = old.bias is not None
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=bias)
        elif isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
            new = nn.Conv2d(old.in_channels, num_classes, 1, bias=bias)
        else:
            raise TypeError(
                f"reset_classifier needs an nn.Linear or 1x1 nn.Conv2d head, got {type(old).__name__}"
            )
        setattr(self, self.classifier_attr, new.to(old.weight.device, old.weight.dtype))

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> features."""
        raise NotImplementedError

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Features -> logits (N, num_classes), or the pooled (N, num_features) vector if ``pre_logits``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
