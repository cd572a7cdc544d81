"""Predict with a trained checkpoint: ``python predict.py --config configs/X.yaml --ckpt_path CKPT``.

Runs the CLI's ``predict`` subcommand; the CSV of predictions lands in the checkpoint's run directory.
(A checkpoint-only predictor for arbitrary image files is planned in the prediction issue.)
"""

import sys

from lit_vision.cli import run

if __name__ == "__main__":
    sys.argv.insert(1, "predict")
    run()
