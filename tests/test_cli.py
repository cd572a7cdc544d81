"""The CLI end to end: fit -> test -> predict for every config file, on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONFIGS, QUIET, ROOT, TinyCli, data_args, folder_args, read_csv

from lit_vision.cli import TRICK_KEYS, main

# configs/logger/* replace the CSV logger: tested in test_wandb.py; configs/models/* replace the backbone;
# configs/trainer/* ask for GPUs / several processes: tested in test_distributed.py; configs/campaigns/* are
# lit_vision.compare files, not CLI configs: tested in test_compare.py
FRAGMENTS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "configs").glob("*/*.yaml")
    if p.parent.name not in ("logger", "models", "trainer", "campaigns", "speedrun")
)
MODEL_CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "models").glob("*.yaml"))
TRICKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "tricks").glob("*.yaml"))


def fit_test_predict(args: list[str], tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    common = [*args, *QUIET, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]
    cli = main(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    run_dir = Path(cli.trainer.log_dir)
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    fit_metrics = read_csv(run_dir / "metrics.csv")
    assert any(r["val/acc"] for r in fit_metrics) and any(r["train/loss_epoch"] for r in fit_metrics)
    assert any(r["val/acc_best"] for r in fit_metrics)

    test_cli = main(["test", *common, f"--ckpt_path={best}"])
    test_rows = read_csv(Path(test_cli.trainer.log_dir) / "metrics.csv")
    assert {"test/acc", "test/acc_top5", "test/loss"} <= set(test_rows[0])
    assert 0.0 <= float(test_rows[0]["test/acc"]) <= float(test_rows[0]["test/acc_top5"]) <= 1.0

    predict_cli = main(["predict", *common, f"--ckpt_path={best}"])
    preds = read_csv(run_dir / "predictions.csv")  # written beside the checkpoint's run
    n_test = len(predict_cli.datamodule.predict_dataloader().dataset)
    assert len(preds) == n_test and [int(r["index"]) for r in preds] == list(range(n_test))
    classes = predict_cli.model.class_names
    assert set(preds[0]) >= {"path", "target", "prediction", "confidence", *(f"prob_{c}" for c in classes)}
    probs = [float(preds[0][f"prob_{c}"]) for c in classes]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    assert float(preds[0]["confidence"]) == pytest.approx(max(probs), abs=1e-6)
    assert all(r["error"] == "" for r in preds)  # the same writer and columns as predict.py
    summary = json.loads((run_dir / "predictions.summary.json").read_text())
    correct = sum(r["prediction"] == r["target"] for r in preds)
    assert summary["images"] == summary["labelled"] == n_test and summary["accuracy"] == correct / n_test
    return run_dir, preds


@pytest.mark.parametrize("config", CONFIGS)
def test_config_fit_test_predict(config: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _, preds = fit_test_predict(["--config", str(ROOT / config), *data_args(config, request)], tmp_path)
    assert all(r["target"] for r in preds)


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_fragment_composes_with_base_config(
    fragment: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base = "configs/cifar10_compact.yaml"
    args = ["--config", str(ROOT / base), "--config", str(ROOT / fragment), *data_args(base, request)]
    cli = main([*args, *QUIET], run=False)
    fragment_cfg = yaml.safe_load((ROOT / fragment).read_text())
    for section in ("data", "model"):
        for key, value in fragment_cfg.get(section, {}).items():
            if not isinstance(value, dict):
                assert cli.config[section][key] == value  # the fragment's values win...
    for key in TRICK_KEYS:
        if key in fragment_cfg:
            assert cli.config[key].class_path == fragment_cfg[key]["class_path"]
    assert cli.config.model.optimizer.class_path == "torch.optim.SGD"  # ...and the base's others survive
    assert cli.config.model.backbone_kwargs == {"width": 1.5}
    fit_test_predict(args, tmp_path)


def test_every_backbone_has_a_model_config() -> None:
    from lit_vision.models import list_backbones

    assert {Path(c).stem for c in MODEL_CONFIGS} == set(list_backbones())


@pytest.mark.parametrize("model_config", MODEL_CONFIGS)
def test_model_config_fit_step(model_config: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One optimizer step of every backbone through the CLI, composed after the default data config."""
    base = "configs/cifar10_compact.yaml"
    model_cfg = yaml.safe_load((ROOT / model_config).read_text())["model"]
    cli = main(
        [
            "fit",
            "--config",
            str(ROOT / base),
            "--config",
            str(ROOT / model_config),
            *data_args(base, request),
            *QUIET,
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
        ]
    )
    # the model config's kwargs replace the base's (compact width 1.5 must not reach another backbone)
    assert cli.config.fit.model.backbone == model_cfg["backbone"]
    assert cli.config.fit.model.backbone_kwargs == model_cfg["backbone_kwargs"]
    if "optimizer" in model_cfg:
        assert cli.config.fit.model.optimizer.class_path == model_cfg["optimizer"]["class_path"]
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    # (train/loss_step is logged on logging steps only: every 50 steps by default)
    assert torch.isfinite(metrics["train/loss_epoch"]) and "val/acc" in metrics


def test_all_tricks_compose(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every trick file and the modern recipe at once: no trick's callback replaces another's."""
    base = "configs/cifar10_compact.yaml"
    args = ["--config", str(ROOT / base)]
    for fragment in [*TRICKS, "configs/recipes/modern.yaml"]:
        args += ["--config", str(ROOT / fragment)]
    args += [*data_args(base, request), "--trainer.precision=bf16-mixed"]
    cli = main([*args, *QUIET], run=False)
    for key, callback in TRICK_KEYS.items():
        if key == "finetuning":  # its own config (finetune_imagefolder.yaml): it needs no OneCycle schedule
            assert not any(isinstance(c, callback) for c in cli.trainer.callbacks)
            continue
        assert sum(isinstance(c, callback) for c in cli.trainer.callbacks) == 1, key
    assert cli.trainer.gradient_clip_val == 2.0
    fit_test_predict(args, tmp_path)


def test_num_classes_and_class_names_are_linked(run_cli: TinyCli) -> None:
    cli = run_cli.build()
    assert cli.model.num_classes == 3
    assert cli.model.class_names == ["class_00", "class_01", "class_02"]
    assert cli.model.backbone.fc.out_features == 3


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/cifar10_resnet18.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["backbone"] == "resnet18_cifar"
    assert printed["checkpoint"]["monitor"] == "val/acc"


def test_second_run_in_same_directory(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        *folder_args(tiny_folder),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.logger.init_args.version=fixed",
        *QUIET,
    ]
    main(args)
    main(args)  # the same run directory: config.yaml is overwritten, not an error
    assert (tmp_path / "runs" / "default" / "fixed" / "config.yaml").is_file()


def test_custom_module_backbone_by_class_path(tiny_folder: Path, tmp_path: Path) -> None:
    backbone = '{"class_path": "helpers.TinyNet", "init_args": {"num_classes": 3, "hidden": 4}}'
    fit_test_predict([f"--model.backbone={backbone}", *folder_args(tiny_folder)], tmp_path)


def test_wrong_num_classes_from_custom_module(run_cli: TinyCli) -> None:
    backbone = '{"class_path": "helpers.TinyNet", "init_args": {"num_classes": 5}}'
    with pytest.raises(ValueError, match="outputs 5 logits but num_classes=3"):
        run_cli("fit", f"--model.backbone={backbone}", "--trainer.max_epochs=1")


def test_unknown_backbone_message(run_cli: TinyCli) -> None:
    with pytest.raises(ValueError, match="Did you mean: resnet18_cifar"):
        run_cli.build("--model.backbone=resnet18_cifr")


def test_bf16_mixed_on_cpu(tiny_folder: Path, tmp_path: Path) -> None:
    args = ["--trainer.precision=bf16-mixed", *folder_args(tiny_folder), "--data.channels_last=true"]
    fit_test_predict(args, tmp_path)


EARLY_STOPPING = ["configs/tricks/early_stopping.yaml"]


def test_early_stopping_stops(run_cli: TinyCli) -> None:
    """configs/tricks/early_stopping.yaml: with a min_delta no run can beat, the first epoch is the best
    and fit ends ``patience`` validation runs later, well before max_epochs."""
    fit = run_cli(
        "fit",
        "--early_stopping.init_args.patience=2",
        "--early_stopping.init_args.min_delta=1.0",  # val/acc is a fraction: +1.0 is impossible
        "--trainer.max_epochs=8",
        "--trainer.limit_train_batches=1",
        configs=EARLY_STOPPING,
    )
    stopper = next(c for c in fit.trainer.callbacks if isinstance(c, TRICK_KEYS["early_stopping"]))
    assert stopper.monitor == "val/acc" and stopper.mode == "max"
    assert stopper.stopped_epoch == 2 and fit.trainer.current_epoch == 3
    val_rows = [r for r in fit.metrics() if r["val/acc"]]
    assert len(val_rows) == 3


def test_a_run_that_ends_before_validating_waits_and_says_so_once(run_cli: TinyCli) -> None:
    """configs/tricks/early_stopping.yaml on a run shorter than its first validation (24-batch epoch, 5
    steps): early stopping and best.ckpt wait for val/acc instead of crashing, and one warning says so."""
    with pytest.warns(UserWarning) as record:
        fit = run_cli("fit", "--data.batch_size=2", "--trainer.max_steps=5", configs=EARLY_STOPPING)
    assert fit.trainer.global_step == 5
    said = [w for w in record if "without a validation run" in str(w.message)]
    assert len(said) == 1 and "--trainer.val_check_interval" in str(said[0].message)
    assert not any("could not find the monitored key" in str(w.message) for w in record)
    assert sorted(p.name for p in fit.checkpoints.iterdir()) == ["last.ckpt"]


def test_a_misspelt_monitor_still_fails_once_validation_ran(run_cli: TinyCli) -> None:
    monitor = "--early_stopping.init_args.monitor=val/accuracy"
    with pytest.raises(RuntimeError, match="val/accuracy"):
        run_cli("fit", monitor, "--trainer.max_epochs=1", configs=EARLY_STOPPING)


def tiny_fit_args(data: Path) -> list[str]:
    """A 2-step fit that names no log directory: where it goes is what the tests below check."""
    return ["fit", *folder_args(data), "--trainer.max_steps=2", *QUIET]


def test_default_root_dir_holds_the_whole_run(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--trainer.default_root_dir moves the CSV logger (metrics, config, checkpoints) there: nothing is
    written to ./runs, which is what a user pointing the run at a bigger disk expects."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "big_disk"
    cli = main([*tiny_fit_args(tiny_folder), f"--trainer.default_root_dir={root}"])
    run_dir = Path(cli.trainer.log_dir)
    assert run_dir == root / "default" / "version_0"
    assert {"metrics.csv", "config.yaml", "hparams.yaml"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs").exists()
    # --ckpt_path last looks there too
    resumed = main([*tiny_fit_args(tiny_folder), f"--trainer.default_root_dir={root}", "--ckpt_path=last"])
    assert resumed.trainer.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")


def test_a_logger_save_dir_given_explicitly_wins_over_default_root_dir(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main([
        *tiny_fit_args(tiny_folder), f"--trainer.default_root_dir={tmp_path / 'root'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
    ])  # fmt: skip
    assert Path(cli.trainer.log_dir) == tmp_path / "logs" / "default" / "version_0"
    assert (tmp_path / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    without_root = main(tiny_fit_args(tiny_folder))  # neither given: ./runs, as before
    assert Path(without_root.trainer.log_dir) == Path("runs") / "default" / "version_0"


def test_quick_preset_composes_last(tiny_cifar10_folder: Path) -> None:
    """configs/quick.yaml after a full recipe shortens it and keeps everything else of the recipe."""
    cli = main(
        [
            f"--config={ROOT / 'configs/cifar10_resnet18.yaml'}",
            f"--config={ROOT / 'configs/quick.yaml'}",
            f"--data.data_dir={tiny_cifar10_folder}",
            "--data.val_size=20",
            *QUIET,
        ],
        run=False,
    )
    trainer = cli.trainer
    assert (trainer.max_epochs, trainer.limit_train_batches, trainer.limit_val_batches) == (2, 20, 5)
    assert trainer.logger.name == "quick"
    assert cli.config.model.backbone == "resnet18_cifar"  # the recipe itself is untouched
    assert cli.config.model.optimizer.class_path == "torch.optim.SGD"
