"""predict.py throughput vs a plain ``torch.no_grad`` loop over the same model and the same images.

Both sides are timed end to end: load the checkpoint, scan the input folder, decode the same JPEG files
with the same ``PredictDataset`` and DataLoader settings, run the same model; ours adds the Trainer,
Lightning's predict loop, the ensemble wrapper and the CSV writer. The model's weights
are random (speed does not depend on them). Rounds alternate the two sides; the median ratio is reported.

    python benchmarks/predict_throughput.py [--images DIR] [--limit 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lit_vision.data.files import PredictDataset, collect_inputs
from lit_vision.models import ImageClassifier
from lit_vision.models.checkpoints import load_classifier, save_classifier
from lit_vision.predict import predict

DEFAULT_IMAGES = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "train" / "airplane"
)


def write_checkpoint(path: Path, backbone: str) -> ImageClassifier:
    torch.manual_seed(0)
    model = ImageClassifier(backbone, num_classes=10, channels_last=True).eval()
    save_classifier(model, path)
    return model


def plain_loop(ckpt: Path, folder: Path, batch_size: int, workers: int) -> float:
    """End to end like ``predict``: load the checkpoint, scan, decode, forward (nothing written)."""
    start = time.perf_counter()
    model = load_classifier(ckpt)
    dataset = PredictDataset(collect_inputs([str(folder)], model.class_names), model.input_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    model.backbone.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for images, *_ in loader:
            x = model.normalize(images.float() / 255.0).contiguous(memory_format=torch.channels_last)
            model(x).softmax(-1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    parser.add_argument("--limit", type=int, default=5000, help="images used")
    parser.add_argument("--backbone", default="compact_cifar")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
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
        f"{n} images from {args.images}, backbone {args.backbone}, batch {args.batch_size}, "
        f"{args.workers} workers, torch threads {torch.get_num_threads()}"
    )
    ratios = []
    for r in range(args.rounds):
        plain = plain_loop(ckpt, folder, args.batch_size, args.workers)
        start = time.perf_counter()
        predict(
            [ckpt],
            [str(folder)],
            tmp / "preds.csv",
            batch_size=args.batch_size,
            num_workers=args.workers,
            accelerator="cpu",
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
