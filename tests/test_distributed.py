"""DDP: sharding without duplicates, and a real 2-process (gloo, CPU) fit + test through ``train.py``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import QUIET, env_with_helpers, folder_args, make_imagefolder, read_csv, run_python

from lit_vision.cli import main
from lit_vision.data import ImageDataModule
from lit_vision.predict_images import main as predict_main

# the config as users run it on a machine without GPUs: sync_batchnorm is turned off there with a warning
DDP_CPU = ["--config=configs/trainer/ddp.yaml", "--trainer.devices=2"]
TRICKS = [f"--config=configs/tricks/{name}.yaml" for name in ("ema", "mixing", "fgsm")]
# what every rank must agree on (step values such as train/loss_step are each rank's own)
EPOCH_METRICS = ["train/acc", "train/loss_epoch", "val/acc", "val/loss", "val/acc_best"]
TEST_METRICS = ["test/acc", "test/acc_top5", "test/loss", "test/adv_acc"]
EPOCHS = 6  # 2 optimizer steps per epoch: enough for outputs that depend on the image


def fake_ddp(dm: ImageDataModule, rank: int, world_size: int = 2) -> None:
    """What the datamodule reads of a Trainer when it builds its samplers."""
    dm.trainer = SimpleNamespace(  # type: ignore[assignment]
        world_size=world_size,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
        distributed_sampler_kwargs={"num_replicas": world_size, "rank": rank},
    )


def sample_ids(loader: torch.utils.data.DataLoader) -> list[int]:
    ds = loader.dataset
    return [int(ds.indices[i]) for batch in loader.batch_sampler for i in batch]


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_cover_every_sample_once(tiny_folder: Path, world_size: int) -> None:
    """Train: disjoint shards, at most world_size - 1 samples dropped (no padding repeats); eval: every
    sample on exactly one rank, even when the split does not divide evenly."""
    shards: dict[str, list[list[int]]] = {"train": [], "val": [], "test": []}
    for rank in range(world_size):
        dm = ImageDataModule("imagefolder", tiny_folder, batch_size=2, val_size=13)
        dm.setup("fit")
        fake_ddp(dm, rank, world_size)
        dm.train_dataloader().sampler.set_epoch(1)
        shards["train"].append(sample_ids(dm.train_dataloader()))
        shards["val"].append(sample_ids(dm.val_dataloader()))
        shards["test"].append(sample_ids(dm.test_dataloader()))
    train_all = [i for shard in shards["train"] for i in shard]
    assert len(set(train_all)) == len(train_all), "a training sample went to two ranks"
    n_train = len(dm.split("train").indices)
    per_rank = n_train // world_size // 2 * 2  # drop_last in the sampler, then in the batch sampler
    assert all(len(shard) == per_rank for shard in shards["train"])
    assert set(train_all) <= set(dm.split("train").indices.tolist())
    for split, expected in (
        ("val", dm.split("val").indices.tolist()),
        ("test", list(range(len(dm.split("test").images)))),
    ):
        merged = sorted(i for shard in shards[split] for i in shard)
        assert merged == sorted(expected), f"{split}: every sample exactly once across ranks"


def test_single_process_order_is_a_function_of_the_epoch(tiny_folder: Path) -> None:
    """One process: every training sample once per epoch, in an order set by (seed, epoch) alone, whatever
    torch's global RNG did before (what makes a resumed epoch repeat the straight run's)."""
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=4, val_size=12)
    dm.setup("fit")
    orders = []
    for epoch, noise in ((1, 0), (1, 5), (2, 0)):
        torch.manual_seed(noise)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        orders.append(sample_ids(loader))
    assert sorted(orders[0]) == sorted(dm.split("train").indices.tolist())  # 48 images, 12 full batches
    assert orders[0] == orders[1] != orders[2]
    assert isinstance(dm.val_dataloader().sampler, torch.utils.data.SequentialSampler)


def run_train(args: list[str], tmp_path: Path) -> None:
    run_script("train.py", args, tmp_path)


def run_script(script: str, args: list[str], tmp_path: Path, expect_ok: bool = True) -> str:
    """``python <script> ARGS`` from the checkout, its output kept in ``tmp_path/train-<n>.log``; the child
    processes import ``helpers`` for the callbacks given by class path."""
    # two processes on a small CI machine: one thread each, no oversubscription
    env = {**env_with_helpers(), "OMP_NUM_THREADS": "1"}
    code, output = run_python(script, *args, env=env, timeout=600)
    log = tmp_path / f"train-{len(list(tmp_path.glob('train-*.log')))}.log"
    log.write_text(output)
    if expect_ok:
        assert code == 0, f"{script} {args[0]} failed:\n{output[-4000:]}"
    return output


def read_ranks(out: Path, stage: str) -> list[dict]:
    records = [json.loads((out / f"rank{r}-{stage}.json").read_text()) for r in range(2)]
    assert all(rec["world_size"] == 2 for rec in records)
    return records


@pytest.mark.slow  # two gloo processes training end to end
def test_two_process_ddp_fit_and_test_match_single_process(tmp_path: Path) -> None:
    """EMA + MixUp/CutMix + FGSM under 2-process DDP: ranks agree on every epoch metric, one set of
    checkpoints is written, and DDP test/validate of the best checkpoint equal single-process runs of it."""
    # 57 training images (44 after the 13 held out), 21 test images: nothing divides evenly
    data = make_imagefolder(tmp_path / "data", 3, n_train=19, n_test=7)
    out = tmp_path / "ranks"
    recorder = json.dumps([{"class_path": "helpers.RankRecorder", "init_args": {"out_dir": str(out)}}])
    common = [
        *folder_args(data, val_size=13),
        *TRICKS,
        "--ema.init_args.update_starting_at_step=0",  # a short run: average from the first step
        # a short memory, so the average (what the checkpoint holds) moves away from the initial weights,
        # whose outputs barely depend on the image: the value comparisons below then mean something
        "--ema.init_args.decay=0.5",
        "--ema.init_args.warmup=none",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.01",
        *QUIET,
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    run_train(
        [
            "fit",
            *common,
            *DDP_CPU,
            "--trainer.logger.init_args.version=ddp",
            f"--trainer.max_epochs={EPOCHS}",
            f"--trainer.callbacks={recorder}",
        ],
        tmp_path,
    )

    # ddp.yaml asks for SyncBatchNorm, which torch runs on CUDA only: on CPU it is dropped with a warning
    assert "SyncBatchNorm runs on CUDA only" in (tmp_path / "train-0.log").read_text()
    fit = read_ranks(out, "fit")
    for name in EPOCH_METRICS:
        assert fit[0]["metrics"][name] == fit[1]["metrics"][name], name
    # 44 training images: 22 per rank, 2 full batches of 8 each (the 6-image remainders are dropped)
    assert [rec["seen"]["train"] for rec in fit] == [EPOCHS * 16, EPOCHS * 16]
    assert sum(rec["seen"]["val"] for rec in fit) == EPOCHS * 13  # every held-out image once an epoch
    ckpt_dir = tmp_path / "runs" / "default" / "ddp" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.ckpt", "last.ckpt"]

    best = ckpt_dir / "best.ckpt"
    test_args = ["test", *common, f"--ckpt_path={best}"]
    run_train([*test_args, *DDP_CPU, f"--trainer.callbacks={recorder}"], tmp_path)
    ddp_test = read_ranks(out, "test")
    assert sum(rec["seen"]["test"] for rec in ddp_test) == 21  # 11 + 10: no padding duplicates

    single = main([*test_args, "--trainer.devices=1"])
    reference = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
    for name in TEST_METRICS:
        assert ddp_test[0]["metrics"][name] == ddp_test[1]["metrics"][name], name
        assert ddp_test[0]["metrics"][name] == pytest.approx(reference[name], abs=1e-6), name

    # predict.py on 2 processes: each rank writes a part, rank 0 merges them in input order
    ddp_csv, single_csv = tmp_path / "ddp.csv", tmp_path / "single.csv"
    predict_args = ["--ckpt", str(best), str(data / "test"), "--num-workers=0", "--accelerator=cpu"]
    run_script("predict.py", [*predict_args, "--devices=2", "--out", str(ddp_csv)], tmp_path)
    predict_main([*predict_args, "--devices=1", "--out", str(single_csv)])
    ddp_rows, single_rows = read_csv(ddp_csv), read_csv(single_csv)
    assert [r["index"] for r in ddp_rows] == [str(i) for i in range(21)] and not list(
        tmp_path.glob("ddp.rank*")
    )
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert (a["path"], a["target"], a["prediction"]) == (b["path"], b["target"], b["prediction"])
        assert float(a["confidence"]) == pytest.approx(float(b["confidence"]), abs=1e-5)
    # the comparison means something only if the model's outputs depend on the image far beyond 1e-5
    probs = [[float(v) for k, v in r.items() if k.startswith("prob_")] for r in single_rows]
    spread = max(max(column) - min(column) for column in zip(*probs, strict=True))
    assert spread > 1e-2, f"the checkpoint's outputs barely depend on the input (spread {spread:.1e})"

    validate_args = ["validate", *common, f"--ckpt_path={best}"]
    run_train([*validate_args, *DDP_CPU, f"--trainer.callbacks={recorder}"], tmp_path)
    ddp_val = read_ranks(out, "validate")
    assert sum(rec["seen"]["val"] for rec in ddp_val) == 13
    single_val = main([*validate_args, "--trainer.devices=1"]).trainer.callback_metrics
    for name in ("val/acc", "val/loss"):
        assert ddp_val[0]["metrics"][name] == ddp_val[1]["metrics"][name], name
        assert ddp_val[0]["metrics"][name] == pytest.approx(float(single_val[name]), abs=1e-6), name


def test_ddp_finetuning_keeps_ranks_identical_after_unfreezing(tmp_path: Path) -> None:
    """The backbone is frozen before DDP wraps the model, so DDP never reduces its gradients: after
    unfreezing, HeadFirstFinetuning averages them itself, and both processes hold the same weights."""
    data = make_imagefolder(tmp_path / "data", 3, n_train=12, n_test=None)
    out = tmp_path / "ranks"
    recorder = [{"class_path": "helpers.RankRecorder", "init_args": {"out_dir": str(out), "weights": True}}]
    run_train(
        [
            "fit",
            "--config=configs/finetune_imagefolder.yaml",
            *folder_args(data, val_size=6),
            "--data.batch_size=6",  # 30 training images: 15 per process, 2 steps an epoch
            "--model.backbone_kwargs.width=0.5",
            "--finetuning.init_args.unfreeze_backbone_at_epoch=1",
            "--trainer.max_epochs=3",
            f"--trainer.callbacks={json.dumps(recorder)}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            *DDP_CPU,
            *QUIET,
        ],
        tmp_path,
    )
    start, end = (
        [torch.load(out / f"rank{r}-weights-{when}.pt") for r in range(2)] for when in ("start", "end")
    )
    for name in start[0]:
        torch.testing.assert_close(start[0][name], start[1][name], rtol=0, atol=0)  # DDP's broadcast
        torch.testing.assert_close(end[0][name], end[1][name], rtol=0, atol=0, msg=f"ranks differ: {name}")
    moved = [
        name
        for name in start[0]
        if not name.startswith("fc.") and not torch.equal(start[0][name], end[0][name])
    ]
    assert any(n.endswith("weight") and start[0][n].ndim == 4 for n in moved), "the unfrozen convs trained"


def stopped_fit(tmp_path: Path, version: str, stop: dict) -> list[str]:
    """A 2-process fit of up to 4 epochs (30 training images: 15 per process, 2 steps an epoch) that the
    ``helpers.StopAt`` callback stops (``stop``: its init_args), logging to ``runs/default/<version>``."""
    data = make_imagefolder(tmp_path / "data", 3, n_train=12, n_test=None)
    callbacks = [{"class_path": "helpers.StopAt", "init_args": stop}]
    return [
        "fit",
        *folder_args(data, val_size=6),
        "--data.batch_size=6",
        "--trainer.max_epochs=4",
        f"--trainer.callbacks={json.dumps(callbacks)}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--trainer.logger.init_args.version={version}",
        *DDP_CPU,
        *QUIET,
    ]


def test_ddp_error_on_one_rank_exits_without_hanging(tmp_path: Path) -> None:
    """An exception in one process only: the interrupt checkpoint (a collective save) is skipped, so
    no process waits in its barrier; the run ends with an error instead of hanging until the timeout."""
    args = stopped_fit(tmp_path, "err", {"step": 2, "how": "error", "rank": 1})
    log = run_script("train.py", args, tmp_path, expect_ok=False)  # a hang fails on run_script's timeout
    assert "StopAt: error on rank 1 at step 2" in log
    assert "[rank 1]" in log and "interrupted.ckpt not written" in log
    assert not list((tmp_path / "runs").rglob("interrupted.ckpt"))


def test_ddp_sigterm_saves_the_interrupt_checkpoint(tmp_path: Path) -> None:
    """A DDP run that Lightning stops for a SIGTERM raises SIGTERMException on every rank at the same step;
    the collective save then runs on all of them, and interrupted.ckpt holds that step (the signal delivery
    itself is Lightning's and is not re-tested here: see docs/ddp-gpu.md)."""
    args = stopped_fit(tmp_path, "term", {"step": 3, "how": "sigterm_raised"})
    run_script("train.py", args, tmp_path, expect_ok=False)
    saved = tmp_path / "runs" / "default" / "term" / "checkpoints" / "interrupted.ckpt"
    assert saved.is_file()
    assert torch.load(saved, weights_only=True)["global_step"] == 3
