"""Size and cost of a backbone: parameters and multiply-accumulates (MACs) per image.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real forward pass (convs, matmuls,
attention), so they follow the module as built; one MAC is two FLOPs. Element-wise ops (activations,
normalization) are not counted, as is customary.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass on a single (1, 3, ``input_size``, ``input_size``) image."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(1, 3, input_size, input_size, device=param.device if param is not None else "cpu")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
