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


def _faithfulness_table(summary: dict) -> Optional[str]:
    """Deletion / insertion AUC of each map against the random ranking, and its randomisation test."""
    faith = summary.get("faithfulness") or {}
    if not faith.get("maps"):
        return None
    sanity = {r.get("map"): r for r in (summary.get("sanity") or {}).get("maps", [])}

    def verdict(name):
        r = sanity.get(name)
        if not r:
            return "-"
        rho = num(r.get("final"), "{:.2f}")
        return f"**flagged**: rho {rho}, does not explain the trained network" if r.get("flagged") else f"passed (rho {rho})"

    head = ["map", "deletion AUC (lower: faithful)", "insertion AUC (higher: faithful)", "randomisation test"]
    body = [[str(r.get("map")), num(r.get("deletion_auc"), "{:.3f}"), num(r.get("insertion_auc"), "{:.3f}"),
             verdict(r.get("map"))] for r in faith["maps"]]
    rand = faith.get("random") or {}
    body.append(["random ranking", num(rand.get("deletion_auc"), "{:.3f}"), num(rand.get("insertion_auc"), "{:.3f}"), ""])
    return md_table(head, body)


def _agreement_table(summary: dict) -> Optional[str]:
    head = ["module map", "CAM", "Spearman rho", "top-10% IoU"]
    body = [[f"{r.get('module')} {r.get('signal')}", f"{r.get('method')} at {r.get('layer')}",
             num(r.get("spearman"), "{:.2f}"), num(r.get("top_iou"), "{:.2f}")] for r in summary.get("agreement") or []]
    return md_table(head, body) if body else None


def _evidence_lines(folder: StudyFolder, name: str, summary: dict) -> list[str]:
    """The explorer link, the agreement of module maps with class evidence, and the faithfulness table."""
    from ..explain.explorer import EXPLORER

    lines = []
    page = folder.explain_dir(name) / EXPLORER
    if page.is_file():
        lines += [f"[Interactive explorer of {name}]({page.relative_to(folder.root).as_posix()}) (one offline page)", ""]
    agree = _agreement_table(summary)
    if agree:
        lines += ["Does each module look where the class evidence is (agreement of its map with the CAMs at the "
                  "layer after it, mean over the images; per class in summary.json):", "", agree, ""]
    faith = _faithfulness_table(summary)
    if faith:
        n = (summary.get("faithfulness") or {}).get("images")
        lines += [f"Faithfulness on {n} test images (Petsiuk et al. 2018) and the cascading randomisation test "
                  "(Adebayo et al. 2018; flagged: the map still correlates with the trained one after every layer "
                  f"is re-initialised, rho >= {num((summary.get('sanity') or {}).get('threshold'), '{:.2f}')}):",
                  "", faith, ""]
    return lines


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
        lines += _evidence_lines(folder, name, summaries.get(name, {}))
        lines += [f"![{name} {p.stem}]({p.relative_to(root).as_posix()})" for p in pngs] + [""]
    return lines or ["No explanation figures in this run folder.", ""]


__all__ = ["ILLUSTRATION", "write_illustration", "write_explanations", "illustration_path", "explanation_figures",
           "explanation_summaries", "explanation_section"]
