"""Lightning callbacks of lit_vision: each one a YAML switch (see ``lit_vision.cli``)."""

from lit_vision.callbacks.adversarial import FGSM, fgsm_perturb
from lit_vision.callbacks.checkpoint import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    InterruptCheckpoint,
    LastCheckpoint,
    SafeModelCheckpoint,
)
from lit_vision.callbacks.early_stopping import EarlyStopping
from lit_vision.callbacks.ema import EMA
from lit_vision.callbacks.finetuning import HeadFirstFinetuning
from lit_vision.callbacks.mixing import MixUpCutMix
from lit_vision.callbacks.prediction_writer import PredictionWriter
from lit_vision.callbacks.progress_bar import RichProgressBar, TQDMProgressBar
from lit_vision.callbacks.throughput import EpochThroughput
from lit_vision.callbacks.tta import TestTimeAugmentation, TTAView
from lit_vision.callbacks.wandb_media import WandbMediaLogger

__all__ = [
    "EMA",
    "FGSM",
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "EarlyStopping",
    "EpochThroughput",
    "HeadFirstFinetuning",
    "InterruptCheckpoint",
    "LastCheckpoint",
    "MixUpCutMix",
    "PredictionWriter",
    "RichProgressBar",
    "SafeModelCheckpoint",
    "TQDMProgressBar",
    "TTAView",
    "TestTimeAugmentation",
    "WandbMediaLogger",
    "fgsm_perturb",
]
