"""Discover the model zoo from the command line.

    python -m lit_vision.models list ["resnet*"]        every backbone: parameters, MACs at 32x32
    python -m lit_vision.models summary NAME [--depth 2]  per-layer table (Lightning's ModelSummary)
    python -m lit_vision.models rf NAME                   receptive-field report (plain conv stacks)

``--num-classes`` and ``--input-size`` apply to all three; ``--kwargs '{"size": "small"}'`` passes
constructor arguments (JSON) to the backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from lightning.pytorch.utilities.model_summary import ModelSummary

from lit_vision.models import ImageClassifier, create_backbone, list_backbones
from lit_vision.models.inspection.profiling import count_macs, count_params
from lit_vision.models.inspection.receptive_field import format_receptive_field, receptive_field

__all__ = ["main"]


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def zoo_table(pattern: str = "*", num_classes: int = 10, input_size: int = 32) -> str:
    """Text table of the registered backbones matching ``pattern``: parameters and MACs per image."""
    rows = [("backbone", "params", "MACs", "features")]
    for name in list_backbones(pattern):
        model = create_backbone(name, num_classes=num_classes)
        rows.append(
            (name, f"{count_params(model):,}", _human(count_macs(model, input_size)), str(model.num_features))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n\nMACs: one {input_size}x{input_size} image, {num_classes} classes."


def model_summary(
    name: str, num_classes: int = 10, input_size: int = 32, depth: int = 2, **kwargs: object
) -> str:
    """Lightning's ``ModelSummary`` of ``name`` wrapped in an ``ImageClassifier`` (with in/out shapes)."""
    module = ImageClassifier(backbone=name, num_classes=num_classes, backbone_kwargs=dict(kwargs))
    module.example_input_array = torch.zeros(1, 3, input_size, input_size)  # enables the shape columns
    return str(ModelSummary(module, max_depth=depth))


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lit_vision.models``."""
    parser = argparse.ArgumentParser(prog="python -m lit_vision.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=32, help="side of the square input (pixels)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="every backbone with parameters and MACs")
    p_list.add_argument("pattern", nargs="?", default="*", help='shell-style filter, e.g. "resnet*"')
    p_sum = sub.add_parser("summary", help="per-layer table of one backbone")
    p_sum.add_argument("name")
    p_sum.add_argument("--depth", type=int, default=2, help="module nesting depth shown")
    p_sum.add_argument("--kwargs", type=json.loads, default={}, help="backbone arguments as JSON")
    p_rf = sub.add_parser("rf", help="receptive-field report of one backbone")
    p_rf.add_argument("name")
    p_rf.add_argument("--kwargs", type=json.loads, default={}, help="backbone arguments as JSON")
    ns = parser.parse_args(args)

    try:
        if ns.command == "list":
            print(zoo_table(ns.pattern, ns.num_classes, ns.input_size))
        elif ns.command == "summary":
            print(model_summary(ns.name, ns.num_classes, ns.input_size, ns.depth, **ns.kwargs))
        else:
            model = create_backbone(ns.name, num_classes=ns.num_classes, **ns.kwargs)
            print(format_receptive_field(receptive_field(model, ns.input_size)))
    except ValueError as err:  # unknown backbone (with close names), bad kwargs
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
