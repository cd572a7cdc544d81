"""Images/s of the batched training augmentation alone (no model): the default crop + flip against each
policy and option on top of it, on the same uint8 batches, rounds alternating between variants.

    python benchmarks/augment_throughput.py                    # real CIFAR-10 from ../shared
    python benchmarks/augment_throughput.py --synthetic        # random images, no dataset needed
    python benchmarks/augment_throughput.py --device cuda --batch-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from common import add_data_arguments, load_data, synchronize

from lit_vision.data.transforms import BatchAugment

#: variant -> BatchAugment options on top of the default crop (4 px) + flip
VARIANTS: dict[str, dict] = {
    "crop+flip": {},
    "+cutout 16": {"cutout": 16},
    "+randaugment (2 ops, magnitude 9)": {"policy": "randaugment"},
    "+trivialaugment": {"policy": "trivialaugment"},
    "+color jitter 0.4": {"color_jitter": 0.4},
    "+random erasing 0.25": {"random_erasing": 0.25},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.set_defaults(batch_size=512)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dm = load_data(args)
    images = dm.train_images(args.batch_size * args.batches).to(args.device)
    batches = images.split(args.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, options in VARIANTS.items():
            augment = BatchAugment(dm.mean, dm.std, channels_last=True, **options)
            augment(batches[0], train=True)  # warm-up (and the constants moved to the device)
            synchronize(args.device)
            start = time.perf_counter()
            for batch in batches:
                augment(batch, train=True)
            synchronize(args.device)
            rates[name].append(len(images) / (time.perf_counter() - start))
        print(f"round {r}: " + "  ".join(f"{n} {v[-1]:,.0f}" for n, v in rates.items()), flush=True)
    base = statistics.median(rates["crop+flip"])
    print(f"\n| augmentation (batch {args.batch_size}) | images/s (median of {args.rounds}) | vs crop+flip |")
    print("| --- | ---: | ---: |")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
