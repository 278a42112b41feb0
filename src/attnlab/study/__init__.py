"""`attnlab compare`: the same recipe for every variant, several seeds, costs, explanations, report.

    from attnlab.study import plan_compare, run_compare
    folder = run_compare()                       # the `quick` preset on the embedded digits
    plan = plan_compare("fashion-mnist", seeds=[0, 1])    # a checked StudyPlan, nothing trained
    folder = run_compare(plan=plan)

Not a paper module; the application layer above report/, explain/, measure/ and train/. The
study design follows what a fair comparison needs:

* Same recipe: every variant is trained by the one Trainer from one recipe; only the placement
  spec (or `model_kwargs`) differs. Same seeds: seed s of every variant sees the same data order
  (the Trainer draws epoch e's permutation from (seed, e) alone), so accuracies pair by seed and
  the report uses paired differences.
* Baseline: the variant without attention (named ``none``); see study.variants for ``stn`` and
  ``non_local``.
* Capacity control (study.capacity): the baseline widened to an attention variant's parameter
  count, so the report separates the gain of attention from the gain of size.

The files:

    presets.py    the YAML presets of attnlab/configs/ (list_presets, load_preset)
    variants.py   preset entries -> Variants, and the model each builds
    capacity.py   the width-matched baseline
    plan.py       plan_compare: the checked StudyPlan (attnlab.io.study_files), before any work
    workers.py    where runs execute: this process, spawned workers, torchrun ranks
    resume.py     continuing an interrupted study from its folder (compare --resume)
    progress.py   progress lines with ETAs
    run.py        run_compare: folder, training, costs, explanations, report

Output: a new folder ``out_root/<preset>-<UTC time>`` (never reused), laid out as
`attnlab.io.study_files.StudyFolder` declares: compare.json (the plan), runs/<variant>/seed<S>/,
costs.json, explain/<variant>/ and the report (see attnlab.report).
"""
from ..io.study_files import StudyFolder, StudyPlan, Variant
from .capacity import match_width
from .plan import plan_compare
from .presets import DEFAULT_PRESET, list_presets, load_preset
from .resume import open_study
from .run import StudyInterrupted, run_compare
from .variants import make_variant

__all__ = ["DEFAULT_PRESET", "StudyFolder", "StudyInterrupted", "StudyPlan", "Variant", "list_presets", "load_preset", "make_variant",
           "match_width", "open_study", "plan_compare", "run_compare"]
