"""EMA callback: closed-form average, delayed start, fp32 average under bf16, checkpoints, exact resume, and
the lookahead variant of the airbench94 recipe against airbench's own loop."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TinyCli, WeightRecorder
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_vision.callbacks import EMA
from lit_vision.predict_images import main as predict_main


class Regressor(L.LightningModule):
    """Linear + BatchNorm on fixed data: deterministic, tiny, with a buffer to average."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
        self.seen_in_val: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x).float(), y.float())

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen_in_val.append(self.net[0].weight.detach().float().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loader(n: int = 32, batch: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch)  # no shuffle: deterministic


class Recorder(L.Callback):
    """Snapshots of every float parameter and buffer after each optimizer step."""

    def __init__(self) -> None:
        self.states: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        tensors = [*pl_module.parameters(), *pl_module.buffers()]
        self.states.append([t.detach().float().clone() for t in tensors if t.is_floating_point()])


def fit(tmp_path: Path, callbacks: list, max_epochs: int = 2, val: bool = False, **kw) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    model = kw.pop("model", None) or Regressor()
    ckpt_path = kw.pop("ckpt_path", None)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=max_epochs,
        callbacks=callbacks,
        limit_val_batches=1 if val else 0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )
    trainer.fit(model, loader(), loader() if val else None, ckpt_path=ckpt_path)
    return trainer


def closed_form(
    states: list[list[torch.Tensor]], decay: float, start: int, power: float | None = None
) -> list[torch.Tensor]:
    """a_start = w_start, a_t = d_n * a_{t-1} + (1 - d_n) * w_t for t > start (0-based steps), where n counts
    the updates so far and d_n = decay, or min(decay, 1 - (1 + n) ** -power) with warmup."""
    avg = [t.clone() for t in states[start]]
    for n, state in enumerate(states[start + 1 :], start=1):
        d = decay if power is None else min(decay, 1 - (1 + n) ** -power)
        avg = [d * a + (1 - d) * w for a, w in zip(avg, state, strict=True)]
    return avg


def float_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().float() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]


@pytest.mark.parametrize("start", [None, 3])
def test_average_equals_closed_form_including_bn_buffers(tmp_path: Path, start: int | None) -> None:
    rec, ema = Recorder(), EMA(decay=0.9, update_starting_at_step=start)
    trainer = fit(tmp_path, [rec, ema])
    assert len(rec.states) == trainer.global_step == 8
    expected = closed_form(rec.states, 0.9, start or 0)
    for got, want in zip(float_tensors(ema.average_module), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # After fit the model holds the average (BatchNorm running stats included).
    for got, want in zip(float_tensors(trainer.lightning_module), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # num_batches_tracked is copied, not averaged.
    assert int(ema.average_module.net[1].num_batches_tracked) == 8


@pytest.mark.parametrize("power", [2 / 3, 1.0])
def test_warmup_ramps_the_decay(tmp_path: Path, power: float) -> None:
    rec, ema = Recorder(), EMA(decay=0.6, warmup="updates", warmup_power=power, update_starting_at_step=1)
    fit(tmp_path, [rec, ema])
    expected = closed_form(rec.states, 0.6, 1, power)
    for got, want in zip(float_tensors(ema.average_module), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the first updates ramp below the cap (1 - 2**-power < 0.6): the fixed-decay average differs
    fixed = closed_form(rec.states, 0.6, 1)
    assert not torch.allclose(float_tensors(ema.average_module)[0], fixed[0], rtol=1e-4, atol=1e-5)


def test_delayed_start_never_reached_keeps_trained_weights(tmp_path: Path) -> None:
    rec, ema = Recorder(), EMA(decay=0.9, update_starting_at_step=1000)
    trainer = fit(tmp_path, [rec, ema], val=True)
    model = trainer.lightning_module
    assert not ema.has_average
    last = rec.states[-1]
    # Lightning's callback would validate with, and finally copy in, the untouched initial weights.
    torch.testing.assert_close(model.seen_in_val[-1], last[0])
    for got, want in zip(float_tensors(model), last, strict=True):
        torch.testing.assert_close(got, want)


def test_validation_uses_average_and_restores_raw_weights(tmp_path: Path) -> None:
    rec, ema = Recorder(), EMA(decay=0.5)

    class Check(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if rec.states:  # the weights training continues from are the raw ones, not the average
                torch.testing.assert_close(pl_module.net[0].weight.detach(), rec.states[-1][0])

    trainer = fit(tmp_path, [rec, ema, Check()], max_epochs=3, val=True)
    seen = trainer.lightning_module.seen_in_val
    for epoch, weight in enumerate(seen):
        steps = rec.states[: 4 * (epoch + 1)]
        torch.testing.assert_close(weight, closed_form(steps, 0.5, 0)[0], rtol=1e-5, atol=1e-6)


def test_average_stays_fp32_under_bf16_true(tmp_path: Path) -> None:
    rec, ema = Recorder(), EMA(decay=0.99)
    trainer = fit(tmp_path, [rec, ema], val=True, precision="bf16-true")
    assert trainer.lightning_module.net[0].weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in ema.average_module.parameters())
    # 1 - decay = 0.01 steps survive in fp32 (a bf16 average would round most of them away).
    expected = closed_form(rec.states, 0.99, 0)
    torch.testing.assert_close(ema.average_module.net[0].weight, expected[0], rtol=1e-5, atol=1e-6)


def test_checkpoint_holds_average_and_raw_weights(tmp_path: Path) -> None:
    rec, ema = Recorder(), EMA(decay=0.9)
    trainer = fit(tmp_path, [rec, ema])
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    expected = closed_form(rec.states, 0.9, 0)
    torch.testing.assert_close(ckpt["state_dict"]["net.0.weight"], expected[0], rtol=1e-5, atol=1e-6)
    assert "current_model_state" in ckpt and "n_averaged" in ckpt["averaging_state"]
    assert ckpt["callbacks"]["EMA"]["latest_update_step"] == 8


def test_resumed_fit_ends_with_same_weights(tmp_path: Path) -> None:
    straight = EMA(decay=0.8)
    t1 = fit(tmp_path / "a", [straight], max_epochs=4)

    # last.ckpt is written at the end of epoch 2, before fit's end copies the average into the model
    first = EMA(decay=0.8)
    fit(tmp_path / "b", [first, ModelCheckpoint(tmp_path / "ckpts", save_last=True)], max_epochs=2)
    path = tmp_path / "ckpts" / "last.ckpt"
    resumed = EMA(decay=0.8)
    t3 = fit(tmp_path / "c", [resumed], max_epochs=4, ckpt_path=str(path))

    assert t3.global_step == t1.global_step == 16
    for a, b in zip(
        float_tensors(straight.average_module), float_tensors(resumed.average_module), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for a, b in zip(float_tensors(t1.lightning_module), float_tensors(t3.lightning_module), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed.latest_update_step == straight.latest_update_step == 16


def test_cli_checkpoints_hold_the_average_and_test_and_predict_use_it(
    run_cli: TinyCli, tiny_folder: Path, tmp_path: Path
) -> None:
    """An EMA fit through train.py: best.ckpt and last.ckpt hold the average (computed here independently
    from the recorded raw weights) in state_dict and the raw weights in current_model_state; train.py test
    and predict.py evaluate the average."""
    ema = {"class_path": "lit_vision.callbacks.EMA", "init_args": {"decay": 0.7}}
    fit_run = run_cli(
        "fit", f"--ema={json.dumps(ema)}", "--trainer.max_epochs=2",
        "--trainer.callbacks=" + json.dumps([{"class_path": "helpers.WeightRecorder"}]),
    )  # fmt: skip
    states = WeightRecorder.latest.states
    assert len(states) == fit_run.trainer.global_step == 12
    ckpts = fit_run.checkpoints

    def average(steps: int) -> dict[str, torch.Tensor]:
        """a_1 = w_1, a_t = 0.7 a_{t-1} + 0.3 w_t over the first ``steps`` optimizer steps."""
        avg = dict(states[0])
        for state in states[1:steps]:
            avg = {k: 0.7 * avg[k] + 0.3 * w for k, w in state.items()}
        return avg

    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(ckpts / name, weights_only=True)
        steps = ckpt["global_step"]
        for key, want in average(steps).items():
            torch.testing.assert_close(
                ckpt["state_dict"][key], want, rtol=1e-5, atol=1e-6, msg=f"{name} {key}"
            )
            torch.testing.assert_close(
                ckpt["current_model_state"][key], states[steps - 1][key], rtol=0, atol=0
            )

    # Checkpoints holding only the independent average, or only the raw weights: test and predict.py
    # from last.ckpt agree with the first and differ from the second.
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    variants = {}
    for label, weights in (("avg", average(12)), ("raw", states[-1])):
        state = {**last, "state_dict": {**last["state_dict"], **weights}}
        for key in ("current_model_state", "averaging_state"):
            state.pop(key, None)
        state["callbacks"] = {k: v for k, v in state["callbacks"].items() if k != "EMA"}
        torch.save(state, tmp_path / f"{label}.ckpt")
        variants[label] = tmp_path / f"{label}.ckpt"

    def test_loss(ckpt: Path) -> float:
        return float(run_cli("test", f"--ckpt_path={ckpt}").trainer.callback_metrics["test/loss"])

    def probs(ckpt: Path) -> list[list[float]]:
        out = tmp_path / f"{ckpt.stem}.csv"
        predict_main(["--ckpt", str(ckpt), str(tiny_folder / "test"), "--num-workers=0", "--out", str(out)])
        with open(out, newline="") as f:
            return [[float(v) for k, v in row.items() if k.startswith("prob_")] for row in csv.DictReader(f)]

    got, avg, raw = (test_loss(p) for p in (ckpts / "last.ckpt", variants["avg"], variants["raw"]))
    assert got == pytest.approx(avg, abs=1e-6) and abs(got - raw) > 1e-3
    got, avg, raw = (torch.tensor(probs(p)) for p in (ckpts / "last.ckpt", variants["avg"], variants["raw"]))
    torch.testing.assert_close(got, avg, rtol=0, atol=2e-6)
    assert float((got - raw).abs().max()) > 1e-3


# ------------------------------------------------------------------ lookahead EMA (airbench94's recipe)
def test_lookahead_ema_is_airbenchs_loop(tmp_path: Path) -> None:
    """The callback (decay ramp over progress, every n steps from an epoch, weights reset to the average)
    against a plain re-implementation of airbench94's LookaheadState loop."""
    decay, every, from_epoch, epochs = 0.8, 2, 1, 3
    ema = EMA(decay=decay, update_every_n_steps=every, step_updates_from_epoch=from_epoch, warmup="progress",
              lookahead=True)  # fmt: skip
    trainer = fit(tmp_path, [ema], max_epochs=epochs)

    torch.manual_seed(0)
    np.random.seed(0)
    L.seed_everything(0, verbose=False)
    model = Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total, step, state = epochs * len(loader()), 0, None
    for epoch in range(epochs):
        for x, y in loader():
            opt.zero_grad()
            model.training_step((x, y), 0).backward()
            opt.step()
            step += 1
            if epoch >= from_epoch and (step - 1) % every == 0:  # Lightning's 0-based step index
                if state is None:
                    state = copy.deepcopy(model.state_dict())
                else:
                    rho = decay * (step / total) ** 3
                    for key, value in model.state_dict().items():
                        if value.is_floating_point():
                            state[key].lerp_(value, 1 - rho)
                            value.copy_(state[key])
        if state is not None:  # the epoch's end: back to the average
            model.load_state_dict(state)
    got = trainer.lightning_module.state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():  # not num_batches_tracked: airbench restores a stale count
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert math.isclose(float(ema.average_module.net[0].weight.sum()), float(got["net.0.weight"].sum()),
                        rel_tol=1e-6)  # fmt: skip
