"""predict.py: any input a user has, ensembles, TTA, error rows, labelled accuracy, mismatched checkpoints."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import class_image, train_checkpoint
from PIL import Image

from lit_vision.callbacks.prediction_writer import PredictionWriter
from lit_vision.data.files import PredictDataset, collect_inputs
from lit_vision.models.inference.classifier_loading import load_classifier
from lit_vision.models.inference.ensemble import Ensemble
from lit_vision.models.inference.test_time_views import (
    TestTimeViews as TTAViews,  # not collected as a test class
)
from lit_vision.predict_images import main


@pytest.fixture(scope="module")
def trained(
    tiny_folder: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two 3-class checkpoints of the same recipe (seeds 0 and 1) on a learnable tiny ImageFolder dataset."""
    base = tmp_path_factory.mktemp("predict")
    return {
        "data": tiny_folder,
        "a": tiny_checkpoint,
        "b": train_checkpoint(tiny_folder, base / "runs", base / "cache", seed=1),
    }


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def probs_of(row: dict[str, str], classes: list[str]) -> np.ndarray:
    return np.array([float(row[f"prob_{c}"]) for c in classes])


def test_labelled_folder_csv_and_accuracy(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    summary = main(["--ckpt", str(trained["a"]), str(trained["data"] / "test"), "--out", str(out)])
    table = rows(out)
    classes = load_classifier(trained["a"]).class_names
    assert classes == ["class_00", "class_01", "class_02"]  # from the checkpoint
    assert len(table) == 18 and [int(r["index"]) for r in table] == list(range(18))
    assert list(table[0])[:6] == ["index", "path", "target", "prediction", "confidence", "error"]
    for r in table:
        p = probs_of(r, classes)
        assert p.sum() == pytest.approx(1.0, abs=1e-5) and float(r["confidence"]) == pytest.approx(
            p.max(), abs=1e-6
        )
        assert r["target"] == Path(r["path"]).parent.name and r["prediction"] == classes[int(p.argmax())]
    correct = sum(r["target"] == r["prediction"] for r in table)
    assert summary["labelled"] == 18 and summary["accuracy"] == pytest.approx(correct / 18)
    assert summary["accuracy"] > 0.6  # the task is learnable: the pipeline matches training's preprocessing
    assert json.loads(out.with_suffix(".summary.json").read_text())["accuracy"] == summary["accuracy"]


def test_any_image_a_user_might_have(trained: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    rgb = class_image(1, rng, 32)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((32, 32), 200, np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "nested" / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(np.kron(rgb, np.ones((3, 2, 1), np.uint8))).save(folder / "big.jpg", quality=95)  # 64x96
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "readme.txt").write_text("not an image: listed with an error")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: skipped
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): stored sideways
    upright = class_image(2, rng, 32)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright, k=1).copy()).save(folder / "exif.jpg", exif=exif, quality=100)
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=100)

    out = tmp_path / "preds.csv"
    summary = main(
        ["--ckpt", str(trained["a"]), str(folder), str(tmp_path / "upright.jpg"), "--out", str(out)]
    )
    table = {Path(r["path"]).name: r for r in rows(out)}
    assert set(table) == {
        "gray.png", "rgba.png", "palette.png", "deep16.png", "big.jpg", "empty.png", "notes.jpg", "exif.jpg",
        "upright.jpg", "readme.txt",
    }  # fmt: skip
    assert summary == {**summary, "images": 10, "failed": 3, "labelled": 0, "accuracy": None}
    for bad in ("empty.png", "notes.jpg", "readme.txt"):
        assert table[bad]["error"] and table[bad]["prediction"] == "" and table[bad]["prob_class_00"] == ""
    for good in set(table) - {"empty.png", "notes.jpg", "readme.txt"}:
        assert table[good]["error"] == "" and table[good]["prediction"]
    classes = ["class_00", "class_01", "class_02"]
    # the EXIF-rotated file is predicted as the upright image (JPEG noise aside)
    np.testing.assert_allclose(
        probs_of(table["exif.jpg"], classes), probs_of(table["upright.jpg"], classes), atol=0.05
    )


def test_ensemble_is_the_mean_of_its_members(trained: dict[str, Path], tmp_path: Path) -> None:
    test_dir = str(trained["data"] / "test")
    singles = []
    for name in ("a", "b"):
        main(["--ckpt", str(trained[name]), test_dir, "--out", str(tmp_path / f"{name}.csv")])
        singles.append(rows(tmp_path / f"{name}.csv"))
    main(
        [
            "--ckpt",
            str(trained["a"]),
            "--ckpt",
            str(trained["b"]),
            test_dir,
            "--out",
            str(tmp_path / "ens.csv"),
        ]
    )
    classes = ["class_00", "class_01", "class_02"]
    for ra, rb, re_ in zip(*singles, rows(tmp_path / "ens.csv"), strict=True):
        expected = (probs_of(ra, classes) + probs_of(rb, classes)) / 2
        np.testing.assert_allclose(probs_of(re_, classes), expected, atol=2e-6)


def test_tta_is_invariant_to_a_horizontal_flip(trained: dict[str, Path]) -> None:
    """TTA's views are closed under the flip (both flips, symmetric shifts), so its answer for an image and
    for the mirrored image is the same; a plain forward pass has no such symmetry."""
    model = Ensemble([load_classifier(trained["a"])], tta=True).eval()
    images = torch.from_numpy(np.stack([class_image(i % 3, np.random.default_rng(i)) for i in range(6)]))
    images = images.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        p, p_flip = model(images), model(images.flip(-1))
        plain = Ensemble([load_classifier(trained["a"])], tta=False).eval()
        q, q_flip = plain(images), plain(images.flip(-1))
    torch.testing.assert_close(p, p_flip, atol=1e-5, rtol=0)
    assert (q - q_flip).abs().max() > 1e-4
    torch.testing.assert_close(p.sum(-1), torch.ones(6), atol=1e-5, rtol=0)


def test_main_with_tta_is_the_mean_over_the_views(trained: dict[str, Path], tmp_path: Path) -> None:
    """predict.py --tta writes the weighted mean of the views' probabilities, computed here view by view,
    and differs from a plain run."""
    test_dir = str(trained["data"] / "test")
    summary = main(["--ckpt", str(trained["a"]), test_dir, "--tta", "--out", str(tmp_path / "t.csv")])
    main(["--ckpt", str(trained["a"]), test_dir, "--out", str(tmp_path / "plain.csv")])
    assert summary["tta"] and summary["images"] == 18
    classes = ["class_00", "class_01", "class_02"]
    tta = np.stack([probs_of(r, classes) for r in rows(tmp_path / "t.csv")])
    plain = np.stack([probs_of(r, classes) for r in rows(tmp_path / "plain.csv")])

    model = load_classifier(trained["a"]).eval()
    items = collect_inputs([test_dir], model.class_names)
    images = torch.stack([PredictDataset(items, model.input_size)[i][0] for i in range(len(items))])
    x = model.normalize(images.float() / 255.0)
    with torch.no_grad():
        expected = sum(v.weight * model(v.apply(x)).softmax(-1) for v in TTAViews().views)
    np.testing.assert_allclose(tta, expected.numpy(), atol=2e-6)
    assert np.abs(tta - plain).max() > 1e-3


def test_images_are_resized_like_training(trained: dict[str, Path], tmp_path: Path) -> None:
    Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(tmp_path / "wide.png")
    items = collect_inputs([str(tmp_path / "wide.png")], ["a"])
    image, target, index, error = PredictDataset(items, 32)[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and (target, index, error) == (-1, 0, "")


def test_mismatched_checkpoints_and_inputs(
    trained: dict[str, Path], tiny_cifar10_folder: Path, tmp_path: Path, capsys
) -> None:
    state = torch.load(trained["a"], weights_only=False)
    state["hyper_parameters"]["backbone"] = "compact_cifr"
    torch.save(state, tmp_path / "renamed.ckpt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    cases = [
        (
            [str(tmp_path / "renamed.ckpt")],
            "Cannot rebuild the model of .*renamed.ckpt.*Did you mean: compact_cifar",
        ),
        ([str(tmp_path / "foreign.ckpt")], "foreign.ckpt is not a lit_vision ImageClassifier checkpoint"),
        ([str(tmp_path / "missing.ckpt")], "missing.ckpt does not exist"),
    ]
    for ckpts, message in cases:
        with pytest.raises(SystemExit):
            main([*(a for c in ckpts for a in ("--ckpt", c)), str(trained["data"] / "test")])
        assert re.search(message, capsys.readouterr().err), message
    # a labelled split of another dataset: CIFAR-10's 10 classes against a 3-class checkpoint
    with pytest.raises(SystemExit):
        main(["--ckpt", str(trained["a"]), "cifar10:test", "--data-dir", str(tiny_cifar10_folder)])
    assert "cifar10:test has 10 classes (airplane" in capsys.readouterr().err


def test_rank_parts_merge_in_input_order(tmp_path: Path) -> None:
    writer = PredictionWriter(str(tmp_path), "p.csv", item_paths=[f"img{i}" for i in range(5)])
    writer.path, writer._class_names = tmp_path / "p.csv", ["a", "b"]  # what on_predict_start sets
    # the unrepeated sampler's shards on 2 ranks: 0, 2, 4 and 1, 3
    for rank, idx in ((0, [0, 2, 4]), (1, [1, 3])):
        with open(tmp_path / f"p.rank{rank}.csv", "w", newline="") as f:
            csv.writer(f).writerows([[i, f"img{i}", "", "a", "0.9", "", "0.9", "0.1"] for i in idx])
    writer._merge(2)
    merged = rows(tmp_path / "p.csv")
    assert [r["index"] for r in merged] == ["0", "1", "2", "3", "4"] and not list(tmp_path.glob("*.rank*"))

    jsonl = PredictionWriter(str(tmp_path), "p.jsonl", file_format="jsonl")
    jsonl.path = tmp_path / "p.jsonl"
    for rank, idx in ((0, [0, 2, 4, 10]), (1, [1, 3])):  # 10 after 4: numeric order, not text order
        lines = [json.dumps({"index": i, "path": f"img{i}"}) + "\n" for i in idx]
        (tmp_path / f"p.rank{rank}.jsonl").write_text("".join(lines))
    jsonl._merge(2)
    merged_json = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["index"] for r in merged_json] == [0, 1, 2, 3, 4, 10] and not list(tmp_path.glob("*.rank*"))


def test_topk_jsonl_and_no_probs(trained: dict[str, Path], tmp_path: Path) -> None:
    """--topk K adds the K best classes (best first) beside the full probabilities; --format jsonl writes the
    same numbers as objects; --no-probs drops the per-class columns."""
    args = ["--ckpt", str(trained["a"]), str(trained["data"] / "test")]
    main([*args, "--out", str(tmp_path / "plain.csv")])
    main([*args, "--topk", "2", "--out", str(tmp_path / "top.csv")])
    main([*args, "--topk", "2", "--format", "jsonl", "--out", str(tmp_path / "top.jsonl")])
    main([*args, "--topk", "5", "--no-probs", "--out", str(tmp_path / "small.csv")])
    classes = ["class_00", "class_01", "class_02"]
    plain, top = rows(tmp_path / "plain.csv"), rows(tmp_path / "top.csv")
    records = [json.loads(line) for line in (tmp_path / "top.jsonl").read_text().splitlines()]
    assert len(plain) == len(top) == len(records) == 18
    for p, t, r in zip(plain, top, records, strict=True):
        probs = probs_of(p, classes)
        best = np.argsort(-probs)[:2]
        assert [t["top1"], t["top2"]] == [classes[i] for i in best] and t["top1"] == p["prediction"]
        assert float(t["top1_prob"]) >= float(t["top2_prob"])
        assert float(t["top2_prob"]) == pytest.approx(probs[best[1]], abs=1e-6)
        assert {k: t[k] for k in p} == p  # the columns of a plain run are unchanged
        assert r["index"] == int(p["index"]) and r["path"] == p["path"] and r["target"] == p["target"]
        assert r["prediction"] == p["prediction"] and r["error"] is None
        assert [x["class"] for x in r["topk"]] == [t["top1"], t["top2"]]
        np.testing.assert_allclose([r["probs"][c] for c in classes], probs, atol=1e-6)
    small = rows(tmp_path / "small.csv")
    assert list(small[0])[6:] == ["top1", "top1_prob", "top2", "top2_prob", "top3", "top3_prob"]  # K <= 3
    assert json.loads((tmp_path / "top.summary.json").read_text())["images"] == 18


def test_confidence_adaptive_tta(trained: dict[str, Path], tmp_path: Path) -> None:
    """--tta-threshold t: the views run only for images whose plain confidence is below t. At 1.0 the file
    is full TTA's, at 0.0 the plain prediction's; in between each row is one or the other, as decided by
    its plain confidence, and the summary counts the images that got the views."""
    args = ["--ckpt", str(trained["a"]), "--ckpt", str(trained["b"]), str(trained["data"] / "test")]

    def run(name: str, *extra: str) -> tuple[dict, np.ndarray, list[dict[str, str]]]:
        summary = main([*args, *extra, "--out", str(tmp_path / name)])
        table = rows(tmp_path / name)
        return summary, np.stack([probs_of(r, ["class_00", "class_01", "class_02"]) for r in table]), table

    _, plain, plain_rows = run("plain.csv")
    _, full, _ = run("full.csv", "--tta")
    one, at_one, _ = run("t1.csv", "--tta", "--tta-threshold", "1.0")
    zero, at_zero, _ = run("t0.csv", "--tta", "--tta-threshold", "0.0")
    np.testing.assert_array_equal(at_one, full)
    np.testing.assert_array_equal(at_zero, plain)
    assert (one["tta_images"], zero["tta_images"]) == (18, 0)
    conf = np.array([float(r["confidence"]) for r in plain_rows])
    levels = np.unique(conf)
    assert len(levels) > 1, "the test needs images of different confidence"
    middle = len(levels) // 2
    t = float(levels[middle - 1] + levels[middle]) / 2  # between two confidences: some below, some above
    mid, adaptive, _ = run("mid.csv", "--tta", "--tta-threshold", str(t))
    unsure = conf < t
    assert 0 < unsure.sum() < 18 and mid["tta_images"] == unsure.sum()
    np.testing.assert_allclose(adaptive[unsure], full[unsure], atol=1e-5)  # a smaller batch: last bits
    np.testing.assert_allclose(adaptive[~unsure], plain[~unsure], atol=1e-5)
    with pytest.raises(SystemExit):
        main([*args, "--tta-threshold", "0.5"])  # without --tta: refused


def test_precision_auto_and_cuda_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """--precision auto: fp32 off CUDA, bf16 autocast on a GPU with bf16 units, fp16 autocast on older ones;
    'gpu' is CUDA only where CUDA is there (else Apple's MPS)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    from lit_vision.apps import inference_precision, runs_on_cuda

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    assert inference_precision("auto") == inference_precision("gpu") == "32-true"
    assert not runs_on_cuda("gpu") and runs_on_cuda("cuda")
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_precision("auto") == inference_precision("gpu") == "bf16-mixed"
    assert inference_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_precision("cuda") == "16-mixed"


@pytest.mark.parametrize("cuda", [False, True])
def test_predict_picks_its_defaults_from_the_device(
    cuda: bool, trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What predict.py does with its defaults on CPU and, with the device answers faked, on CUDA (the run
    itself stays on CPU): precision, pinned batches, and the TTA chunk (one pass per batch on CUDA)."""
    import lit_vision.predict_images as app

    seen: dict[str, object] = {}
    loader, ensemble = app.DataLoader, app.Ensemble

    def spy_loader(*args, **kwargs):
        seen["pin_memory"] = kwargs["pin_memory"]
        return loader(*args, **{**kwargs, "pin_memory": False})  # nothing to pin into without CUDA

    def spy_ensemble(members, tta=False, tta_max_batch=256, **kwargs):
        seen["tta_max_batch"] = tta_max_batch
        return ensemble(members, tta=tta, tta_max_batch=tta_max_batch, **kwargs)

    monkeypatch.setattr(app, "DataLoader", spy_loader)
    monkeypatch.setattr(app, "Ensemble", spy_ensemble)
    monkeypatch.setattr(app, "runs_on_cuda", lambda accelerator: cuda)
    monkeypatch.setattr(app, "inference_precision", lambda a: "bf16-mixed" if cuda else "32-true")
    args = ["--ckpt", str(trained["a"]), str(trained["data"] / "test"), "--tta", "--batch-size", "8"]
    summary = main([*args, "--accelerator", "cpu", "--out", str(tmp_path / "p.csv")])
    assert summary["precision"] == ("bf16-mixed" if cuda else "32-true")
    assert seen == {"pin_memory": cuda, "tta_max_batch": 6 * 8 if cuda else 256}
    assert summary["accuracy"] > 0.6
    explicit = main([*args, "--precision", "32-true", "--tta-batch", "5", "--out", str(tmp_path / "e.csv")])
    assert explicit["precision"] == "32-true" and seen["tta_max_batch"] == 5


def test_safetensors_weights_round_trip(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export --format safetensors writes weights that predict.py reads (no --trust-checkpoint: nothing is
    unpickled) to the very same predictions, and a model card with the classes, metrics and config."""
    from safetensors.torch import save_file

    from lit_vision.export import main as export_main

    weights = export_main(
        ["--ckpt", str(trained["a"]), "--format", "safetensors", "--out", str(tmp_path / "m")]
    )
    assert weights == tmp_path / "m.safetensors" and weights.is_file()
    test_dir = str(trained["data"] / "test")
    main(["--ckpt", str(trained["a"]), test_dir, "--out", str(tmp_path / "ckpt.csv")])
    main(["--ckpt", str(weights), test_dir, "--out", str(tmp_path / "st.csv")])
    assert rows(tmp_path / "st.csv") == rows(tmp_path / "ckpt.csv")

    card = (tmp_path / "m.md").read_text()
    assert "class_00, class_01, class_02" in card and "32x32" in card
    assert re.search(r"best val/acc [01]\.\d+", card) and "## Training config" in card
    assert card.startswith("# compact_cifar (3 classes)") and "seed_everything: 0" in card  # the run's config

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))  # weights without our header
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path / "foreign.safetensors"), test_dir, "--out", str(tmp_path / "f.csv")])
    assert "without lit_vision's header" in capsys.readouterr().err
