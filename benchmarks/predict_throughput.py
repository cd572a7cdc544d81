"""predict.py throughput vs a plain ``torch.no_grad`` loop over the same model and the same images.

Both sides are timed end to end: load the checkpoint, scan the input folder, decode the same JPEG files
with the same ``PredictDataset`` and DataLoader settings, run the same model; ours adds the Trainer,
Lightning's predict loop, the ensemble wrapper and the CSV writer. The model's weights
are random (speed does not depend on them). Rounds alternate the two sides; the median ratio is reported.
Both sides run fp32 (``--precision`` picks another mode for both); on ``--device cuda`` both pin the
decoded batches and copy them without blocking, as ``predict.py`` does there.

    python benchmarks/predict_throughput.py [--images DIR] [--limit 5000] [--rounds 3]
    python benchmarks/predict_throughput.py --device cuda --precision bf16-mixed --workers 8
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import add_device_argument, describe_device, synchronize
from torch.utils.data import DataLoader

from lit_vision.data.files import PredictDataset, collect_inputs
from lit_vision.models import ImageClassifier
from lit_vision.models.inference.classifier_loading import load_classifier, save_classifier
from lit_vision.predict_images import predict

DEFAULT_IMAGES = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "train" / "airplane"
)


def write_checkpoint(path: Path, backbone: str) -> ImageClassifier:
    torch.manual_seed(0)
    model = ImageClassifier(backbone, num_classes=10, channels_last=True).eval()
    save_classifier(model, path)
    return model


def plain_loop(ckpt: Path, folder: Path, args: argparse.Namespace) -> float:
    """End to end like ``predict``: load the checkpoint, scan, decode, forward (nothing written)."""
    start = time.perf_counter()
    model = load_classifier(ckpt).to(args.device)
    dataset = PredictDataset(collect_inputs([str(folder)], model.class_names), model.input_size)
    cuda = args.device == "cuda"
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers, pin_memory=cuda
    )
    model.backbone.to(memory_format=torch.channels_last)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    with torch.no_grad(), torch.autocast(args.device, autocast or torch.float32, enabled=bool(autocast)):
        for images, *_ in loader:
            images = images.to(args.device, non_blocking=True)
            x = model.normalize(images.float() / 255.0).contiguous(memory_format=torch.channels_last)
            model(x).float().softmax(-1).cpu()  # the probabilities back on the host, as the CSV needs
    synchronize(args.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    parser.add_argument("--limit", type=int, default=5000, help="images used")
    parser.add_argument("--backbone", default="compact_cifar")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    add_device_argument(parser)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    files = sorted(args.images.glob("*"))[: args.limit]
    folder = tmp / "images"
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    ckpt = tmp / "model.ckpt"
    write_checkpoint(ckpt, args.backbone)
    n = len(files)
    print(
        f"{describe_device(args.device)}: {n} images from {args.images}, backbone {args.backbone}, "
        f"batch {args.batch_size}, {args.workers} workers, {args.precision}"
    )
    ratios = []
    for r in range(args.rounds):
        plain = plain_loop(ckpt, folder, args)
        start = time.perf_counter()
        predict(
            [ckpt],
            [str(folder)],
            tmp / "preds.csv",
            batch_size=args.batch_size,
            num_workers=args.workers,
            accelerator=args.device,
            devices=1,
            precision=args.precision,
            enable_progress_bar=False,
        )
        ours = time.perf_counter() - start
        ratios.append(plain / ours)
        rates = f"plain {n / plain:7.0f} img/s   predict.py {n / ours:7.0f} img/s"
        print(f"round {r}: {rates}   ratio {plain / ours:.3f}")
    print(f"median ratio predict.py / plain loop: {statistics.median(ratios):.3f}x (target >= 0.9x)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
