"""Predict from Python: load a checkpoint with ``load_classifier`` and classify a few image files.

    python examples/train_from_python.py             # writes runs/examples/model.ckpt
    python examples/predict_from_python.py           # predicts data/tiny/test with it
    python examples/predict_from_python.py --ckpt runs/cifar10_compact/version_0/checkpoints/best.ckpt \\
        --images my_photos --limit 20 --out runs/examples/my_photos.csv

Any image file works: it is decoded as the training data was (8-bit RGB, shorter side resized to the model's
input size, centre crop), scaled to [0, 1] and normalized with the training mean/std the checkpoint holds.
For whole folders, ensembles, TTA and a summary, ``predict.py`` (``lit_vision.predict_images.predict``)
does more.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from lit_vision.data.sources import IMAGE_EXTENSIONS, decode_image
from lit_vision.models.inference.classifier_loading import load_classifier


def main(argv: list[str] | None = None) -> list[tuple[str, str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=Path("runs/examples/model.ckpt"), help="checkpoint")
    parser.add_argument("--images", type=Path, default=Path("data/tiny/test"), help="image file or folder")
    parser.add_argument("--limit", type=int, default=6, help="at most this many images")
    parser.add_argument("--out", type=Path, default=Path("runs/examples/predictions.csv"), help="CSV")
    args = parser.parse_args(argv)

    model = load_classifier(args.ckpt)  # on CPU, in eval mode; refuses files that hold pickled objects
    if args.images.is_dir():
        files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = [args.images]
    files = files[:: max(1, len(files) // args.limit)][: args.limit]  # spread over the classes' folders
    pixels = [torch.from_numpy(decode_image(f, model.input_size)).permute(2, 0, 1) for f in files]
    batch = torch.stack(pixels).float() / 255.0  # uint8 (N, 3, S, S) -> [0, 1]
    with torch.no_grad():
        probs = model(model.normalize(batch)).softmax(-1)
    confidence, label = probs.max(-1)
    rows = [
        (str(f), model.class_names[i], float(c))
        for f, i, c in zip(files, label.tolist(), confidence, strict=True)
    ]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prediction", "confidence"])
        writer.writerows(rows)
    for path, name, conf in rows:
        print(f"{path}: {name} ({conf:.2f})")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
