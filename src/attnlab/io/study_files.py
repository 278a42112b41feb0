"""A study's run folder and its plan: what `attnlab compare` writes and `attnlab report` reads.

    folder = StudyFolder("runs/quick-20250101-120000")
    plan = folder.read_plan()              # StudyPlan from compare.json, checked; older files too
    plan.variants[1].name, plan.seeds      # 'se', [0, 1, 2]
    folder.seed_dir("se", 0)               # runs/se/seed0: one training run (see io.run_folder)

Not a paper module. The layout of a study folder, declared here once (every path below is a
property or method of `StudyFolder`; no other module spells it out):

    compare.json                 the plan (`StudyPlan`): preset, variants, seeds, dataset, recipe,
                                 input shape, and once run: start and end times, seconds per phase
    runs/<variant>/seed<S>/      one training run each (config.yaml, metrics.jsonl, final.json, checkpoints/)
    costs.json                   {variant: measured costs}, once per variant
    explain/<variant>/           figures (PNG) and summary.json of one checkpoint per variant
    results.csv, results.json    the report's table, one row per variant
    report.md, report.html       the report; figures/*.png its own figures

`StudyPlan.from_dict` reads every compare.json written so far (fields that older versions did not
write take their defaults) and checks what its readers rely on, naming the file and the field;
`to_dict` gives the same JSON object back.

A variant's name is the name of its folders (runs/<variant>/, explain/<variant>/), so it must be
a safe folder name (`check_variant_name`: letters, digits and ``-_.+``, starting with a letter or digit,
at most `VARIANT_NAME_MAX` characters). `Variant` checks it whenever one is made, for a new plan
and for one read back from compare.json alike, so no name can lead a writer out of the study folder.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from .run_folder import FINAL_FILE

BASELINE = "none"                 # the name of the variant without attention
VARIANT_NAME_MAX = 100            # characters in a variant's name (a folder name; a file system allows 255)
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PLAN_EXPECTED = "the JSON object `attnlab compare` writes, with a non-empty list of variants"
# The entries of a plan's `cost` that are settings of attnlab.measure.cost.measure_costs.
COST_SETTINGS = ("large_batch", "train_batch", "repeats", "warmup", "threads")


# --------------------------------------------------------------------------------------------- the plan

def check_variant_name(name, source: str = "Variant") -> str:
    """`name` if it can name a variant's folders and the report's tables: a string of letters,
    digits and ``-_.+`` that starts with a letter or digit, at most VARIANT_NAME_MAX characters
    long; ValueError naming `source` and the name otherwise (a name such as ``../x`` would lead out
    of the study, ``-x`` reads as a flag, ``_x_`` as Markdown emphasis)."""
    if not _is_variant_name(name):
        raise ValueError(f"{source}: variant name {name!r} is not a safe folder name; expected 1 to "
                         f"{VARIANT_NAME_MAX} letters, digits or '-_.+', starting with a letter or digit")
    return name


def _is_variant_name(name) -> bool:
    return isinstance(name, str) and len(name) <= VARIANT_NAME_MAX and bool(_VARIANT_NAME.fullmatch(name))


def _is_int(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _ints(value, length: Optional[int] = None, minimum: int = 1) -> bool:
    """Whether `value` is a list of ints >= `minimum` (of `length` entries, when given)."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(_is_int(x, minimum) for x in value))


@dataclass
class Variant:
    """One arm of a study: a model and its attention placement, trained over every seed.

    `role` is ``baseline`` (no attention), ``attention`` or ``capacity`` (the baseline widened to
    the parameter count of the attention variant named in `matches`; `capacity` then records
    {kwarg, base, value, multiplier, params, target_params}). `baseline` names the variant's own
    baseline when a study compares several models (otherwise the plan's baseline)."""

    name: str
    model: Optional[str] = None
    attention: Optional[str] = None
    attention_kwargs: dict = field(default_factory=dict)
    attention_stages: Optional[list] = None
    attention_position: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    role: Optional[str] = "attention"
    matches: Optional[str] = None
    baseline: Optional[str] = None
    capacity: Optional[dict] = None

    _WRITTEN_WHEN_SET = ("matches", "baseline", "capacity")

    def __post_init__(self):
        check_variant_name(self.name)

    def to_dict(self) -> dict:
        """The variant as compare.json holds it."""
        return _as_dict(self, self._WRITTEN_WHEN_SET)

    @classmethod
    def from_dict(cls, data, source: str) -> "Variant":
        """A Variant from its compare.json object; ValueError naming `source` for a wrong field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: variant {data!r} is not an object with a 'name'; expected {PLAN_EXPECTED}")
        check_variant_name(data.get("name"), source)
        for key in ("role", "baseline", "model", "attention", "matches", "attention_position"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{source}: variant {data['name']!r} has {key} {data[key]!r}; expected a string")
        for key in ("attention_kwargs", "model_kwargs", "capacity"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise ValueError(f"{source}: variant {data['name']!r} has {key} {data[key]!r}; expected an object")
        stages = data.get("attention_stages")
        if stages is not None and not (isinstance(stages, list) and all(_is_int(s) for s in stages)):
            raise ValueError(f"{source}: variant {data['name']!r} has attention_stages {stages!r}; expected a list "
                             "of ints")
        return cls(**_known_fields(cls, data))


@dataclass
class StudyPlan:
    """The typed description of a study: what `plan_compare` decides and compare.json records.

    `train` holds the recipe (TrainConfig fields shared by every run), `cost` the cost settings,
    `capacity` the preset's capacity entry ({match, kwarg}); `explain` asks for each variant's
    explanation figures, `evidence` also for their class evidence (CAMs, faithfulness, the
    randomisation test) and explorer page; `input_shape` and `num_classes` are
    those of the dataset. `precision_reason` says why the recipe's precision was chosen when
    `auto` was resolved for the whole study. `notes`, `started`, `ranks`, `finished` and
    `seconds` are filled in while the study runs; `resumed` lists the UTC times at which an
    interrupted study was continued (`attnlab compare --resume`), and `seconds` then sums every
    session's time per phase."""

    preset: Optional[str] = None
    description: str = ""
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    image_size: Union[int, list, None] = None
    seeds: Optional[list] = None
    baseline: Optional[str] = None
    variants: list = field(default_factory=list)
    train: dict = field(default_factory=dict)
    capacity: Optional[dict] = None
    cost: dict = field(default_factory=dict)
    explain: bool = True
    evidence: Optional[bool] = None
    workers: Optional[int] = None
    input_shape: Optional[list] = None
    num_classes: Optional[int] = None
    notes: Optional[list] = None
    started: Optional[str] = None
    ranks: Optional[int] = None
    finished: Optional[str] = None
    seconds: Optional[dict] = None
    precision_reason: Optional[str] = None
    resumed: Optional[list] = None

    _WRITTEN_WHEN_SET = ("notes", "started", "ranks", "finished", "seconds", "precision_reason", "resumed",
                         "evidence")

    # ----------------------------------------------------------------------------- reading the plan
    def variant(self, name: str) -> Variant:
        """The variant called `name` (KeyError when there is none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r} in this study; variants: {[v.name for v in self.variants]}")

    @property
    def baseline_variant(self) -> Variant:
        return self.variant(self.baseline)

    def runs(self) -> list[tuple[Variant, int]]:
        """Every (variant, seed) of the study, seed by seed: every variant's first seed comes
        first, so that a study stopped part-way already pairs all its variants on some seeds."""
        return [(v, s) for s in self.seeds or [] for v in self.variants]

    @property
    def trains_channels_last(self) -> bool:
        """The Trainer's memory format for this plan (channels_last unless the recipe turns it
        off), so that costs are timed on the models as they were trained."""
        return self.train.get("channels_last") is not False

    @property
    def cost_settings(self) -> dict:
        """The entries of `cost` that are settings of `measure_costs` (batch sizes, repeats, ...)."""
        return {k: self.cost[k] for k in COST_SETTINGS if k in self.cost}

    # ----------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The plan as compare.json holds it (fields filled in while running only once set)."""
        out = _as_dict(self, self._WRITTEN_WHEN_SET)
        out["variants"] = [v.to_dict() for v in self.variants]
        return out

    def to_json(self) -> str:
        """The text of compare.json."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict, source: str = "compare.json") -> "StudyPlan":
        """The plan in `data` (a compare.json object of any version), checked for what its readers
        need: variants (objects with a distinct, safe folder name; role, baseline, model, attention
        and matches strings where given), a baseline among them (the
        first variant when absent), seeds distinct ints >= 0, image_size a positive int or [H, W],
        input_shape [C, H, W] and num_classes positive ints, preset, dataset and data_dir strings,
        notes a list of strings, cost and train objects. Fields an older version did not write may
        be absent. ValueError naming `source` and the field otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a JSON {type(data).__name__}; expected {PLAN_EXPECTED}")
        variants = data.get("variants")
        if not isinstance(variants, list) or not variants:
            raise ValueError(f"{source}: 'variants' is {variants!r}; expected {PLAN_EXPECTED}")
        variants = [Variant.from_dict(v, source) for v in variants]
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: variant names {names} repeat; expected each name once")
        baseline = data.get("baseline", names[0])
        for name in [baseline] + [v.baseline for v in variants if v.baseline is not None]:
            if name not in names:
                raise ValueError(f"{source}: baseline {name!r} is not among the variants {names}")
        _check_plan_values(data, source)
        known = _known_fields(cls, data)
        known.update(variants=variants, baseline=baseline)
        return cls(**known)

    @classmethod
    def inferred(cls, variant_names: list[str]) -> "StudyPlan":
        """The plan of a folder without compare.json: one variant per runs/<variant>/ folder, the
        one called ``none`` (else the first) as the baseline."""
        base = BASELINE if BASELINE in variant_names else variant_names[0]
        names = [base] + [n for n in variant_names if n != base]
        return cls(baseline=base, variants=[Variant(n, role="baseline" if n == base else "attention") for n in names])


# The plan's fields that older versions may leave out: (field, is it right?, what is expected).
_PLAN_VALUES = (
    ("seeds", lambda v: _ints(v, minimum=0) and v and len(set(v)) == len(v), "a non-empty list of distinct ints >= 0"),
    ("image_size", lambda v: _is_int(v, 1) or _ints(v, 2), "a positive int or [H, W]"),
    ("input_shape", lambda v: _ints(v, 3), "a list [C, H, W] of positive ints"),
    ("num_classes", lambda v: _is_int(v, 1), "a positive int"),
    ("workers", lambda v: _is_int(v, 1), "a positive int"),
    ("preset", lambda v: isinstance(v, str), "a string"),
    ("description", lambda v: isinstance(v, str), "a string"),
    ("dataset", lambda v: isinstance(v, str) and v.strip(), "a dataset name"),
    ("data_dir", lambda v: isinstance(v, str) and v.strip(), "a folder"),
    ("explain", lambda v: isinstance(v, bool), "true or false"),
    ("evidence", lambda v: isinstance(v, bool), "true or false"),
    ("notes", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of strings"),
    ("cost", lambda v: isinstance(v, dict), "an object"),
    ("train", lambda v: isinstance(v, dict), "an object"),
    ("capacity", lambda v: isinstance(v, dict), "an object"),
)


def _check_plan_values(data: dict, source: str) -> None:
    """ValueError naming `source` and the field for the first given (non-null) field of
    _PLAN_VALUES whose value is not what the plan's readers expect."""
    for key, right, expected in _PLAN_VALUES:
        value = data.get(key)
        if value is not None and not right(value):
            raise ValueError(f"{source}: {key!r} is {value!r}; expected {expected}")


def _as_dict(obj, written_when_set: tuple[str, ...]) -> dict:
    """The dataclass `obj` as a JSON-ready dict in field order, leaving out the fields of
    `written_when_set` that are None."""
    return {f.name: copy.deepcopy(getattr(obj, f.name)) for f in fields(obj)
            if not (f.name in written_when_set and getattr(obj, f.name) is None)}


def _known_fields(cls, data: dict) -> dict:
    """The entries of `data` that are fields of dataclass `cls` (null for a field whose default is
    an empty object or list gives that default); keys of other versions are left out."""
    return {f.name: copy.deepcopy(data[f.name]) for f in fields(cls)
            if f.name in data and not (data[f.name] is None and f.default_factory is not MISSING)}


# --------------------------------------------------------------------------------------------- the folder

SEED_DIR = re.compile(r"^seed(\d+)$")
EXPLAIN_SUMMARY = "summary.json"   # written next to the figures by attnlab.explain.explain_checkpoint


@dataclass(frozen=True)
class StudyFolder:
    """Where each file of a study's run folder lives (see the module docstring for the layout)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def create(cls, out_root, label: str) -> "StudyFolder":
        """A new, empty folder ``out_root/<label>-<UTC time>`` (a suffix -2, -3, ... when that
        name is taken: a study never writes into an existing folder)."""
        root = Path(out_root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        for k in range(1000):
            path = root / (f"{label}-{stamp}" + (f"-{k + 1}" if k else ""))
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not make a new run folder under {root}")

    # ----------------------------------------------------------------------------- paths
    @property
    def plan_file(self) -> Path:
        return self.root / "compare.json"

    @property
    def costs_file(self) -> Path:
        return self.root / "costs.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def variant_dir(self, variant: str) -> Path:
        return self.runs_dir / variant

    def seed_dir(self, variant: str, seed: int) -> Path:
        """The training run of `variant` with `seed`."""
        return self.variant_dir(variant) / f"seed{seed}"

    @property
    def explain_root(self) -> Path:
        return self.root / "explain"

    def explain_dir(self, variant: str) -> Path:
        """The explanation figures (and summary.json) of `variant`."""
        return self.explain_root / variant

    def explain_summary(self, variant: str) -> Path:
        return self.explain_dir(variant) / EXPLAIN_SUMMARY

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    # ----------------------------------------------------------------------------- finding runs
    def variants_on_disk(self) -> list[str]:
        """The names of the runs/<variant>/ folders that can name a variant (not .hidden ones), sorted."""
        runs = self.runs_dir
        return sorted(p.name for p in runs.iterdir() if p.is_dir() and _is_variant_name(p.name)) if runs.is_dir() else []

    def finished_runs(self, variant: str) -> list[tuple[int, Path]]:
        """(seed, folder) of every runs/<variant>/seed<S>/ that holds a final.json, by folder name."""
        folder = self.variant_dir(variant)
        if not folder.is_dir():
            return []
        found = []
        for sub in sorted(folder.iterdir()):
            m = SEED_DIR.match(sub.name)
            if m and (sub / FINAL_FILE).is_file():
                found.append((int(m.group(1)), sub))
        return found

    # ----------------------------------------------------------------------------- reading and writing
    def read_plan(self) -> StudyPlan:
        """compare.json (checked, see `StudyPlan.from_dict`), or a plan inferred from the
        runs/<variant>/ folders when it is missing; ValueError naming the file and what was expected."""
        if self.plan_file.is_file():
            return StudyPlan.from_dict(read_json_object(self.plan_file, PLAN_EXPECTED), str(self.plan_file))
        names = self.variants_on_disk()
        if not names:
            raise ValueError(f"{self.root} is not a compare run folder: expected compare.json or "
                             f"runs/<variant>/seed<S>/{FINAL_FILE}")
        return StudyPlan.inferred(names)

    def write_plan(self, plan: StudyPlan) -> None:
        self.plan_file.write_text(plan.to_json())

    def read_costs(self) -> dict:
        """costs.json ({variant: {figure: value}}), {} when there is none."""
        if not self.costs_file.is_file():
            return {}
        costs = read_json_object(self.costs_file, "the JSON object of measured costs, one object per variant")
        for name, entry in costs.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{self.costs_file}: the costs of {name!r} are {entry!r}; expected an object "
                                 "per variant")
        return costs

    def write_costs(self, costs: dict) -> None:
        self.costs_file.write_text(json.dumps(costs, indent=2))


def read_json_object(path: Path, expected: str = "a JSON object") -> dict:
    """The JSON object in file `path`; ValueError naming the file and `expected` when the file
    cannot be read, is not UTF-8 JSON, or holds something other than an object."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror or exc}); expected {expected}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; expected {expected}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                         f"expected {expected}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise ValueError(f"{path} holds {kind}, not an object; expected {expected}")
    return data


__all__ = ["BASELINE", "COST_SETTINGS", "PLAN_EXPECTED", "VARIANT_NAME_MAX", "StudyFolder", "StudyPlan", "Variant",
           "check_variant_name", "read_json_object"]
