"""Confidence-adaptive TTA on the held-out split: accuracy and images/s of no TTA, full TTA, and TTA only
for images whose plain confidence is below each ``--thresholds`` value (``predict.py --tta-threshold``).

The checkpoint's own datamodule settings rebuild its seeded validation split (the images it never trained
on); ``--data-dir`` points at the data when it moved. The model runs through ``Ensemble`` exactly as
``predict.py`` runs it (decoding excluded: the split is decoded once). Rounds alternate the settings.

    python benchmarks/adaptive_tta.py --thresholds 0.9 0.7 \
      --ckpt runs/campaigns/techniques/baseline-s0/version_0/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, add_device_argument, describe_device, synchronize

from lit_vision.data import ImageDataModule
from lit_vision.models.inference.classifier_loading import load_classifier, read_checkpoint
from lit_vision.models.inference.ensemble import Ensemble


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.7])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    add_device_argument(parser)
    args = parser.parse_args()

    hparams = dict(read_checkpoint(args.ckpt).get("datamodule_hyper_parameters") or {})
    keep = ("dataset", "val_size", "seed", "image_size")
    settings_of_the_run = {k: hparams[k] for k in keep if k in hparams}
    dm = ImageDataModule(**settings_of_the_run, data_dir=args.data_dir, eval_batch_size=args.batch_size)
    dm.prepare_data()
    dm.setup("validate")  # only the held-out loader runs here
    batches = [(x.to(args.device), y.to(args.device)) for x, y, *_ in dm.val_dataloader()]
    n = sum(len(y) for _, y in batches)
    model = load_classifier(args.ckpt).to(args.device)
    settings = {"no TTA": {}, "full TTA (6 views)": {"tta": True}}
    settings.update(
        {f"adaptive, confidence < {t}": {"tta": True, "tta_threshold": t} for t in args.thresholds}
    )
    print(f"{describe_device(args.device)}: {args.ckpt}, {n} held-out images, batch {args.batch_size}")

    results: dict[str, dict] = {name: {"rates": []} for name in settings}
    for r in range(args.rounds):
        for name, options in settings.items():
            ensemble = Ensemble([model], **options).eval()
            correct = 0
            synchronize(args.device)
            start = time.perf_counter()
            with torch.inference_mode():
                for x, y in batches:
                    correct += int((ensemble.probabilities(x).argmax(-1) == y).sum())
            synchronize(args.device)
            results[name]["rates"].append(n / (time.perf_counter() - start))
            results[name].update(accuracy=correct / n, tta_images=ensemble.tta_images)
        print(
            f"round {r}: " + "  ".join(f"{k} {v['rates'][-1]:,.0f}/s" for k, v in results.items()), flush=True
        )
    print("\n| predict | val accuracy | images with TTA | images/s (median) |")
    print("| --- | ---: | ---: | ---: |")
    for name, res in results.items():
        share = res["tta_images"] / n
        rate = statistics.median(res["rates"])
        print(f"| {name} | {100 * res['accuracy']:.2f}% | {100 * share:.0f}% | {rate:,.0f} |")


if __name__ == "__main__":
    main()
