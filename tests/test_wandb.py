"""W&B: an offline run (no API key, no network) whose history and media can be read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from helpers import ROOT, CliRun, TinyCli, folder_args, read_wandb_records
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image

from lit_vision.cli import main
from lit_vision.loggers import WandbLogger, wandb_online_possible


@pytest.fixture
def no_wandb_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No API key anywhere (env, ~/.netrc) and no WANDB_MODE: the logger must choose offline itself."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        # setenv first so that undo removes whatever a run sets later (Lightning sets WANDB_MODE=dryrun)
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    # A run left open (a disabled-mode run is never flushed by a Trainer) would be reused by the next
    # WandbLogger in this process (Lightning reuses wandb.run); wandb also caches its settings (the mode).
    wandb.finish()
    wandb.teardown()


def history_row(record) -> dict:
    """One history record as a dict; media values arrive flattened as nested keys (key, field)."""
    row: dict = {}
    for item in record.history.item:
        value = json.loads(item.value_json)
        if item.key:
            row[item.key] = value
        else:
            node = row
            for part in item.nested_key[:-1]:
                node = node.setdefault(part, {})
            node[item.nested_key[-1]] = value
    return row


def wandb_fit(run_cli: TinyCli, *overrides: str) -> CliRun:
    """A fit of the default config logged to W&B (beside the CSV logger) with the media callback."""
    configs = ["configs/cifar10_compact.yaml", "configs/logger/wandb.yaml", "configs/tricks/wandb_media.yaml"]
    return run_cli("fit", *overrides, configs=configs)


def wandb_logger(cli) -> WandbLogger:
    (logger,) = [lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    return logger


def test_offline_fallback_without_api_key(no_wandb_account: None) -> None:
    assert not wandb_online_possible()  # no key: decided without touching the network


def test_offline_run_history_media_and_config(
    no_wandb_account: None, run_cli: TinyCli, tmp_path: Path
) -> None:
    gradcam = "--wandb_media.init_args.gradcam=2"  # Grad-CAM overlays of the first 2 validation images
    cli = wandb_fit(run_cli, "--trainer.max_epochs=3", gradcam)
    logger = wandb_logger(cli)
    assert logger._offline
    logger.experiment.finish()  # flush, as the end of a `train.py fit` process does
    (run_dir,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    records = read_wandb_records(next(run_dir.glob("run-*.wandb")))

    history = [history_row(r) for r in records if r.WhichOneof("record_type") == "history"]
    val_acc = [row["val/acc"] for row in history if "val/acc" in row]
    assert len(val_acc) == 3 and all(0.0 <= a <= 1.0 for a in val_acc)  # one per epoch

    sample_rows = [row["val/samples"] for row in history if "val/samples" in row]
    assert len(sample_rows) == 3
    grid = sample_rows[-1]
    assert grid["_type"] == "images/separated" and grid["count"] == 12  # all 12 validation images
    path = run_dir / "files" / grid["filenames"][0]
    with Image.open(path) as img:
        assert img.size == (32, 32) and img.getextrema() != ((0, 0), (0, 0), (0, 0))
    assert grid["captions"][0].startswith("pred: class_0") and "/ true: class_0" in grid["captions"][0]
    assert any("val/confusion_matrix" in row for row in history)
    cams = [row["val/gradcam"] for row in history if "val/gradcam" in row]
    assert len(cams) == 3 and all(c["count"] == 2 for c in cams)  # every epoch, the same 2 images
    with Image.open(run_dir / "files" / cams[-1]["filenames"][0]) as img:
        assert img.size == (128, 128)  # the 32x32 overlay at 4x
    assert cams[-1]["captions"][0].startswith("gradcam: class_0")
    table = next(row["val/per_class"] for row in history if "val/per_class" in row)
    rows = json.loads((run_dir / "files" / table["path"]).read_text())
    assert rows["columns"] == ["class", "precision", "recall", "f1", "support"] and len(rows["data"]) == 3
    assert sum(r[4] for r in rows["data"]) == 12

    config_keys = {u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update}
    assert {"model", "data", "trainer", "wandb_media"} <= config_keys  # the resolved CLI config was sent


def test_wandb_logs_next_to_csv_and_resumes_its_run(
    no_wandb_account: None, run_cli: TinyCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV logger stays (metrics.csv, checkpoints in runs/<name>/version_N/), and a resumed fit logs to
    the W&B run of its checkpoint instead of starting a new one."""
    # before test_wandb_mode_disabled_is_respected: after a disabled run wandb keeps process-wide settings
    # that turn later runs in the same process into disabled ones
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = wandb_fit(run_cli, "--trainer.max_epochs=1")
    run_id = wandb_logger(first).version
    wandb_logger(first).experiment.finish()
    run_dir = first.run_dir  # runs/<config name>/version_0, as without W&B
    assert isinstance(first.trainer.loggers[0], CSVLogger) and run_dir.name == "version_0"
    assert run_dir.parent.parent == tmp_path / "runs"
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run_id}"))  # beside the CSV runs

    more = ["--trainer.max_epochs=2", "--model.on_schedule_change=extend", "--ckpt_path=last"]
    resumed = wandb_fit(run_cli, *more)
    assert wandb_logger(resumed).version == run_id
    wandb_logger(resumed).experiment.finish()
    assert resumed.run_dir == run_dir.parent / "version_1"
    assert (resumed.run_dir / "metrics.csv").is_file()


def test_wandb_follows_default_root_dir(
    no_wandb_account: None, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --trainer.default_root_dir and no save_dir of its own, the W&B run directory goes there too,
    beside the CSV runs, and nothing is written under the working directory."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "big_disk"
    args = [
        "fit",
        f"--config={ROOT / 'configs/logger/wandb.yaml'}",
        *folder_args(tiny_folder),
        "--trainer.max_steps=2",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
    ]
    cli = main(args)
    run_id = wandb_logger(cli).version
    wandb_logger(cli).experiment.finish()
    assert Path(cli.trainer.log_dir) == root / "default" / "version_0"
    assert list((root / "wandb").glob(f"offline-run-*-{run_id}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big_disk", "home"]  # home: the fixture's HOME


def test_wandb_mode_disabled_is_respected(
    no_wandb_account: None, run_cli: TinyCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = wandb_fit(run_cli, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    assert cli.trainer.state.finished
    assert not list((tmp_path / "runs").glob("wandb/offline-run-*"))


def test_log_model_offline_is_dropped_with_a_warning(no_wandb_account: None, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="log_model=True needs an online run"):
        logger = WandbLogger(save_dir=str(tmp_path), log_model=True)
    assert logger._offline and not logger._log_model


def test_only_rank_zero_probes_the_network(
    no_wandb_account: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[int] = []
    monkeypatch.setattr("lit_vision.loggers.wandb_online_possible", lambda: probes.append(1) or False)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    WandbLogger(save_dir=str(tmp_path))
    assert probes == []
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    WandbLogger(save_dir=str(tmp_path))
    assert probes == [1]


def test_a_key_and_an_unreachable_server_means_offline(
    no_wandb_account: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an API key the probe decides: a refused connection (what an unreachable host gives) means
    offline, a connection means online; it connects to WANDB_BASE_URL's host and port."""
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org:8443")
    tried: list[tuple[str, int]] = []

    def refused(address, timeout=None):
        tried.append(address)
        raise ConnectionRefusedError("unreachable")

    monkeypatch.setattr("lit_vision.loggers.socket.create_connection", refused)
    assert not wandb_online_possible()
    assert tried == [("wandb.example.org", 8443)]
    logger = WandbLogger(save_dir=str(tmp_path))
    assert logger._offline  # the run goes on offline instead of hanging or failing

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(
        "lit_vision.loggers.socket.create_connection", lambda address, timeout=None: Connection()
    )
    assert wandb_online_possible()


@pytest.mark.parametrize(("mode", "offline"), [("offline", True), ("dryrun", True), ("online", False)])
def test_wandb_mode_decides_without_a_probe(
    no_wandb_account: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, offline: bool
) -> None:
    probes: list[int] = []
    monkeypatch.setattr("lit_vision.loggers.wandb_online_possible", lambda: probes.append(1) or False)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert WandbLogger(save_dir=str(tmp_path))._offline is offline
    assert probes == []


def test_gradcam_media_keeps_training_gradients() -> None:
    """The callback's Grad-CAM backpropagates into the weights; the .grad training left must come back
    unchanged (None stays None), and the overlays are of the held images with one caption each."""
    import torch

    from lit_vision.callbacks import WandbMediaLogger
    from lit_vision.models import ImageClassifier

    torch.manual_seed(0)
    model = ImageClassifier("compact_cifar", num_classes=3, class_names=["a", "b", "c"]).eval()
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i)) if i % 2 else None  # what a half-accumulated step leaves
    before = [None if p.grad is None else p.grad.clone() for p in params]
    logged: dict = {}

    class Recorder:
        def log_image(self, key, images, step, caption):
            logged.update(key=key, images=images, step=step, caption=caption)

    callback = WandbMediaLogger(gradcam=3)
    with torch.inference_mode():  # as Lightning runs validation hooks
        callback._gradcam_images = [torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)]
    callback._log_gradcam(model, Recorder(), ["a", "b", "c"], step=7)
    for p, g in zip(params, before, strict=True):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    assert logged["key"] == "val/gradcam" and logged["step"] == 7 and len(logged["images"]) == 3
    assert all(c.startswith("gradcam: ") for c in logged["caption"]) and not callback._gradcam_images
    with pytest.raises(ValueError, match="gradcam_method"):
        WandbMediaLogger(gradcam=1, gradcam_method="activations")  # not one heatmap per image
