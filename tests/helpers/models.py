"""A user's own model, for the tests of backbones given by class path."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """A user's own model, given to the CLI by class_path (``helpers.TinyNet``)."""

    def __init__(self, num_classes: int = 10, hidden: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
