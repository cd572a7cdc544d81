"""Train, validate, test or predict: ``python train.py fit|validate|test|predict --config configs/X.yaml``."""

from lit_vision.cli import run

if __name__ == "__main__":
    run()
