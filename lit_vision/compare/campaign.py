"""A campaign: base configs plus axes (backbones, techniques, activations, seeds) -> the cells to train.

A campaign file (``configs/campaigns/*.yaml``) holds the same keys as the flags of ``python -m
lit_vision.compare``::

    name: techniques                 # results/<name>/ and runs/campaigns/<name>/
    preset: techniques               # grid | architectures | techniques | activations | full
    base: [configs/cifar10_compact.yaml, configs/models/compact_cifar.yaml]
    set: {model.label_smoothing: 0.0}  # overrides for every cell (any CLI key)
    techniques: [ema, mixing, label_smoothing, cutout, fgsm]
    seeds: 3                         # seeds 0, 1, 2 (or a list)
    max_epochs: 5                    # and/or max_time (minutes of training per run)
    together: true                   # techniques preset: also all of them at once (false for alternatives)

Every cell is an ordinary ``train.py fit`` run: the base configs, the ``set`` overrides (they amend the
base), then the cell's own config fragments and overrides, which win over both: a technique that sets a key
the base pins takes effect.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_ACTIVATIONS", "PRESETS", "Campaign", "CampaignError", "Cell", "Technique"]

PRESETS = ("grid", "architectures", "techniques", "activations", "full")
#: the activations every backbone with an ``act`` argument takes (lit_vision.models.zoo.layers.ACTIVATIONS)
DEFAULT_ACTIVATIONS = ["relu", "gelu", "silu", "mish", "leaky_relu"]
#: where a technique name is looked up, in order: configs/<folder>/<name>.yaml
TECHNIQUE_FOLDERS = ("tricks", "recipes", "ablations", "augment")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.+=-]+")


class CampaignError(ValueError):
    """A campaign file or flag that cannot be turned into runs (the message says what to change)."""


@dataclass(frozen=True)
class Technique:
    """One technique: config fragments and/or overrides, composed on top of the base."""

    name: str
    configs: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Cell:
    """One configuration of the campaign, trained once per seed.

    ``id`` names its run directories (``<runs>/<campaign>/<id>-s<seed>``) and its rows in ``results.csv``;
    ``group`` is the preset part it belongs to: the summary compares cells with the baseline of their group.
    """

    id: str
    group: str
    configs: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    return list(value)


def parse_overrides(value: Any) -> dict[str, Any]:
    """``{key: value}`` or ``["key=value", ...]`` -> ``{key: value}`` (values parsed as YAML)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    out: dict[str, Any] = {}
    for item in _as_list(value):
        if not isinstance(item, str) or "=" not in item:
            raise CampaignError(f"Override {item!r} is not of the form key=value (e.g. model.lr=0.1).")
        key, raw = item.split("=", 1)
        out[key.strip().removeprefix("--")] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _cell_id(*parts: str) -> str:
    return _SAFE_ID.sub("_", "-".join(p for p in parts if p)) or "base"


@dataclass
class Campaign:
    """A parsed campaign. Paths are relative to the working directory, as for ``train.py``."""

    name: str
    base: list[str]
    preset: str = "grid"
    backbones: list[str] = field(default_factory=list)
    techniques: list[Technique] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    max_epochs: int | None = None
    max_time: float | None = None
    baseline: str | None = None
    #: techniques preset: a last cell with every technique at once (off for techniques that replace each
    #: other, such as two augmentation policies)
    together: bool = True
    config_root: Path = Path("configs")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, spec: dict[str, Any], config_root: Path = Path("configs")) -> Campaign:
        known = {
            "name", "base", "preset", "backbones", "techniques", "activations", "set", "seeds",
            "max_epochs", "max_time", "baseline", "together",
        }  # fmt: skip
        unknown = sorted(set(spec) - known)
        if unknown:
            raise CampaignError(f"Unknown campaign keys {unknown}; known keys: {sorted(known)}.")
        name = spec.get("name")
        if not name or _SAFE_ID.search(str(name)):
            raise CampaignError(f"A campaign needs a name of letters, digits, '_', '-', '.'; got {name!r}.")
        preset = spec.get("preset") or "grid"
        if preset not in PRESETS:
            raise CampaignError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        seeds = spec.get("seeds", 1)
        seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not seed_list:
            raise CampaignError("seeds must be >= 1 (a count) or a non-empty list of seeds.")
        base = [str(p) for p in _as_list(spec.get("base"))]
        if not base:
            raise CampaignError("A campaign needs at least one base config (base: [configs/....yaml]).")
        campaign = cls(
            name=str(name),
            base=base,
            preset=preset,
            backbones=[str(b) for b in _as_list(spec.get("backbones"))],
            activations=[str(a) for a in _as_list(spec.get("activations"))],
            overrides=parse_overrides(spec.get("set")),
            seeds=seed_list,
            max_epochs=None if spec.get("max_epochs") is None else int(spec["max_epochs"]),
            max_time=None if spec.get("max_time") is None else float(spec["max_time"]),
            baseline=spec.get("baseline"),
            together=bool(spec.get("together", True)),
            config_root=config_root,
        )
        campaign.techniques = [campaign._technique(t) for t in _as_list(spec.get("techniques"))]
        campaign.validate()
        return campaign

    @classmethod
    def from_file(cls, path: str | Path, **override: Any) -> Campaign:
        """Load a campaign file; ``override`` (flags) replaces its keys."""
        path = Path(path)
        if not path.is_file():
            raise CampaignError(f"No campaign file at {path}.")
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict):
            raise CampaignError(f"{path} must hold a mapping of campaign keys.")
        spec.setdefault("name", path.stem)
        spec.update({k: v for k, v in override.items() if v is not None})
        return cls.from_dict(spec)

    def _technique(self, entry: Any) -> Technique:
        """A name (``ema`` -> configs/tricks/ema.yaml), a path, or ``{name, config, set}``."""
        if isinstance(entry, dict):
            name = entry.get("name")
            if not name:
                raise CampaignError(f"Technique {entry} needs a name.")
            configs = tuple(self._config_path(c) for c in _as_list(entry.get("config")))
            overrides = tuple(parse_overrides(entry.get("set")).items())
            if not configs and not overrides:
                raise CampaignError(f"Technique {name!r} has neither a config nor overrides (set).")
            return Technique(str(name), configs, overrides)
        entry = str(entry)
        return Technique(Path(entry).stem, (self._config_path(entry),))

    def _config_path(self, name: str) -> str:
        if name.endswith((".yaml", ".yml")) or "/" in name:
            if not Path(name).is_file():
                raise CampaignError(f"No config file {name}.")
            return name
        for folder in TECHNIQUE_FOLDERS:
            candidate = self.config_root / folder / f"{name}.yaml"
            if candidate.is_file():
                return candidate.as_posix()
        looked = ", ".join(f"{self.config_root}/{f}/{name}.yaml" for f in TECHNIQUE_FOLDERS)
        raise CampaignError(f"Unknown technique {name!r}: none of {looked} exists.")

    def _backbone_config(self, name: str) -> str:
        if name.endswith((".yaml", ".yml")):
            if not Path(name).is_file():
                raise CampaignError(f"No config file {name}.")
            return name
        path = self.config_root / "models" / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in (self.config_root / "models").glob("*.yaml")))
            raise CampaignError(f"No model config {path} for backbone {name!r}; known: {known}.")
        return path.as_posix()

    def all_backbones(self) -> list[str]:
        """``backbones: all`` -> every backbone that has a ``configs/models/<name>.yaml``."""
        return sorted(p.stem for p in (self.config_root / "models").glob("*.yaml"))

    def validate(self) -> None:
        for path in self.base:
            if not Path(path).is_file():
                raise CampaignError(f"Base config {path} does not exist.")
        if self.backbones == ["all"]:
            self.backbones = self.all_backbones()
        for backbone in self.backbones:
            self._backbone_config(backbone)
        if self.activations == ["all"]:
            self.activations = list(DEFAULT_ACTIVATIONS)
        if self.max_epochs is None and self.max_time is None:
            raise CampaignError("Give the campaign a budget: max_epochs and/or max_time (minutes per run).")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise CampaignError(f"max_epochs must be >= 1, got {self.max_epochs}.")
        if self.max_time is not None and self.max_time <= 0:
            raise CampaignError(f"max_time must be > 0 minutes, got {self.max_time}.")
        need = {"architectures": "backbones", "techniques": "techniques"}
        if self.preset in need and not getattr(self, need[self.preset]):
            raise CampaignError(f"The {self.preset} preset needs a list of {need[self.preset]}.")
        if self.preset == "techniques" and len(self.backbones) > 1:
            raise CampaignError("The techniques preset runs on one backbone; give at most one.")
        ids = [cell.id for cell in self.cells()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise CampaignError(f"Cells with the same name: {duplicates}; rename the techniques.")
        if self.baseline is not None and self.baseline not in ids:
            raise CampaignError(f"baseline {self.baseline!r} is not a cell of this campaign: {ids}.")

    # ------------------------------------------------------------------ cells
    def cells(self) -> list[Cell]:
        """The cells of the preset, in run order."""
        if self.preset == "full":
            cells = self._architectures() if self.backbones else []
            cells += self._techniques() if self.techniques else []
            cells += self._activations(self.backbones[:1])
            return cells
        return {
            "grid": self._grid,
            "architectures": self._architectures,
            "techniques": self._techniques,
            "activations": lambda: self._activations(self.backbones),
        }[self.preset]()

    def _backbone_part(self, name: str) -> tuple[str, ...]:
        return (self._backbone_config(name),)

    def _grid(self) -> list[Cell]:
        """Every combination of the given axes (an empty axis contributes nothing)."""
        backbones: list[str | None] = list(self.backbones) or [None]
        techniques: list[Technique | None] = list(self.techniques) or [None]
        activations: list[str | None] = list(self.activations) or [None]
        cells = []
        for backbone, technique, act in itertools.product(backbones, techniques, activations):
            configs = self._backbone_part(backbone) if backbone else ()
            overrides: tuple[tuple[str, Any], ...] = ()
            if technique is not None:
                configs += technique.configs
                overrides += technique.overrides
            if act is not None:
                overrides += (("model.backbone_kwargs.act", act),)
            name = _cell_id(backbone or "", technique.name if technique else "", act or "")
            cells.append(Cell(name, "grid", configs, overrides))
        return cells

    def _architectures(self) -> list[Cell]:
        return [Cell(_cell_id(b), "architectures", self._backbone_part(b)) for b in self.backbones]

    def _techniques(self) -> list[Cell]:
        """A one-at-a-time ablation: baseline, each technique alone on top of it, then all together."""
        backbone = self._backbone_part(self.backbones[0]) if self.preset != "full" and self.backbones else ()
        cells = [Cell("baseline", "techniques", backbone)]
        for technique in self.techniques:
            cells.append(Cell(_cell_id(technique.name), "techniques", backbone + technique.configs,
                              technique.overrides))  # fmt: skip
        if self.together and len(self.techniques) > 1:
            configs = backbone + tuple(c for t in self.techniques for c in t.configs)
            overrides = tuple(o for t in self.techniques for o in t.overrides)
            cells.append(Cell("all", "techniques", configs, overrides))
        return cells

    def _activations(self, backbones: list[str]) -> list[Cell]:
        activations = self.activations or list(DEFAULT_ACTIVATIONS)
        several = len(backbones) > 1
        cells = []
        for backbone in backbones or [None]:
            configs = self._backbone_part(backbone) if backbone else ()
            for act in activations:
                name = _cell_id(backbone if several and backbone else "", act)
                if self.preset == "full":
                    name = _cell_id("act", name)
                cells.append(Cell(name, "activations", configs, (("model.backbone_kwargs.act", act),)))
        return cells

    def baseline_of(self, group: str, cell_ids: list[str]) -> str | None:
        """The cell of ``group`` the others are compared with: ``baseline`` if it is in the group, else
        ``baseline`` for the techniques group, else the group's first cell."""
        if self.baseline in cell_ids:
            return self.baseline
        if group == "techniques" and "baseline" in cell_ids:
            return "baseline"
        return cell_ids[0] if cell_ids else None

    def to_dict(self) -> dict[str, Any]:
        """The campaign as a file would hold it (written to ``results/<name>/campaign.yaml``)."""
        techniques = []
        for t in self.techniques:
            if not t.overrides and len(t.configs) == 1 and Path(t.configs[0]).stem == t.name:
                techniques.append(t.configs[0])
            else:
                entry: dict[str, Any] = {"name": t.name}
                if t.configs:
                    entry["config"] = list(t.configs)
                if t.overrides:
                    entry["set"] = dict(t.overrides)
                techniques.append(entry)
        spec: dict[str, Any] = {
            "name": self.name,
            "preset": self.preset,
            "base": list(self.base),
            "backbones": list(self.backbones),
            "techniques": techniques,
            "activations": list(self.activations),
            "set": dict(self.overrides),
            "seeds": list(self.seeds),
            "max_epochs": self.max_epochs,
            "max_time": self.max_time,
            "baseline": self.baseline,
            **({} if self.together else {"together": False}),  # written only when off: older files lack it
        }
        return {k: v for k, v in spec.items() if v not in (None, [], {})}
