"""Receptive-field report for plain convolution stacks, computed from the module itself.

For layers applied one after another (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019), with kernel k, stride s, dilation d and padding p::

    k_eff = d * (k - 1) + 1             effective kernel
    r_out = r_in + (k_eff - 1) * j_in   receptive field, in input pixels
    j_out = j_in * s                    jump: input pixels between neighbouring outputs
    c_out = c_in + ((k_eff - 1) / 2 - p) * j_in   centre of the first output's field, in input pixels

The layers are the ``Conv2d``/``MaxPool2d``/``AvgPool2d`` modules in the order a forward pass runs them
(found with forward hooks), so the report is right for sequential networks such as ``compact_cifar`` or
``cnn``. Branches (residual additions, attention) are not modelled: for those the figure is the field of the
longest path only, and :func:`receptive_field` says so when the execution order reveals a branch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RFLayer", "format_receptive_field", "receptive_field"]

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _square(value: int | tuple[int, ...], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{name}: non-square {what} {value} is not supported by the receptive-field report.")
    return value[0]


@dataclass(frozen=True)
class RFLayer:
    """One row of the report (units: input pixels, except ``out_size`` in output positions)."""

    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    receptive_field: int
    jump: int
    start: float
    out_size: int


def receptive_field(model: nn.Module, input_size: int = 32) -> list[RFLayer]:
    """Per-layer kernel, stride, dilation, receptive field and jump of ``model`` on a square input.

    Args:
        model: the network; its conv and pooling layers are traced with one forward pass (eval mode, no grad).
        input_size: side of the square input.

    Returns:
        one :class:`RFLayer` per conv/pool layer, in execution order.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[nn.Module, int, int]] = []  # (module, input side, output side)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        order.append((module, inputs[0].shape[-1], output.shape[-1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _SPATIAL)]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    rows: list[RFLayer] = []
    rf, jump, start, size = 1, 1, 0.5, input_size
    branched = False
    for module, in_size, out_size in order:
        name = names.get(module, type(module).__name__)
        if in_size != size:
            branched = True  # this layer does not read the previous layer's output
        k = _square(module.kernel_size, "kernel", name)
        s = _square(module.stride, "stride", name)
        d = _square(getattr(module, "dilation", 1), "dilation", name)
        p = _square(module.padding, "padding", name)
        k_eff = d * (k - 1) + 1
        rf += (k_eff - 1) * jump
        start += ((k_eff - 1) / 2 - p) * jump
        jump *= s
        size = out_size
        rows.append(RFLayer(name, type(module).__name__, k, s, d, p, rf, jump, start, out_size))
    if branched:
        warnings.warn(
            "The network is not a plain stack (a layer reads a tensor other than the previous layer's "
            "output): "
            "the receptive field is that of the execution-order chain.",
            stacklevel=2,
        )
    return rows


def format_receptive_field(rows: list[RFLayer]) -> str:
    """The report as an aligned text table."""
    header = ("layer", "type", "k", "s", "d", "p", "rf", "jump", "start", "out")
    table = [header] + [
        (
            r.name,
            r.kind,
            r.kernel,
            r.stride,
            r.dilation,
            r.padding,
            r.receptive_field,
            r.jump,
            r.start,
            r.out_size,
        )
        for r in rows
    ]
    cells = [[str(c) for c in row] for row in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join(lines)
