"""The variants of a study: from a preset's entries (or lists of models and attentions) to
`Variant`s, and the model each one builds.

    make_variant("se", "resnet_cifar", {"depth": 20})                    # SE in every residual block
    make_variant({"name": "cbam", "attention_kwargs": {"reduction": 8}}, "resnet_cifar", {})

``none`` is the baseline (no attention). ``stn`` is the spatial transformer in front of the
backbone (``create_model(model, spatial_transformer=True)``), not an attention slot;
``non_local`` is inserted *between* residual blocks as in the non-local paper
(``nonlocal_stages``), not inside every block.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from ..attention import resolve_attention_name
from ..io.study_files import BASELINE, Variant
from ..models import create_model

# The keys a preset's variant mapping may hold.
VARIANT_KEYS = {"name", "model", "attention", "attention_kwargs", "attention_stages", "attention_position",
                "model_kwargs", "role", "matches"}


def make_variant(spec, model: str, model_kwargs: dict) -> Variant:
    """The Variant a preset entry describes: an attention name, or a mapping with a 'name' and
    any of VARIANT_KEYS (its model defaults to `model`, its model_kwargs extend `model_kwargs`).
    The name must be a safe folder name (`attnlab.io.study_files.check_variant_name`)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"a variant must be an attention name or a mapping with a 'name', got {spec!r}")
    unknown = set(spec) - VARIANT_KEYS
    if unknown:
        raise ValueError(f"variant {spec['name']!r}: unknown key(s) {sorted(unknown)}; accepted: {sorted(VARIANT_KEYS)}")
    name = spec["name"]
    out = Variant(name=name, model=spec.get("model", model), attention_stages=spec.get("attention_stages"),
                  attention_position=spec.get("attention_position"), model_kwargs=dict(model_kwargs),
                  role=spec.get("role", "attention"))
    out.model_kwargs.update(spec.get("model_kwargs") or {})
    out.attention_kwargs.update(spec.get("attention_kwargs") or {})
    attention = spec.get("attention", name)
    if attention is None or str(attention).lower() == BASELINE:
        out.role = spec.get("role", "baseline" if name == BASELINE else "attention")
    elif str(attention).lower() == "stn":
        out.model_kwargs.setdefault("spatial_transformer", True)
    elif str(attention).lower().replace("-", "_") in ("non_local", "nonlocal", "nl") and "attention" not in spec:
        # The non-local paper inserts whole blocks between residual blocks, not one per block.
        out.model_kwargs.setdefault("nonlocal_stages", [2, 3])
    else:
        out.attention = resolve_attention_name(attention)
    if "matches" in spec:
        out.matches = spec["matches"]
    return out


def variants_from_lists(models: Sequence[str], attentions: Sequence[str], model_kwargs: dict) -> list[Variant]:
    """Every attention of `attentions` (the baseline first, added when absent) on every model of
    `models`; with several models each variant is called <model>-<attention> and compared with
    its own model's baseline."""
    names = [a if a.lower() != BASELINE else BASELINE for a in attentions]
    if BASELINE not in names:
        names = [BASELINE] + names
    else:
        names = [BASELINE] + [n for n in names if n != BASELINE]
    variants = []
    for model in models:
        for name in names:
            v = make_variant(name, model, model_kwargs)
            if len(models) > 1:   # a new Variant, so that the longer name is checked too
                v = dataclasses.replace(v, name=f"{model}-{name}", baseline=f"{model}-{BASELINE}")
            variants.append(v)
    return variants


def build_variant(variant: Variant, info: dict, **overrides):
    """The (untrained) model of `variant` for data of `info` (num_classes, in_chans); `overrides`
    replace entries of its model_kwargs (e.g. width=20)."""
    kwargs = dict(variant.model_kwargs)
    kwargs.update(overrides)
    return create_model(variant.model, num_classes=info["num_classes"], in_chans=info["in_chans"],
                        attention=variant.attention, attention_kwargs=variant.attention_kwargs or None,
                        attention_stages=variant.attention_stages,
                        attention_position=variant.attention_position, **kwargs)


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["VARIANT_KEYS", "build_variant", "make_variant", "param_count", "variants_from_lists"]
