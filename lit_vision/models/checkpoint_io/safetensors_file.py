"""Weights to share: a ``.safetensors`` file and a model card, written from a checkpoint and read back.

``safetensors`` stores tensors and a header of strings, and nothing else: opening a file runs no code, so a
weights file from anyone loads without ``--trust-checkpoint``. What rebuilding the model needs besides the
tensors (backbone, classes, input size, normalization buffers are tensors already) goes into the header as
JSON, so the one file is enough for ``predict.py --ckpt model.safetensors``. The model card
(``<stem>.md``) is for people: classes, input contract, the run's metrics and its training config.

    python -m lit_vision.export --ckpt runs/x/version_0/checkpoints/best.ckpt --format safetensors
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "config_beside", "read_weights", "run_metrics", "write_model_card", "write_weights"]

#: the header's ``format`` value: marks a file this module wrote
FORMAT = "lit_vision.weights/1"


def run_metrics(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint says about its run: epoch, optimizer steps and, per ModelCheckpoint that
    monitored something, the best score (``{"best val/acc": 0.87, ...}``)."""
    metrics: dict[str, Any] = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}
    for state in (checkpoint.get("callbacks") or {}).values():
        if not isinstance(state, dict):
            continue
        monitor, best = state.get("monitor"), state.get("best_model_score")
        if monitor and best is not None:
            metrics[f"best {monitor}"] = round(float(best), 6)
    return metrics


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError as err:
        raise ValueError(
            f"The checkpoint's {what} cannot be written as JSON ({err}); a safetensors file holds only "
            "tensors and text. Keep sharing the .ckpt itself."
        ) from None


def write_weights(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint``'s ``state_dict`` and what rebuilds its model (hyperparameters, input size) and
    its run metrics to ``path`` (a ``.safetensors`` file)."""
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage (tied weights); each is written once per key
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in checkpoint["state_dict"].items()}
    metadata = {
        "format": FORMAT,
        "hyper_parameters": _json(dict(checkpoint.get("hyper_parameters") or {}), "hyperparameters"),
        "lit_vision": _json(checkpoint.get("lit_vision") or {}, "lit_vision entry"),
        "metrics": _json(run_metrics(checkpoint), "metrics"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    """A ``.safetensors`` file of :func:`write_weights` as a checkpoint dict (``state_dict``,
    ``hyper_parameters``, ``lit_vision``, ``metrics``) that ``load_classifier`` rebuilds a model from.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, or one without lit_vision's header (weights alone cannot
            rebuild a model: the message says how to load them into one built by hand).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file without lit_vision's header (written elsewhere): it holds weights "
            "but not the model they belong to. Build the model in Python and use "
            "model.load_state_dict(safetensors.torch.load_file(path)), or export the weights with "
            "python -m lit_vision.export --format safetensors."
        )
    return {
        "state_dict": state_dict,
        "hyper_parameters": json.loads(metadata["hyper_parameters"]),
        "lit_vision": json.loads(metadata.get("lit_vision", "{}")),
        "metrics": json.loads(metadata.get("metrics", "{}")),
    }


def write_model_card(
    path: str | Path,
    weights: Path,
    checkpoint: dict[str, Any],
    class_names: list[str],
    input_size: int,
    mean: list[float],
    std: list[float],
    source: str | Path,
    config: str | None = None,
) -> Path:
    """A Markdown model card beside ``weights``: what the model predicts, what it takes, how it did, how to
    use it, and the training config (``config``: the run's ``config.yaml`` text, when there is one)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    backbone = hparams.get("backbone")
    name = backbone if isinstance(backbone, str) else (backbone or {}).get("class_path", "custom backbone")
    n_params = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("backbone."))
    metrics = run_metrics(checkpoint)
    shown = ", ".join(class_names[:20]) + (
        f", ... ({len(class_names)} in all)" if len(class_names) > 20 else ""
    )
    lines = [
        f"# {name} ({len(class_names)} classes), lit_vision weights",
        "",
        f"- Weights: `{weights.name}` (safetensors: tensors and text only, loading it runs no code)",
        f"- Backbone: `{name}`, arguments `{json.dumps(hparams.get('backbone_kwargs') or {})}`, "
        f"{n_params:,} parameters",
        f"- Classes: {shown}",
        f"- Input: RGB images resized (shorter side) and centre-cropped to {input_size}x{input_size}, "
        f"scaled to [0, 1], normalized with mean {[round(m, 4) for m in mean]} and std "
        f"{[round(s, 4) for s in std]} (built into the model: `predict.py` takes image files)",
        "- Run: " + ", ".join(f"{k} {v}" for k, v in metrics.items() if v is not None),
        f"- Exported from: `{source}`",
        "",
        "## Use",
        "",
        "```bash",
        f"python predict.py --ckpt {weights.name} images/ --out predictions.csv",
        "```",
        "",
        "```python",
        "from lit_vision.models.inference.classifier_loading import load_classifier",
        "",
        f'model = load_classifier("{weights.name}")  # eval mode, on CPU',
        "```",
    ]
    if config:
        lines += ["", "## Training config", "", "```yaml", config.rstrip(), "```"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def config_beside(ckpt: str | Path) -> str | None:
    """The ``config.yaml`` of the run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), if any."""
    ckpt_dir = Path(ckpt).resolve().parent
    run_dir = ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
    config = run_dir / "config.yaml"
    return config.read_text() if config.is_file() else None
