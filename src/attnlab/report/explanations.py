"""The explanation part of a study: figures of one checkpoint per variant, and the illustration of
the operators, which does not depend on any checkpoint and so is drawn once per study.

    notes = write_explanations(folder, plan, seeds)     # explain/<variant>/ and figures/ filled in
    path = write_illustration(folder, plan)             # figures/operators_illustration.png

The per-variant figures and summary.json come from attnlab.explain (`explain_checkpoint` with
``illustration=False``); the illustration is `attnlab.explain.figures.seed_figure` on two test
images of the study's data set. Run folders written before the illustration moved here hold a
copy of it in every explain/<variant>/ folder (``a_seed_picture.png``); the report shows one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..io.run_folder import CONFIG_FILE
from ..io.study_files import StudyFolder, StudyPlan, read_json_object
from .format import md_table, num, pct

ILLUSTRATION = "operators_illustration.png"     # in the study's figures/ folder
OLD_ILLUSTRATION = "a_seed_picture.png"         # in each explain/<variant>/ of older run folders


# --------------------------------------------------------------------------------------------- writing

def write_illustration(folder: StudyFolder, plan: StudyPlan, seed: Optional[int] = None) -> Path:
    """Draw the operators' illustration (figures/operators_illustration.png) on two test images
    of the data set that the first finished run of `seed` (default: the plan's first) trained on."""
    from ..explain.figures import load_explain_data, seed_figure
    from ..train import TrainConfig

    seed = (plan.seeds or [0])[0] if seed is None else seed
    run = next((folder.seed_dir(v.name, seed) for v in plan.variants
                if (folder.seed_dir(v.name, seed) / CONFIG_FILE).is_file()), None)
    if run is None:
        raise ValueError(f"{folder.root}: no run of seed {seed} with a {CONFIG_FILE} to take the data set from")
    config = TrainConfig.from_yaml(run / CONFIG_FILE)
    _, _, raw, _ = load_explain_data(config, {}, dataset=plan.dataset, data_dir=plan.data_dir, max_images=2)
    return seed_figure(raw[:2], folder.figures_dir / ILLUSTRATION)


def write_explanations(folder: StudyFolder, plan: StudyPlan, seeds: dict[str, int],
                       only_missing: bool = False) -> list[str]:
    """Explain the run of seed `seeds[variant]` of each variant into explain/<variant>/ (without
    the illustration) and draw the illustration once; returns a note for each part that failed
    (a report names its gaps instead of stopping). `only_missing`: skip variants already
    explained (summary.json or figures in their folder), and the illustration when the study has one."""
    from ..explain import explain_checkpoint

    notes = []
    for name, seed in seeds.items():
        out = folder.explain_dir(name)
        if only_missing and (folder.explain_summary(name).is_file() or (out.is_dir() and any(out.glob("*.png")))):
            continue
        try:
            explain_checkpoint(folder.seed_dir(name, seed), out, dataset=plan.dataset, data_dir=plan.data_dir,
                               illustration=False)
        except Exception as exc:  # named in the report, never silently dropped
            notes.append(f"explanations of {name} failed: {type(exc).__name__}: {exc}")
    if not (only_missing and illustration_path(folder, plan) is not None):
        try:
            write_illustration(folder, plan)
        except Exception as exc:
            notes.append(f"the illustration of the operators failed: {type(exc).__name__}: {exc}")
    return notes


# --------------------------------------------------------------------------------------------- reading

def illustration_path(folder: StudyFolder, plan: StudyPlan) -> Optional[Path]:
    """The study's illustration, or the first per-variant copy an older run folder holds."""
    path = folder.figures_dir / ILLUSTRATION
    if path.is_file():
        return path
    return next((folder.explain_dir(v.name) / OLD_ILLUSTRATION for v in plan.variants
                 if (folder.explain_dir(v.name) / OLD_ILLUSTRATION).is_file()), None)


def explanation_figures(folder: StudyFolder, plan: StudyPlan) -> dict[str, list[Path]]:
    """{variant: its explanation PNGs}, the illustration's per-variant copies left out."""
    out = {}
    for v in plan.variants:
        figures = folder.explain_dir(v.name)
        pngs = sorted(p for p in figures.glob("*.png") if p.name != OLD_ILLUSTRATION) if figures.is_dir() else []
        if pngs:
            out[v.name] = pngs
    return out


def explanation_summaries(folder: StudyFolder, plan: StudyPlan) -> dict[str, dict]:
    """{variant: its summary.json} for the variants that have one."""
    return {v.name: read_json_object(folder.explain_summary(v.name)) for v in plan.variants
            if folder.explain_summary(v.name).is_file()}


# --------------------------------------------------------------------------------------------- the section

def _specificity_table(summaries: dict) -> Optional[str]:
    head = ["variant", "module", "signal", "class specificity (between-class / total variance)"]
    body = [[name, str(rec.get("module")), str(rec.get("signal")),
             num(rec.get("specificity"), "{:.3f}") + (f" ({rec['specificity_note']})" if rec.get("specificity_note") else "")]
            for name, s in summaries.items() for rec in s.get("class_specificity") or []]
    return md_table(head, body) if body else None


def _reliance_table(summaries: dict) -> Optional[str]:
    head = ["variant", "stage", "accuracy %", "accuracy % with the gate = 1 (removed)", "accuracy % with the gate = data mean"]
    body = []
    for name, s in summaries.items():
        rel = s.get("reliance") or {}
        for stage in rel.get("stages", []):
            body.append([name, str(stage.get("stage")), pct(rel.get("accuracy")), pct(stage.get("removed")),
                         pct(stage.get("mean"))])
    return md_table(head, body) if body else None


def _query_notes(summary: dict) -> list[str]:
    """A line for each attention module whose map is the same for every query point."""
    same = [r for r in summary.get("affinity") or [] if isinstance(r, dict) and r.get("query_independent")]
    lines = [f"- {r.get('module')}: every query point attends to the same map (the largest difference between "
             f"query points is {num(100 * r['max_query_difference'], '{:.2g}')}% of the peak weight), so the block "
             "adds one global context to every position rather than attention that depends on the position."
             for r in same if isinstance(r.get("max_query_difference"), (int, float))]
    return lines + [""] if lines else []


def explanation_section(folder: StudyFolder, plan: StudyPlan) -> list[str]:
    """The Markdown lines of the explanation section (figure paths relative to the run folder)."""
    root = folder.root
    summaries = explanation_summaries(folder, plan)
    lines = []
    illustration = illustration_path(folder, plan)
    if illustration is not None:
        lines += ["What the operators do, independent of any checkpoint (drawn once for the study, with freshly "
                  "initialised modules):", "", f"![operators]({illustration.relative_to(root).as_posix()})", ""]
    spec = _specificity_table(summaries)
    if spec:
        lines += ["Class specificity of the excitation per module (0 = the same for every class, 1 = fixed by "
                  "the class):", "", spec, ""]
    rel = _reliance_table(summaries)
    if rel:
        lines += ["Reliance: test accuracy when each stage's attention output is replaced by its neutral value "
                  "(gate 1, mask or transform 0, identity warp) or by its mean over the data:", "", rel, ""]
    for name, pngs in explanation_figures(folder, plan).items():
        lines += [f"### {name}", ""] + _query_notes(summaries.get(name, {}))
        lines += [f"![{name} {p.stem}]({p.relative_to(root).as_posix()})" for p in pngs] + [""]
    return lines or ["No explanation figures in this run folder.", ""]


__all__ = ["ILLUSTRATION", "write_illustration", "write_explanations", "illustration_path", "explanation_figures",
           "explanation_summaries", "explanation_section"]
