"""Model-zoo table: parameters, MACs and training throughput of every registered backbone.

Throughput is forward + backward (no optimizer step) on random 32x32 images, in training mode, images per
second, median over ``--steps`` timed steps after ``--warmup`` untimed ones. One process, whatever threads
torch uses by default (``torch.get_num_threads()`` is printed). Prints a Markdown table for the README.

    python benchmarks/zoo.py                       # every backbone, batch 128, channels_last
    python benchmarks/zoo.py --pattern "resnet*" --batch-size 64
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from lit_vision.models import create_backbone, list_backbones
from lit_vision.models.profiling import count_macs, count_params


def throughput(name: str, batch_size: int, steps: int, warmup: int, channels_last: bool) -> float:
    """Forward + backward images/s of backbone ``name``."""
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=10).train()
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss_fn(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default="*", help='shell-style filter of backbone names, e.g. "resnet*"')
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backbone")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per backbone")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = parser.parse_args()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, "
        f"batch {args.batch_size}, channels_last={args.channels_last}, median of {args.steps} steps\n"
    )
    print("| backbone | params | MACs / image (32x32) | train images/s (fwd+bwd, CPU) |")
    print("| --- | ---: | ---: | ---: |")
    for name in list_backbones(args.pattern):
        model = create_backbone(name, num_classes=10)
        params, macs = count_params(model), count_macs(model, 32)
        ips = throughput(name, args.batch_size, args.steps, args.warmup, args.channels_last)
        print(f"| `{name}` | {params / 1e6:.2f}M | {macs / 1e6:,.0f}M | {ips:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
