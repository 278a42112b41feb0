"""Load local weight files into attnlab models: torchvision / timm files and attnlab checkpoints.

Not a paper module. `load_pretrained(model, path)` (what `create_model(..., pretrained=path)` calls):

1. reads the state dict: `.pth` / `.pt` / `.bin` through `torch.load(weights_only=True)` only (never
   unpickles code), `.safetensors` through safetensors, an attnlab run or checkpoint folder through
   `io.checkpoint.load_checkpoint` (hash-verified). Wrappers are removed: a {"state_dict": ...} or
   {"model": ...} dict, DDP's "module." prefix, the "model." prefix of attnlab checkpoints (whose other
   keys, optimizer and RNG state, are dropped).
2. detects the source ('attnlab', 'torchvision' or 'timm') from the keys: each candidate goes through
   `model.remap_pretrained(state, source)` and the one whose keys match most of the model's
   (name and shape) wins; ties go to attnlab, then torchvision. `source=` forces one.
3. loads. A tensor whose shape differs from the model's only by singleton dimensions (a Linear
   weight vs a 1x1 conv weight, as between timm's and attnlab's attention modules) is reshaped.
   Keys the file lacks that belong to attention modules are *new*; a missing or shape-mismatched key
   anywhere else raises a ValueError naming the keys. Exception: a classifier whose shape differs
   (other num_classes) or that the file lacks (e.g. ImageNet VGG weights into the small-input VGG,
   whose head is another layer) is left at its initialisation and reported (`classifier_reset`),
   the usual fine-tuning case. Keys of the file that the model lacks (`unexpected`) are refused
   by default (`strict=True`, `create_model(..., pretrained_strict=True)`): they are what the
   weights of a deeper model of the same family leave over (resnet34 into resnet18: every stage
   matches, the extra blocks do not), which would otherwise load without a word. The file's own
   classifier head is the exception (keys under the model's head, e.g. `head.`): a head of
   another shape or another layer layout is the fine-tuning case above and is only reported.
   `strict=False` (`pretrained_strict=False`) loads what fits and reports the rest in `unexpected`.
4. identity initialisation of the new attention modules (`identity_init=True`), so that the network
   computes what the pretrained one computed:
   * modules that already map x to x at initialisation (GC with its zero-initialised last conv,
     non-local with its zero-initialised BN scale, or any module built to be an identity) are kept:
     exact;
   * sigmoid gates (SE, ECA, CBAM) are sigmoid(.) ~ 0.5, not 1. Their logit layers are zeroed, which
     makes the gate the constant c = 0.5 (SE, ECA) or 0.25 (CBAM: channel x spatial), and 1/c is
     folded into the BatchNorm that feeds the module (both its scale and shift, through a ReLU when
     there is one: ReLU is positively homogeneous). Exact in float arithmetic, since 1/c is a power
     of two; the gate then keeps its meaning in (0, 1) and trains from the zeroed logits (the SE/ECA
     logit layer still receives gradient). Possible only where the family names that BatchNorm
     (`model.norms_before_attention()`): ResNet `standard` position in post-activation blocks and
     `identity` position on a projection shortcut, VGG. Elsewhere (pre, post, pre-activation blocks,
     other families) the zeroed gate is the constant c: reported as `approximate` with a warning.
   The alternative, a gate 2 * sigmoid(.) with zero logits, would change the attention modules'
   definition; folding changes only the backbone's scale, which the model is free to relearn.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..attention.base import AttentionModule
from ..io.checkpoint import load_checkpoint

SOURCES = ("attnlab", "torchvision", "timm")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")

# For each gate module: the sub-modules that produce its logits (zeroed for the identity init).
_GATE_LOGIT_LAYERS = {
    "SqueezeExcite": ("fc2",),
    "EfficientChannelAttention": ("conv",),
    "CBAM": ("channel.fc2", "spatial.conv"),
    "ChannelAttention": ("fc2",),
    "SpatialAttention": ("conv",),
}
# timm attention layer names -> attnlab names, per attnlab attention class (after the slot prefix).
_TIMM_ATTENTION_NAMES = {
    "SqueezeExcite": {"fc1.": "fc1.", "fc2.": "fc2."},
    "EfficientChannelAttention": {"conv.": "conv."},
    "CBAM": {"channel.fc1.": "channel.fc1.", "channel.fc2.": "channel.fc2.",
             "spatial.conv.conv.": "spatial.conv.", "spatial.conv.bn.": "spatial.norm."},
    "GlobalContextBlock": {"conv_attn.": "attention_logits.", "mlp_add.": "transform.",
                           "mlp_scale.": "transform."},
}


# ------------------------------------------------------------------------------------------ reading
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weight file or attnlab checkpoint, wrappers and prefixes removed."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"pretrained path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"pretrained file {str(path)!r} does not exist")
    if path.is_dir():
        return load_checkpoint(path).model_state()
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise ValueError(f"pretrained file {str(path)!r} is not a readable safetensors file ({err})") from None
        if str(metadata.get("format", "")).startswith("attnlab-checkpoint") and path.with_suffix(".json").is_file():
            return load_checkpoint(path).model_state()
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"pretrained file {str(path)!r} is not a readable safetensors file ({err})") from None
    elif suffix in _TORCH_SUFFIXES:
        if path.is_file() and path.stat().st_size == 0:
            raise ValueError(f"pretrained file {str(path)!r} is empty (0 bytes); expected a torch.save file")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"pretrained file {str(path)!r} refused: it holds more than tensors and plain "
                             f"containers, and only weights_only loading is allowed ({err})") from None
        except (EOFError, RuntimeError, OSError, ValueError) as err:   # truncated zip / pickle stream, a folder
            reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
            raise ValueError(f"pretrained file {str(path)!r} is truncated or not a torch.save file ({reason})") from None
    else:
        raise ValueError(f"pretrained file {str(path)!r}: unknown format {suffix!r}; expected "
                         f"{', '.join(_TORCH_SUFFIXES)}, .safetensors or an attnlab checkpoint folder")
    return _unwrap(state, path)


def _unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model", "model_state", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"pretrained file {str(path)!r} holds no state dict (got {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"pretrained file {str(path)!r}: entries that are not named tensors: {bad[:5]}")
    if all(k.startswith("module.") for k in state):  # DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("model.") for k in state):  # attnlab checkpoint tensors: keep the model's
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return state


# ------------------------------------------------------------------------------------------ keys
def rename_timm_attention(model: nn.Module, state_dict: dict, foreign_slot: str = "se",
                          own_slot: str = "attention") -> dict:
    """Rename timm's attention keys ('<block>.se.<inner>') to the model's ('<block>.attention.<inner>'),
    converting the inner names for the attention class found at that place in `model`."""
    modules = dict(model.named_modules())
    out = {}
    marker = f".{foreign_slot}."
    for key, value in state_dict.items():
        if marker in key:
            block, inner = key.split(marker, 1)
            module = modules.get(f"{block}.{own_slot}")
            names = _TIMM_ATTENTION_NAMES.get(type(module).__name__, {})
            for theirs, ours in names.items():
                if inner.startswith(theirs):
                    inner = ours + inner[len(theirs):]
                    break
            key = f"{block}.{own_slot}.{inner}"
        out[key] = value
    return out


def _fit_shape(value: torch.Tensor, shape: torch.Size) -> Optional[torch.Tensor]:
    """`value` reshaped to `shape` if they differ only by singleton dimensions, else None."""
    if value.shape == shape:
        return value
    squeeze = lambda s: [d for d in s if d != 1]  # noqa: E731
    if value.numel() == torch.Size(shape).numel() and squeeze(value.shape) == squeeze(shape):
        return value.reshape(shape)
    return None


def _match_count(own: dict, state: dict) -> tuple[int, int]:
    """(keys found in the model, keys found with a fitting shape)."""
    names = [k for k in state if k in own]
    return len(names), sum(1 for k in names if _fit_shape(state[k], own[k].shape) is not None)


def detect_source(model: nn.Module, state_dict: dict) -> str:
    """The source whose renaming matches most of the model's key names, then shapes (a classifier of
    another size still counts by name), then leaves the fewest file keys outside the model and its
    head (a model without a classifier still recognises the file's head); remaining ties go to
    attnlab, then torchvision, then timm."""
    own = model.state_dict()
    head = _head_prefix(model)

    def score(source):
        state = model.remap_pretrained(dict(state_dict), source)
        extra = sum(1 for k in state if k not in own and not (head and k.startswith(head)))
        return (*_match_count(own, state), -extra)

    scores = {s: score(s) for s in SOURCES}
    best = max(SOURCES, key=lambda s: scores[s])  # max keeps the first of equal scores
    if scores[best][0] == 0:
        raise ValueError(f"no key of the pretrained file matches {type(model).__name__} "
                         f"(first file keys: {list(state_dict)[:5]}; first model keys: {list(own)[:5]})")
    return best


def _attention_prefixes(model: nn.Module) -> dict[str, AttentionModule]:
    """Every outermost attention module of `model`, by qualified name."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, AttentionModule) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


# ------------------------------------------------------------------------------------------ loading
def load_pretrained(model: nn.Module, path: str | os.PathLike, source: Optional[str] = None,
                    identity_init: bool = True, strict: bool = True) -> dict:
    """Load `path` into `model` (see the module docstring); returns the report dict:
    source, path, loaded, new (attention keys left at init), unexpected, classifier_reset,
    identity_init ({'exact': [module names], 'approximate': [module names]}).

    `strict=True` refuses a file with tensors the model lacks outside its classifier head
    (ValueError naming how many and the first of them); `strict=False` ignores them."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_pretrained: model must be an nn.Module, got {type(model).__name__}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"load_pretrained: source must be one of {SOURCES} or None, got {source!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"load_pretrained: strict (pretrained_strict) must be True or False, got {strict!r}")
    raw = read_state_dict(path)
    source = source or detect_source(model, raw)
    state = model.remap_pretrained(dict(raw), source)
    own = model.state_dict()
    attention = _attention_prefixes(model)
    in_attention = lambda key: any(key.startswith(p + ".") for p in attention)  # noqa: E731
    classifier = _classifier_keys(model)

    to_load, mismatched, classifier_reset = {}, [], []
    for key, value in state.items():
        if key not in own:
            continue
        fitted = _fit_shape(value, own[key].shape)
        if fitted is not None:
            to_load[key] = fitted.to(own[key].dtype)
        elif key in classifier:
            classifier_reset.append(key)
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    classifier_reset += [k for k in own if k in classifier and k not in to_load and k not in classifier_reset]
    missing = [k for k in own if k not in to_load and k not in classifier_reset]
    new = [k for k in missing if in_attention(k)]
    missing = [k for k in missing if not in_attention(k)]
    label = getattr(model, "model_name", type(model).__name__)
    if mismatched or missing:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:5])})")
        if missing:
            parts.append(f"{len(missing)} keys missing from the file ({', '.join(missing[:8])})")
        raise ValueError(f"pretrained {str(path)!r} (read as {source}) does not fit {label}: " + ", ".join(parts)
                         + ". Only attention-module keys may be absent; check the architecture and its arguments.")
    head = _head_prefix(model)
    extra = [k for k in state if k not in own and not (head and k.startswith(head))]   # the head: see step 3
    if strict and extra:
        modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in sorted(extra)))
        raise ValueError(f"pretrained {str(path)!r} (read as {source}) has {len(extra)} tensors that {label} lacks, "
                         f"in {len(modules)} module(s) ({', '.join(modules[:4])}{', ...' if len(modules) > 4 else ''})"
                         ": weights of a deeper or "
                         "another model? Check the model name; pass pretrained_strict=False (load_pretrained: "
                         "strict=False) to load what fits and ignore them")
    model.load_state_dict(to_load, strict=False)
    report = dict(source=source, path=str(path), loaded=sorted(to_load), new=new,
                  unexpected=sorted(k for k in state if k not in own), classifier_reset=classifier_reset,
                  identity_init={"exact": [], "approximate": []})
    if identity_init:
        fresh = [name for name, module in attention.items()
                 if all(f"{name}.{k}" in new for k in module.state_dict())]
        report["identity_init"] = make_attention_identity(model, fresh)
        if report["identity_init"]["approximate"]:
            warnings.warn(f"{label}: these new attention modules cannot start as an exact identity (their gate "
                          f"is a constant < 1 instead): {report['identity_init']['approximate']}", stacklevel=2)
    return report


def _head_prefix(model: nn.Module) -> Optional[str]:
    """The name prefix of the module that holds `model`'s classifier ('head.' for attnlab
    backbones), or of the classifier itself when it sits at the top; None without one."""
    get = getattr(model, "get_classifier", None)
    fc = get() if callable(get) else None
    if fc is None:
        return None
    for name, module in model.named_modules():
        if module is fc and name:
            return (name.rsplit(".", 1)[0] if "." in name else name) + "."
    return None


def _classifier_keys(model: nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    fc = get() if callable(get) else None
    if fc is None:
        return set()
    for name, module in model.named_modules():
        if module is fc:
            return {f"{name}.{k}" for k in fc.state_dict()}
    return set()


# ------------------------------------------------------------------------------------ identity init
@torch.no_grad()
def _gate_constant(module: nn.Module) -> Optional[float]:
    """out / in of `module` on a probe, if it is one constant (train and eval mode), else None."""
    param = next(module.parameters(), None)
    kw = dict(dtype=param.dtype if param is not None else torch.float32,
              device=param.device if param is not None else None)
    x = torch.rand(2, module.channels, 5, 6, generator=torch.Generator().manual_seed(0)).to(**kw) + 0.5
    was_training = module.training
    ratios = []
    for mode in (False, True):
        module.train(mode)
        ratios.append(module(x) / x)
    module.train(was_training)
    ratio = torch.cat([r.flatten() for r in ratios])
    value = ratio[0].item()
    return value if torch.allclose(ratio, torch.full_like(ratio, value), rtol=0, atol=1e-7) else None


@torch.no_grad()
def make_attention_identity(model: nn.Module, names: list[str]) -> dict:
    """Make the attention modules `names` of `model` start as identities (see the module docstring).
    Returns {'exact': [...], 'approximate': [...]}."""
    modules = dict(model.named_modules())
    get_norms = getattr(model, "norms_before_attention", None)
    norms = get_norms() if callable(get_norms) else {}
    exact, approximate = [], []
    for name in names:
        module = modules[name]
        # Probing BN in training mode would move its running statistics: save and restore them.
        buffers = {k: v.clone() for k, v in module.state_dict().items()}
        constant = _gate_constant(module)
        if constant is None and type(module).__name__ in _GATE_LOGIT_LAYERS:
            for layer_name in _GATE_LOGIT_LAYERS[type(module).__name__]:
                layer = module.get_submodule(layer_name)
                for p in layer.parameters(recurse=False):
                    p.zero_()
            buffers = {k: v.clone() for k, v in module.state_dict().items()}
            constant = _gate_constant(module)
        module.load_state_dict(buffers)
        if constant == 1.0:
            exact.append(name)
        elif constant is not None and constant > 0 and name in norms:
            norm = norms[name]
            norm.weight.div_(constant)
            norm.bias.div_(constant)
            exact.append(name)
        else:
            approximate.append(name)
    return {"exact": exact, "approximate": approximate}
