"""Model-zoo table: parameters, MACs and training throughput of every registered backbone.

Throughput is forward + backward (no optimizer step) on random 32x32 images, in training mode, images per
second, median over ``--steps`` timed steps after ``--warmup`` untimed ones. One process, whatever threads
torch uses by default (``torch.get_num_threads()`` is printed). Prints a Markdown table for
docs/models.md.

    python benchmarks/zoo.py                       # every backbone, batch 128, channels_last
    python benchmarks/zoo.py --pattern "resnet*" --batch-size 64
    python benchmarks/zoo.py --device cuda --batch-size 512 --steps 20 --warmup 5 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from common import add_device_argument, describe_device, synchronize

from lit_vision.models import create_backbone, list_backbones
from lit_vision.models.inspection.profiling import count_macs, count_params


def throughput(name: str, args: argparse.Namespace) -> float:
    """Forward + backward images/s of backbone ``name`` (each step timed between device synchronizations)."""
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=10).train().to(args.device)
    x = torch.randn(args.batch_size, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = torch.nn.CrossEntropyLoss()
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    times = []
    for i in range(args.warmup + args.steps):
        synchronize(args.device)
        t0 = time.perf_counter()
        with torch.autocast(args.device, dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()  # no grad scaler: fp16 gradients may underflow, which does not change the time
        model.zero_grad(set_to_none=True)
        synchronize(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return args.batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pattern", default="*", help='shell-style filter of backbone names, e.g. "resnet*"')
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backbone")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per backbone")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    add_device_argument(parser)
    args = parser.parse_args()

    where = describe_device(args.device)
    if args.device == "cpu":
        where += f", {platform.processor() or platform.machine()}"
    print(
        f"{where}, batch {args.batch_size}, {args.precision}, channels_last={args.channels_last}, "
        f"median of {args.steps} steps\n"
    )
    device = "GPU" if args.device == "cuda" else "CPU"
    print(f"| backbone | params | MACs / image (32x32) | train images/s (fwd+bwd, {device}) |")
    print("| --- | ---: | ---: | ---: |")
    for name in list_backbones(args.pattern):
        model = create_backbone(name, num_classes=10)
        params, macs = count_params(model), count_macs(model, 32)
        ips = throughput(name, args)
        print(f"| `{name}` | {params / 1e6:.2f}M | {macs / 1e6:,.0f}M | {ips:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
