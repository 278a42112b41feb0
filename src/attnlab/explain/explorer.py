"""One self-contained HTML page to explore a trained model's attention and class evidence.

    write_explorer(model, x, y, raw, classes, maps, summary, "explorer.html")

The page holds everything it shows (data, script, style; no external reference, it opens
offline). Pick a test image and a class; step through depth (the layer after each attention
module, then the last stage); toggle the class-activation map (Grad-CAM for every class,
Ablation-CAM for the labelled class), the attention module's own map, or their difference (both
scaled to [0, 1] per image); click a position to see, at that depth:

* the non-local affinity of that position (the weights its query gives every other position),
  when the model has a non-local or self-attention block; the page says so when it has none;
* the convolution's fixed window: the 3x3 neighbourhood a convolution at that depth weighs, the
  same weights at every position and for every image;
* the gate that recalibrates the channels there (SE, ECA, GC, CBAM's channel gate): one value
  per channel for the whole image, and the mean gate of each class (how class-specific the gates
  are at that depth, with the class specificity of the explanation's summary);

and beside each map its deletion and insertion AUC (batch mean and this image) against the random
ranking, and whether it passed the randomisation test.

Maps are stored at the resolution they were computed at, as one byte per value (each image's map
scaled to 0-255; gates over their common range), base64 in one JSON object: a few hundred kB for
a dozen 32x32 images of a ResNet-20.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..attention.base import AFFINITY, CHANNEL
from .capture import capture, forward_with_hooks
from .evidence import MODULE, EvidenceMaps, grad_cam

EXPLORER = "explorer.html"


def _bytes(values: torch.Tensor, per_image: bool = True) -> str:
    """base64 of `values` (N, ...) scaled to 0-255 per image (or over the whole tensor)."""
    v = values.detach().double().cpu()
    flat = v.flatten(1) if per_image else v.reshape(1, -1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    scaled = ((flat - low) / (high - low).clamp_min(1e-12) * 255).round().clamp(0, 255)
    return base64.b64encode(scaled.to(torch.uint8).numpy().tobytes()).decode("ascii")


def _affinities(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """The full affinity of every query position of each non-local / self-attention module."""
    sizes: dict[str, tuple] = {}
    with capture(model) as probe, torch.no_grad():
        model(x[:1])
    paths = [p for p in probe.paths() if probe.names_of(p, AFFINITY)]
    forward_with_hooks(model, x[:1], {path: (lambda _m, inputs, _o, path=path: sizes.setdefault(
        path, tuple(inputs[0].shape[-2:]))) for path in paths})
    out = []
    for path in paths:
        h, w = sizes[path]
        points = [((i + 0.5) / h, (j + 0.5) / w) for i in range(h) for j in range(w)]
        with capture(model, query_points=points, modules=[path]) as rec, torch.no_grad():
            model(x)
        aff = rec[path][probe.names_of(path, AFFINITY)[0]]              # (N, h*w, hk, wk)
        out.append({"module": path, "query": [int(h), int(w)], "keys": [int(aff.shape[-2]), int(aff.shape[-1])],
                    "data": _bytes(aff.flatten(1))})
    return out


def _gates(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, n: int, classes: int,
           specificity: Sequence[dict]) -> list[dict]:
    """Per attention module with a channel gate: the gate of each shown image and each class's mean."""
    with capture(model) as rec, torch.no_grad():
        for i in range(0, len(x_all), 256):
            model(x_all[i:i + 256])
    spec = {r.get("module"): r.get("specificity") for r in specificity}
    out = []
    for path in rec.paths():
        for name in rec.names_of(path, CHANNEL):
            g = rec[path][name]
            if g.dim() != 4 or g.shape[-1] * g.shape[-2] != 1:
                continue
            g = g.flatten(1).float()
            means = [g[y_all == k].mean(0).tolist() if bool((y_all == k).any()) else None for k in range(classes)]
            low, high = float(g.min()), float(g.max())
            out.append({"module": path, "signal": name, "channels": int(g.shape[1]), "low": low, "high": high,
                        "images": _bytes(g[:n], per_image=False) if high > low else None,
                        "class_means": means, "specificity": spec.get(path)})
            break
    return out


def explorer_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor, classes: Sequence[str],
                  maps: EvidenceMaps, summary: dict, images: int = 12, x_all: Optional[torch.Tensor] = None,
                  y_all: Optional[torch.Tensor] = None) -> dict:
    """The JSON object the page embeds, for the first `images` of `x` (the batch `maps` was
    computed on); `x_all`/`y_all` (default `x`/`y`) give the class means of the gates."""
    model.eval()
    n = min(images, len(x))
    xs, ys = x[:n], torch.as_tensor(y[:n]).long()
    k = len(classes)
    with torch.no_grad():
        pred = model(xs).argmax(1)
    img = raw[:n].detach().float().clamp(0, 1)
    img = img[:, :1] if img.shape[1] != 3 else img
    layers = []
    for layer, modules in maps.layers.items():
        module = model.get_submodule(layer)
        every = torch.stack([grad_cam(model, module, xs, torch.full((n,), c, dtype=torch.long)) for c in range(k)], 1)
        h, w = every.shape[-2:]
        entry = {"name": layer, "modules": modules, "res": [int(h), int(w)],
                 "grad_cam": _bytes(every.flatten(2).reshape(n * k, -1)), "ablation_cam": None, "module_maps": []}
        ablation = f"ablation_cam@{layer or 'model'}"
        if ablation in maps.native:
            native = maps.native[ablation][:n]
            entry["ablation_cam"] = {"res": list(native.shape[-2:]), "data": _bytes(native)}
        for e in maps.of(MODULE, layer):
            native = maps.native[e.name][:n]
            entry["module_maps"].append({"name": e.name, "res": list(native.shape[-2:]), "data": _bytes(native)})
        layers.append(entry)
    faith = summary.get("faithfulness") or {}
    sanity = {r["map"]: {"final": r["final"], "flagged": r["flagged"]} for r in (summary.get("sanity") or {}).get("maps", [])}
    return {
        "classes": [str(c) for c in classes], "size": [int(x.shape[-2]), int(x.shape[-1])],
        "colour": int(img.shape[1]), "count": n, "labels": ys.tolist(), "predictions": pred.tolist(),
        "raw": base64.b64encode((img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy().tobytes()).decode("ascii"),
        "layers": layers,
        "affinity": _affinities(model, xs),
        "gates": _gates(model, x if x_all is None else x_all, torch.as_tensor(y if y_all is None else y_all).long(), n, k,
                        summary.get("class_specificity") or []),
        "faithfulness": {"random": _faith_row(faith.get("random"), n),
                         "maps": {r["map"]: _faith_row(r, n) for r in faith.get("maps", [])}},
        "sanity": {"threshold": (summary.get("sanity") or {}).get("threshold"), "maps": sanity},
    }


def _faith_row(row: Optional[dict], n: int) -> Optional[dict]:
    if not row:
        return None
    return {"deletion": row["deletion_auc"], "insertion": row["insertion_auc"],
            "deletion_images": [round(v, 4) for v in row["deletion_per_image"][:n]],
            "insertion_images": [round(v, 4) for v in row["insertion_per_image"][:n]]}


def render_explorer(data: dict, title: str) -> str:
    """The page for `data` (see `explorer_data`), as one HTML string."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (_PAGE.replace("__TITLE__", html.escape(title)).replace("__STYLE__", _STYLE)
            .replace("__SCRIPT__", _SCRIPT).replace("__DATA__", payload))


def write_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor, classes: Sequence[str],
                   maps: EvidenceMaps, summary: dict, out_path, images: int = 12, title: str = "attnlab explorer",
                   x_all: Optional[torch.Tensor] = None, y_all: Optional[torch.Tensor] = None) -> Path:
    """Write the explorer page for the first `images` of the batch to `out_path`; returns it."""
    data = explorer_data(model, x, y, raw, classes, maps, summary, images, x_all, y_all)
    out_path = Path(out_path)
    out_path.write_text(render_explorer(data, title), encoding="utf-8")
    return out_path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>__STYLE__</style></head>
<body>
<h1>__TITLE__</h1>
<div class="controls">
  <label>image <select id="image"></select></label>
  <label>class <select id="class"></select></label>
  <label>depth <input id="depth" type="range" min="0" value="0"></label> <span id="depth-name"></span>
  <span class="views">
    <label><input type="radio" name="view" value="cam" checked> CAM</label>
    <label><input type="radio" name="view" value="module"> module map</label>
    <label><input type="radio" name="view" value="difference"> difference (CAM - module)</label>
  </span>
  <label>CAM <select id="method"><option value="grad_cam">Grad-CAM</option>
    <option value="ablation_cam">Ablation-CAM (labelled class)</option></select></label>
</div>
<div class="row">
  <figure><canvas id="main" width="288" height="288"></canvas>
    <figcaption id="main-caption">click a position</figcaption></figure>
  <div class="numbers" id="faith"></div>
</div>
<div class="row">
  <figure><canvas id="affinity" width="192" height="192"></canvas><figcaption id="affinity-caption"></figcaption></figure>
  <figure><canvas id="window" width="192" height="192"></canvas><figcaption id="window-caption"></figcaption></figure>
  <figure><canvas id="gate" width="300" height="150"></canvas><figcaption id="gate-caption"></figcaption></figure>
  <figure><canvas id="class-gates" width="300" height="150"></canvas><figcaption id="class-gates-caption"></figcaption></figure>
</div>
<p class="note">Fully connected layers weigh every position with fixed weights; a convolution weighs a fixed
window, the same everywhere; non-local attention weighs every position with weights computed from the input;
a gate (SE and kin) rescales whole channels from a summary of the image.</p>
<script id="data" type="application/json">__DATA__</script>
<script>__SCRIPT__</script>
</body></html>
"""

_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.2em; }
.controls label { margin-right: 1em; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin-top: 0.8em; }
figure { margin: 0; }
figcaption { font-size: 0.8em; max-width: 300px; }
canvas { border: 1px solid #ccc; image-rendering: auto; }
.numbers { font-size: 0.85em; }
.numbers table { border-collapse: collapse; }
.numbers td, .numbers th { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: right; }
.flag { color: #b00; }
.note { font-size: 0.8em; color: #555; max-width: 60em; }
"""

_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const bytes = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
const $ = id => document.getElementById(id);
const H = D.size[0], W = D.size[1];
const RAW = bytes(D.raw);
const LAYERS = D.layers.map(l => ({...l, grad: bytes(l.grad_cam),
  abl: l.ablation_cam ? bytes(l.ablation_cam.data) : null,
  mods: l.module_maps.map(m => ({...m, bytes: bytes(m.data)}))}));
const AFF = D.affinity.map(a => ({...a, bytes: bytes(a.data)}));
const GATES = D.gates.map(g => ({...g, bytes: g.images ? bytes(g.images) : null}));
const state = {image: 0, cls: D.labels[0], depth: 0, view: "cam", method: "grad_cam", click: [Math.floor(H / 2), Math.floor(W / 2)]};

function jet(v) {  // v in [0, 1] -> [r, g, b]
  const c = x => Math.round(255 * Math.max(0, Math.min(1, x)));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}
function diverging(v) {  // v in [-1, 1] -> blue, white, red
  const t = Math.min(1, Math.abs(v)), w = Math.round(255 * (1 - t));
  return v >= 0 ? [255, w, w] : [w, w, 255];
}
function slice(arr, index, size) { return Array.from(arr.subarray(index * size, (index + 1) * size), v => v / 255); }
function resize(map, h, w) {  // bilinear (align_corners=false) to the input size
  const out = new Float64Array(H * W);
  for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
    const y = Math.max(0, Math.min(h - 1, (i + 0.5) * h / H - 0.5)), x = Math.max(0, Math.min(w - 1, (j + 0.5) * w / W - 0.5));
    const y0 = Math.floor(y), x0 = Math.floor(x), y1 = Math.min(h - 1, y0 + 1), x1 = Math.min(w - 1, x0 + 1), fy = y - y0, fx = x - x0;
    out[i * W + j] = (1 - fy) * ((1 - fx) * map[y0 * w + x0] + fx * map[y0 * w + x1]) + fy * ((1 - fx) * map[y1 * w + x0] + fx * map[y1 * w + x1]);
  }
  return out;
}
function normalise(map) {
  let lo = Infinity, hi = -Infinity;
  for (const v of map) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return Array.from(map, v => hi > lo ? (v - lo) / (hi - lo) : 0);
}
function drawImage(canvas) {
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H), c = D.colour;
  for (let p = 0; p < H * W; p++) for (let k = 0; k < 3; k++) img.data[4 * p + k] = RAW[(state.image * H * W + p) * c + (c === 3 ? k : 0)];
  for (let p = 0; p < H * W; p++) img.data[4 * p + 3] = 255;
  blit(canvas, img, W, H, 1, true);
}
function blit(canvas, imageData, w, h, alpha, clear) {
  const off = document.createElement("canvas"); off.width = w; off.height = h;
  off.getContext("2d").putImageData(imageData, 0, 0);
  const ctx = canvas.getContext("2d");
  if (clear) ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = false; ctx.globalAlpha = alpha;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height); ctx.globalAlpha = 1;
}
function overlay(canvas, values, colour) {  // values: H*W at the input size
  const img = new ImageData(W, H);
  values.forEach((v, p) => { const [r, g, b] = colour(v); img.data.set([r, g, b, 255], 4 * p); });
  blit(canvas, img, W, H, 0.55, false);
}
function camMap(layer) {
  if (state.method === "ablation_cam") {
    if (!layer.abl) return null;
    const [h, w] = layer.ablation_cam.res;
    return {name: "ablation_cam@" + (layer.name || "model"), values: resize(slice(layer.abl, state.image, h * w), h, w)};
  }
  const [h, w] = layer.res, k = D.classes.length;
  return {name: "grad_cam@" + (layer.name || "model"), values: resize(slice(layer.grad, state.image * k + state.cls, h * w), h, w)};
}
function moduleMap(layer) {
  if (!layer.mods.length) return null;
  const m = layer.mods[0], [h, w] = m.res;
  return {name: m.name, values: resize(slice(m.bytes, state.image, h * w), h, w)};
}
function marker(canvas, cell, rows, cols, colour) {
  const ctx = canvas.getContext("2d"), sy = canvas.height / rows, sx = canvas.width / cols;
  ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.strokeRect(cell[1] * sx, cell[0] * sy, sx, sy);
}
function faithRow(name) {
  const f = D.faithfulness.maps[name], s = D.sanity.maps[name];
  if (!f) return `<tr><td>${name}</td><td colspan="5">not measured</td></tr>`;
  const i = state.image, fmt = v => v == null ? "-" : v.toFixed(3);
  const sanity = !s ? "-" : s.flagged ? `<span class="flag">flagged (rho ${fmt(s.final)})</span>` : `passed (rho ${fmt(s.final)})`;
  return `<tr><td>${name}</td><td>${fmt(f.deletion)}</td><td>${fmt(f.deletion_images[i])}</td><td>${fmt(f.insertion)}</td><td>${fmt(f.insertion_images[i])}</td><td>${sanity}</td></tr>`;
}
function drawMain() {
  const layer = LAYERS[state.depth], canvas = $("main");
  drawImage(canvas);
  const cam = camMap(layer), mod = moduleMap(layer);
  let caption = "", shown = [];
  if (state.view === "cam") {
    if (cam) { overlay(canvas, normalise(cam.values), jet); shown = [cam.name]; caption = cam.name + " for class " + D.classes[state.cls]; }
    else caption = "Ablation-CAM is computed for the labelled class only";
  } else if (state.view === "module") {
    if (mod) { overlay(canvas, normalise(mod.values), jet); shown = [mod.name]; caption = mod.name; }
    else caption = "the attention at this depth has no map over the positions (it recalibrates channels: see its gate)";
  } else if (cam && mod) {
    const a = normalise(cam.values), b = normalise(mod.values);
    overlay(canvas, a.map((v, p) => v - b[p]), diverging); shown = [cam.name, mod.name];
    caption = "red: CAM higher, blue: module map higher (both scaled to [0, 1])";
  } else caption = "a difference needs both maps at this depth";
  marker(canvas, state.click, H, W, "white");
  $("main-caption").textContent = caption;
  const r = D.faithfulness.random, fmt = v => v == null ? "-" : v.toFixed(3);
  $("faith").innerHTML = "<b>faithfulness</b> (probability of the class as pixels are deleted / inserted in the map's order; deletion low and insertion high are faithful)" +
    "<table><tr><th>map</th><th>deletion AUC</th><th>this image</th><th>insertion AUC</th><th>this image</th><th>randomisation test</th></tr>" +
    shown.map(faithRow).join("") +
    (r ? `<tr><td>random ranking</td><td>${fmt(r.deletion)}</td><td>${fmt(r.deletion_images[state.image])}</td><td>${fmt(r.insertion)}</td><td>${fmt(r.insertion_images[state.image])}</td><td></td></tr>` : "") + "</table>";
}
function drawAffinity() {
  const canvas = $("affinity"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!AFF.length) { $("affinity-caption").textContent = "this model has no non-local block: no position attends to others"; drawImage(canvas); return; }
  const a = AFF[0], [h, w] = a.query, [hk, wk] = a.keys;
  const qy = Math.min(h - 1, Math.floor(state.click[0] * h / H)), qx = Math.min(w - 1, Math.floor(state.click[1] * w / W));
  const q = qy * w + qx, size = hk * wk, row = slice(a.bytes, state.image * h * w + q, size);
  drawImage(canvas); overlay(canvas, normalise(resize(row, hk, wk)), jet);
  marker(canvas, [qy, qx], h, w, "white");
  $("affinity-caption").textContent = `${a.module}: weights the position (${qy}, ${qx}) gives to every position (input-dependent, everywhere)`;
}
function drawWindow() {
  const canvas = $("window"), layer = LAYERS[state.depth], [h, w] = layer.res;
  drawImage(canvas);
  const cy = Math.min(h - 1, Math.floor(state.click[0] * h / H)), cx = Math.min(w - 1, Math.floor(state.click[1] * w / W));
  const ctx = canvas.getContext("2d"), sy = canvas.height / h, sx = canvas.width / w;
  ctx.fillStyle = "rgba(255, 200, 0, 0.45)";
  ctx.fillRect((cx - 1) * sx, (cy - 1) * sy, 3 * sx, 3 * sy);
  marker(canvas, [cy, cx], h, w, "white");
  $("window-caption").textContent = `3x3 convolution at ${layer.name} (${h}x${w}): the same fixed window and weights at every position, for every image`;
}
function gateFor(layer) {
  return GATES.find(g => layer.modules.some(m => g.module === m || g.module.startsWith(m + "."))) || null;
}
function axes(ctx, canvas) { ctx.clearRect(0, 0, canvas.width, canvas.height); ctx.strokeStyle = "#888"; ctx.strokeRect(0.5, 0.5, canvas.width - 1, canvas.height - 1); }
function drawGates() {
  const layer = LAYERS[state.depth], g = gateFor(layer), canvas = $("gate"), ctx = canvas.getContext("2d");
  const lines = $("class-gates"), lctx = lines.getContext("2d");
  axes(ctx, canvas); axes(lctx, lines);
  if (!g) {
    $("gate-caption").textContent = "no channel gate at this depth";
    $("class-gates-caption").textContent = "";
    return;
  }
  const c = g.channels, bw = canvas.width / c, span = g.high - g.low || 1;
  const values = g.bytes ? slice(g.bytes, state.image, c).map(v => g.low + v * span) : Array(c).fill(g.low);
  ctx.fillStyle = "#3a6ea5";
  values.forEach((v, k) => { const t = (v - g.low) / span; ctx.fillRect(k * bw, canvas.height * (1 - t), Math.max(1, bw - 1), canvas.height * t); });
  const spatial = moduleMap(layer);
  const at = spatial ? `; the module's map at the clicked position: ${spatial.values[state.click[0] * W + state.click[1]].toFixed(2)} of its range` : "";
  $("gate-caption").textContent = `${g.module} ${g.signal}: gate per channel for this image (${g.low.toFixed(2)} to ${g.high.toFixed(2)}), the same at every position${at}`;
  const k = D.classes.length;
  g.class_means.forEach((m, cls) => {
    if (!m) return;
    lctx.strokeStyle = cls === state.cls ? "#d00" : "rgba(0, 0, 0, 0.25)"; lctx.lineWidth = cls === state.cls ? 2 : 1;
    lctx.beginPath();
    m.forEach((v, j) => { const x = (j + 0.5) * lines.width / c, y = lines.height * (1 - (v - g.low) / span); j ? lctx.lineTo(x, y) : lctx.moveTo(x, y); });
    lctx.stroke();
  });
  const spec = g.specificity == null ? "undefined" : g.specificity.toFixed(3);
  $("class-gates-caption").textContent = `mean gate per class (red: ${D.classes[state.cls]}); class specificity ${spec} (0: the same for every class, 1: fixed by the class)`;
}
function draw() {
  const layer = LAYERS[state.depth];
  $("depth-name").textContent = `${state.depth + 1}/${LAYERS.length}: ${layer.name}` + (layer.modules.length ? ` (after ${layer.modules.join(", ")})` : " (last stage)");
  drawMain(); drawAffinity(); drawWindow(); drawGates();
}
function setup() {
  D.labels.forEach((label, i) => $("image").add(new Option(`${i}: ${D.classes[label]} (predicted ${D.classes[D.predictions[i]]})`, i)));
  D.classes.forEach((name, k) => $("class").add(new Option(name, k)));
  $("class").value = state.cls;
  $("depth").max = LAYERS.length - 1;
  $("image").onchange = e => { state.image = +e.target.value; state.cls = D.labels[state.image]; $("class").value = state.cls; draw(); };
  $("class").onchange = e => { state.cls = +e.target.value; draw(); };
  $("depth").oninput = e => { state.depth = +e.target.value; draw(); };
  $("method").onchange = e => { state.method = e.target.value; draw(); };
  document.querySelectorAll("input[name=view]").forEach(r => r.onchange = e => { state.view = e.target.value; draw(); });
  $("main").onclick = e => {
    const box = e.target.getBoundingClientRect();
    state.click = [Math.min(H - 1, Math.floor((e.clientY - box.top) / box.height * H)), Math.min(W - 1, Math.floor((e.clientX - box.left) / box.width * W))];
    draw();
  };
  draw();
}
setup();
"""

__all__ = ["EXPLORER", "explorer_data", "render_explorer", "write_explorer"]
