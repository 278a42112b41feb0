"""Study presets: YAML files shipped in attnlab/configs/ (package data), one study each.

    list_presets()                  # ['cifar10-se', 'fashion-mnist', 'quick', 'stn-rts']
    load_preset("fashion-mnist")    # the preset as a dict, its keys checked

A preset names the dataset, the model and its settings, the seeds, the variants (attention names
or mappings, see `study.variants.make_variant`), the shared recipe (`train`: TrainConfig fields),
the capacity control, the cost settings and whether to explain. Anything else is refused.
"""
from __future__ import annotations

from pathlib import Path

from ..train.config import read_yaml_mapping

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESET = "quick"
# Preset keys and what they hold; anything else is refused with this list.
PRESET_KEYS = ("description", "dataset", "data_dir", "image_size", "model", "model_kwargs", "seeds", "baseline",
               "variants", "train", "capacity", "cost", "explain", "evidence", "workers", "notes")


def list_presets() -> list[str]:
    """Names of the YAML presets in configs/ (without .yaml), sorted."""
    if not PRESET_DIR.is_dir():
        return []
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """The preset `name` as a dict (configs/<name>.yaml), checked against PRESET_KEYS."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"preset name must be a non-empty str, got {name!r}")
    known = list_presets()
    if name not in known:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(known) or '(none found in ' + str(PRESET_DIR) + ')'}")
    path = PRESET_DIR / f"{name}.yaml"
    data = read_yaml_mapping(path, "preset")
    unknown = [k for k in data if k not in PRESET_KEYS]
    if unknown:
        raise ValueError(f"preset {path}: unknown key(s) {unknown}; accepted: {', '.join(PRESET_KEYS)}")
    data["name"] = name
    return data


__all__ = ["DEFAULT_PRESET", "PRESET_DIR", "PRESET_KEYS", "list_presets", "load_preset"]
