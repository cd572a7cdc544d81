"""EpochThroughput: images/s and seconds per epoch, training batches only, carried across resumes.

The callback's clock is replaced by a fake one that advances 1 s per training step and 100 s per
validation step, so the figures are exact (no wall-clock timing in unit tests).
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_vision.callbacks import EpochThroughput

BATCH, BATCHES, STEP_S, VAL_S = 4, 5, 1.0, 100.0
CLOCK = [0.0]


class Slow(L.LightningModule):
    """A linear model on a fake clock: validation takes far longer than training and must not count."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.epoch_images: list[int] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        CLOCK[0] += STEP_S
        return nn.functional.cross_entropy(self.fc(x), y)

    def validation_step(self, batch, batch_idx):
        CLOCK[0] += VAL_S

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    data = TensorDataset(torch.randn(BATCH * BATCHES, 3), torch.randint(0, 2, (BATCH * BATCHES,)))
    return DataLoader(data, batch_size=BATCH)


@pytest.fixture(autouse=True)
def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_vision.callbacks.throughput as module

    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: CLOCK[0]))


def fit(callback: EpochThroughput, epochs: int) -> list[dict[str, float]]:
    logged: list[dict[str, float]] = []

    class Keep(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("perf/")})

    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[callback, Keep()],  # Keep runs after the throughput callback has logged
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(Slow(), loader(), loader())
    return logged


def test_images_per_second_counts_training_batches_only() -> None:
    logged = fit(EpochThroughput(), epochs=2)
    assert len(logged) == 2
    for epoch in logged:
        assert epoch["perf/epoch_train_s"] == BATCHES * STEP_S  # the 100 s of validation are not in it
        assert epoch["perf/train_images_per_s"] == BATCH * BATCHES / (BATCHES * STEP_S)
    assert [e["perf/train_s"] for e in logged] == [BATCHES * STEP_S, 2 * BATCHES * STEP_S]


def test_training_seconds_carry_across_a_resume() -> None:
    first = EpochThroughput()
    fit(first, epochs=1)
    assert first.state_dict() == {"train_s": BATCHES * STEP_S}
    resumed = EpochThroughput()
    resumed.load_state_dict(first.state_dict())
    logged = fit(resumed, epochs=1)
    assert logged[-1]["perf/train_s"] == 2 * BATCHES * STEP_S
