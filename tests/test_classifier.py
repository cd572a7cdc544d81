from __future__ import annotations

import csv
import pickle
from copy import deepcopy
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier, WarmupCosineLR


def tiny_dm(root: Path, **kw) -> ImageDataModule:
    return ImageDataModule("imagefolder", root, batch_size=8, val_size=12, **kw)


def trainer(tmp_path: Path, **kw) -> L.Trainer:
    kw.setdefault("max_epochs", 3)
    return L.Trainer(
        default_root_dir=tmp_path,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kw,
    )


def test_val_acc_best_is_running_max_and_scheduler_steps_per_batch(tiny_folder: Path, tmp_path: Path) -> None:
    model = ImageClassifier(
        "compact_cifar",
        num_classes=3,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        scheduler=lambda o: WarmupCosineLR(o, total_steps=18, warmup_steps=3),
    )
    t = trainer(tmp_path)
    dm = tiny_dm(tiny_folder)
    t.fit(model, datamodule=dm)
    assert t.global_step == 18  # 3 epochs x 6 batches of 8 (48 images, last batch dropped)
    assert t.lr_scheduler_configs[0].scheduler.last_epoch == 18  # stepped once per optimizer step
    with open(Path(t.log_dir) / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["val/acc"]]
    accs = [float(r["val/acc"]) for r in rows]
    bests = [float(r["val/acc_best"]) for r in rows]
    assert len(accs) == 3
    assert bests == pytest.approx([max(accs[: i + 1]) for i in range(3)])
    # Normalization statistics travel with the checkpoint.
    torch.testing.assert_close(model.input_mean, torch.tensor(dm.mean, dtype=torch.float32))
    ckpt = torch.load(Path(t.log_dir) / "checkpoints" / "epoch=2-step=18.ckpt", weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["input_std"], torch.tensor(dm.std, dtype=torch.float32))
    assert ckpt["state_dict"]["val_acc_best.max_value"] == pytest.approx(max(accs))


def test_no_weight_decay_on_norm_and_bias() -> None:
    model = ImageClassifier("resnet18_cifar", num_classes=10)
    decay, no_decay = model.parameter_groups()
    assert no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    n_bn = sum(
        m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert sum(p.numel() for p in no_decay["params"]) == n_bn + 10  # BN affine + the head's bias
    opt = model.optimizer_factory(model.parameter_groups())
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.01)  # AdamW's default on the decayed group
    everything = ImageClassifier("compact_cifar", weight_decay_norm_and_bias=True).parameter_groups()
    assert len(everything) == 1


def test_soft_targets_train_against_dominant_label() -> None:
    torch.manual_seed(0)
    model = ImageClassifier("compact_cifar", num_classes=10, label_smoothing=0.0)
    x = torch.randn(4, 3, 32, 32)
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    soft = 0.7 * F.one_hot(a, 10) + 0.3 * F.one_hot(b, 10)
    loss = model.training_step((x, soft.float()), 0)
    logits = model(x)
    expected = 0.7 * F.cross_entropy(logits, a) + 0.3 * F.cross_entropy(logits, b)
    torch.testing.assert_close(loss, expected)
    preds = logits.argmax(-1)
    torch.testing.assert_close(model.train_acc.compute(), (preds == a).float().mean())


def test_predict_returns_probabilities() -> None:
    model = ImageClassifier("compact_cifar", num_classes=4).eval()
    probs = model.predict_step((torch.randn(3, 3, 32, 32), torch.zeros(3)), 0)
    assert probs.shape == (3, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_class_names_must_match_num_classes() -> None:
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        ImageClassifier("compact_cifar", num_classes=3, class_names=["a", "b"])


@pytest.mark.slow
def test_compile_and_channels_last_fit(tiny_folder: Path, tmp_path: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3, compile=True, channels_last=True)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(model, datamodule=tiny_dm(tiny_folder, channels_last=True))
    conv = model.backbone.stem[0][0].weight  # compiled in place: no wrapper, no _orig_mod
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(t.callback_metrics["val/loss"])
    assert not any("_orig_mod" in key for key in model.state_dict())


def _poison_batch(at: int):
    """A train-batch transform that turns batch ``at`` of every epoch into NaNs."""

    def transform(module, x, y, batch_idx):
        return (x * float("nan"), y) if batch_idx == at else (x, y)

    return transform


def test_nonfinite_loss_stops_and_keeps_checkpoints(tiny_folder: Path, tmp_path: Path) -> None:
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(
        monitor="val/acc", mode="max", filename="best", save_last=True
    )
    model = ImageClassifier("compact_cifar", num_classes=3)
    t = trainer(tmp_path, max_epochs=1, callbacks=[ckpt_cb])
    t.fit(model, datamodule=tiny_dm(tiny_folder))
    best, last = Path(ckpt_cb.best_model_path), Path(ckpt_cb.last_model_path)
    before = {p: p.read_bytes() for p in (best, last)}
    torch.load(last, weights_only=True)  # safe loading works: no pathlib objects in the hyperparameters

    model.add_train_batch_transform(_poison_batch(at=2))
    t2 = trainer(tmp_path, max_epochs=3, callbacks=[ckpt_cb])
    with pytest.raises(FloatingPointError, match=r"global step 8 \(epoch 1, batch 2 of the epoch\)"):
        t2.fit(model, datamodule=tiny_dm(tiny_folder), ckpt_path=str(last))
    assert {p: p.read_bytes() for p in (best, last)} == before  # the last good checkpoints survive


def test_nonfinite_loss_skip_steps_over_the_batch(tiny_folder: Path, tmp_path: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3, nonfinite_loss="skip")
    model.add_train_batch_transform(_poison_batch(at=2))
    t = trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="Non-finite training loss .* optimizer step skipped") as record:
        t.fit(model, datamodule=tiny_dm(tiny_folder))
    assert sum("optimizer step skipped" in str(w.message) for w in record) == 2  # batch 2 of both epochs
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN never reached the weights


def test_nonfinite_loss_option_is_validated() -> None:
    with pytest.raises(ValueError, match="nonfinite_loss"):
        ImageClassifier("compact_cifar", num_classes=3, nonfinite_loss="explode")


def test_copies_leave_callbacks_and_factories_behind() -> None:
    """EMA deep-copies the module: the copy must not drag the CLI (and its datamodule's images) along
    through the optimizer factory, nor the callbacks through their hooks."""
    big = torch.zeros(1000)

    def factory(params):  # like the CLI's, it closes over something large
        return torch.optim.SGD(params, lr=0.1 + 0 * float(big.sum()))

    model = ImageClassifier("compact_cifar", num_classes=3, optimizer=factory)
    model.add_train_batch_transform(lambda m, x, y, i: (x, y))
    model.eval_forward = model.forward
    copy = deepcopy(model)
    assert copy.optimizer_factory is None and copy._train_batch_transforms == [] and copy.eval_forward is None
    assert model.optimizer_factory is factory and len(model._train_batch_transforms) == 1  # original intact
    for a, b in zip(model.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    pickle.loads(pickle.dumps(copy))  # and a copy pickles
