"""Capacity control: the baseline made wider until it has an attention variant's parameter count,
so that a study separates the gain of attention from the gain of size.

    width, params = match_width(baseline, target_params, info)      # e.g. (18, 112_394)

The preset's ``capacity`` entry ({match: largest | <variant>, kwarg: width}) trains that wider
baseline as one more variant (role ``capacity``); for every attention variant the width that
would match is also recorded in costs.json (``matched_width``), trained or not.
"""
from __future__ import annotations

import copy
from typing import Optional

from ..io.study_files import BASELINE, StudyPlan, Variant
from .variants import build_variant, param_count


def match_width(baseline: Variant, target_params: int, info: dict, kwarg: str = "width", base: Optional[int] = None,
                max_factor: float = 4.0) -> tuple[int, int]:
    """(width, params): the integer value of `kwarg` for which the baseline's parameter count is
    closest to `target_params`, searched upward from `base` (the baseline's own width)."""
    if base is None:
        base = baseline.model_kwargs.get(kwarg)
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ValueError(f"capacity control needs the baseline's integer {kwarg!r} in model_kwargs, got {base!r}")
    best = (base, param_count(build_variant(baseline, info, **{kwarg: base})))
    width = base
    while width < base * max_factor:
        width += 1
        params = param_count(build_variant(baseline, info, **{kwarg: width}))
        if abs(params - target_params) < abs(best[1] - target_params):
            best = (width, params)
        if params >= target_params:
            break
    return best


def add_capacity_variant(plan: StudyPlan, info: dict) -> None:
    """Add the capacity-matched baseline that `plan.capacity` asks for (role 'capacity') to
    `plan.variants`, or a note saying why none is needed."""
    cap = plan.capacity
    if not cap:
        return
    if not isinstance(cap, dict):
        raise ValueError(f"capacity must be a mapping like {{match: largest, kwarg: width}}, got {cap!r}")
    kwarg = cap.get("kwarg", "width")
    base = plan.baseline_variant
    attention_variants = [v for v in plan.variants if v.role == "attention"]
    if not attention_variants:
        return
    params = {v.name: param_count(build_variant(v, info)) for v in attention_variants}
    target = cap.get("match", "largest")
    if target == "largest":
        target = max(params, key=params.get)
    if target not in params:
        raise ValueError(f"capacity.match {target!r} is not an attention variant of this study; "
                         f"accepted: largest, {', '.join(params)}")
    width, matched = match_width(base, params[target], info, kwarg)
    own = base.model_kwargs.get(kwarg)
    if width == own:
        plan.notes = (plan.notes or []) + [
            f"capacity control: {target} adds fewer parameters than one step of {kwarg} ({own} -> {own + 1}); "
            f"the baseline itself is the closest match, so no wider baseline was trained"]
        return
    variant = copy.deepcopy(base)
    variant.name, variant.role, variant.matches = f"{BASELINE}-{kwarg}{width}", "capacity", target
    variant.model_kwargs[kwarg] = width
    variant.capacity = {"kwarg": kwarg, "base": own, "value": width, "multiplier": width / own,
                        "params": matched, "target_params": params[target]}
    plan.variants.append(variant)


__all__ = ["add_capacity_variant", "match_width"]
