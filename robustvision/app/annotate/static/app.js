// robustvision annotate: the page only draws and forwards input; every rule lives in the server's controller.
"use strict";

const $ = (sel) => document.querySelector(sel);
const clientId = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random())).slice(0, 32);
const canvas = $("#canvas");
const ctx = canvas.getContext("2d");

const state = {
  images: [], labels: [], backends: [], backend: null,
  image: null, imageEl: null, width: 0, height: 0,
  objects: [], clicks: [], maskEl: null, maskVersion: 0,
  label: null, editMode: false, selected: null, dragVertex: null, hoverVertex: null,
  view: { scale: 1, ox: 0, oy: 0 }, pan: null, busy: false,
};
window.rvState = state; // read by the end-to-end test
// The server's per-launch token: every state-changing request echoes it, which a page of another site cannot do.
const token = (document.querySelector('meta[name="rv-token"]') || {}).content || "";

async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (method !== "GET") opts.headers["X-RV-Token"] = token;
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(url, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : res.statusText);
  return data;
}

function setStatus(text, isError) {
  const el = $("#status");
  el.textContent = text;
  el.style.color = isError ? "#ff8a8a" : "";
}

function hex(rgb) { return "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join(""); }
function rgba(rgb, a) { return `rgba(${rgb[0]},${rgb[1]},${rgb[2]},${a})`; }
function labelOf(index) { return state.labels.find((l) => l.index === index) || { index, name: "class" + index, color: [230, 25, 75] }; }

// ---------------------------------------------------------------- side panels
function renderImages() {
  const ul = $("#images");
  ul.innerHTML = "";
  let done = 0;
  for (const rec of state.images) {
    if (rec.status === "done") done++;
    const li = document.createElement("li");
    li.dataset.name = rec.name;
    li.className = rec.name === state.image ? "active" : "";
    const text = { unlabelled: "unlabelled", in_progress: "in progress", done: "done", error: "error" }[rec.status];
    li.innerHTML = `<span class="name"></span><span class="badge ${rec.status}">${text}</span>`;
    li.querySelector(".name").textContent = rec.name;
    if (rec.error) li.title = rec.error;
    li.addEventListener("click", () => rec.status === "error" ? setStatus(`${rec.name}: ${rec.error}`, true) : openImage(rec.name));
    ul.appendChild(li);
  }
  $("#progress").textContent = `${done}/${state.images.length} done`;
}

function renderLabels() {
  const ul = $("#labels");
  ul.innerHTML = "";
  state.labels.forEach((lb, i) => {
    const li = document.createElement("li");
    li.className = lb.index === state.label ? "active" : "";
    li.innerHTML = `<span class="swatch"></span><span class="name"></span><span class="key">${i < 9 ? i + 1 : ""}</span>`;
    li.querySelector(".swatch").style.background = hex(lb.color);
    li.querySelector(".name").textContent = `${lb.index} ${lb.name}`;
    li.addEventListener("click", () => chooseLabel(lb.index));
    ul.appendChild(li);
  });
}

function renderBackends() {
  const sel = $("#backend");
  sel.innerHTML = "";
  for (const b of state.backends) {
    const opt = document.createElement("option");
    opt.value = b; opt.textContent = b; opt.selected = b === state.backend;
    sel.appendChild(opt);
  }
}

async function refreshImages() { state.images = await api("GET", "/api/images"); renderImages(); }

async function chooseLabel(index) {
  state.label = index;
  renderLabels();
  if (state.selected) {
    const obj = state.objects.find((o) => o.id === state.selected);
    if (obj) await saveObject({ ...obj, label: index });
  }
}

// ---------------------------------------------------------------- image and view
function fitView() {
  if (!state.imageEl) return;
  const r = canvas.getBoundingClientRect();
  const s = Math.min(r.width / state.width, r.height / state.height) * 0.95;
  state.view = { scale: s, ox: (r.width - state.width * s) / 2, oy: (r.height - state.height * s) / 2 };
  draw();
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: (ev.clientX - r.left - state.view.ox) / state.view.scale, y: (ev.clientY - r.top - state.view.oy) / state.view.scale };
}

function loadImg(src) {
  return new Promise((resolve, reject) => { const im = new Image(); im.onload = () => resolve(im); im.onerror = reject; im.src = src; });
}

async function openImage(name) {
  if (state.busy) return;
  state.busy = true;
  setStatus(`opening ${name}...`);
  try {
    const data = await api("POST", "/api/session/open", { client: clientId, image: name });
    state.imageEl = await loadImg(`/api/images/${encodeURIComponent(name)}/file`);
    state.image = name; state.width = data.width; state.height = data.height;
    state.objects = data.annotation.objects; state.backend = data.backend; state.selected = null;
    applyMask(data);
    $("#empty").hidden = true;
    renderImages(); renderBackends();
    fitView();
    setStatus(`${name}: ${data.width}x${data.height}, ${state.objects.length} object(s)`);
  } catch (err) { setStatus(err.message, true); }
  finally { state.busy = false; }
}

async function applyMask(data) {
  state.clicks = data.clicks || [];
  $("#btn-undo").disabled = !data.can_undo;
  $("#btn-redo").disabled = !data.can_redo;
  state.maskEl = data.mask ? await loadImg(data.mask) : null;
  state.maskVersion++;
  canvas.dataset.maskVersion = String(state.maskVersion);
  draw();
}

// ---------------------------------------------------------------- drawing
const tint = document.createElement("canvas");
function draw() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(r.width * dpr)) { canvas.width = Math.round(r.width * dpr); canvas.height = Math.round(r.height * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, r.width, r.height);
  canvas.dataset.objects = String(state.objects.length);
  if (!state.imageEl) return;
  const v = state.view;
  ctx.save();
  ctx.translate(v.ox, v.oy); ctx.scale(v.scale, v.scale);
  ctx.imageSmoothingEnabled = v.scale < 2;
  ctx.drawImage(state.imageEl, 0, 0);
  for (const obj of state.objects) {
    const lb = labelOf(obj.label);
    const sel = obj.id === state.selected;
    for (const poly of obj.polygons) {
      ctx.beginPath();
      poly.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
      ctx.fillStyle = rgba(lb.color, sel ? 0.45 : 0.3); ctx.fill();
      ctx.lineWidth = (sel ? 2.5 : 1.5) / v.scale; ctx.strokeStyle = rgba(lb.color, 1); ctx.stroke();
    }
    if (sel && state.editMode) {
      obj.polygons.forEach((poly, pi) => poly.forEach(([x, y], vi) => {
        const hot = state.hoverVertex && state.hoverVertex.p === pi && state.hoverVertex.v === vi;
        ctx.fillStyle = hot ? "#ffeb3b" : "#ffffff";
        ctx.fillRect(x - 4 / v.scale, y - 4 / v.scale, 8 / v.scale, 8 / v.scale);
      }));
    }
  }
  if (state.maskEl) {
    tint.width = state.width; tint.height = state.height;
    const t = tint.getContext("2d");
    t.clearRect(0, 0, tint.width, tint.height);
    t.drawImage(state.maskEl, 0, 0);
    // The mask PNG is white on black: keep the white part, coloured in the active label's colour.
    const img = t.getImageData(0, 0, tint.width, tint.height);
    const col = state.label !== null ? labelOf(state.label).color : [79, 140, 255];
    for (let i = 0; i < img.data.length; i += 4) {
      const on = img.data[i] > 127;
      img.data[i] = col[0]; img.data[i + 1] = col[1]; img.data[i + 2] = col[2]; img.data[i + 3] = on ? 130 : 0;
    }
    t.putImageData(img, 0, 0);
    ctx.drawImage(tint, 0, 0);
  }
  for (const c of state.clicks) {
    ctx.beginPath();
    ctx.arc(c.x + 0.5, c.y + 0.5, 5 / v.scale, 0, 2 * Math.PI);
    ctx.fillStyle = c.is_positive ? "#22c55e" : "#ef4444"; ctx.fill();
    ctx.lineWidth = 1.5 / v.scale; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
  ctx.restore();
}

// ---------------------------------------------------------------- clicks and objects
async function sendClick(x, y, positive) {
  if (!state.image || state.busy) return;
  if (x < 0 || y < 0 || x >= state.width || y >= state.height) return;
  state.busy = true;
  try {
    const t0 = performance.now();
    const data = await api("POST", "/api/session/click", { client: clientId, x: Math.floor(x), y: Math.floor(y), positive });
    await applyMask(data);
    setStatus(`mask updated: ${data.clicks.length} click(s), model ${data.latency_ms} ms, round trip ${Math.round(performance.now() - t0)} ms`);
  } catch (err) { setStatus(err.message, true); }
  finally { state.busy = false; }
}

async function sessionCall(path) {
  if (!state.image) return;
  try { await applyMask(await api("POST", `/api/session/${path}`, { client: clientId })); } catch (err) { setStatus(err.message, true); }
}

async function finishObject() {
  if (!state.image || !state.clicks.length) { setStatus("click on an object first"); return; }
  if (state.label === null) { setStatus("add or choose a label first", true); return; }
  try {
    const data = await api("POST", "/api/session/finish", { client: clientId, label: state.label });
    state.objects = state.objects.filter((o) => o.id !== data.object.id).concat([data.object]);
    await applyMask(data);
    await refreshImages();
    setStatus(`saved object ${data.object.id} (${labelOf(data.object.label).name})`);
  } catch (err) { setStatus(err.message, true); }
}

async function saveObject(obj) {
  try {
    const saved = await api("PUT", `/api/images/${encodeURIComponent(state.image)}/objects/${obj.id}`, { label: obj.label, polygons: obj.polygons });
    state.objects = state.objects.map((o) => (o.id === saved.id ? saved : o));
    draw();
    setStatus(`saved object ${saved.id}`);
  } catch (err) { setStatus(err.message, true); }
}

async function deleteSelected() {
  if (!state.selected) return;
  try {
    await api("DELETE", `/api/images/${encodeURIComponent(state.image)}/objects/${state.selected}`);
    state.objects = state.objects.filter((o) => o.id !== state.selected);
    state.selected = null;
    draw(); await refreshImages();
    setStatus("object deleted");
  } catch (err) { setStatus(err.message, true); }
}

function pointInPoly(p, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > p.y) !== (yj > p.y) && p.x < ((xj - xi) * (p.y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function findVertex(p) {
  const obj = state.objects.find((o) => o.id === state.selected);
  if (!obj) return null;
  const tol = 7 / state.view.scale;
  for (let pi = 0; pi < obj.polygons.length; pi++)
    for (let vi = 0; vi < obj.polygons[pi].length; vi++) {
      const [x, y] = obj.polygons[pi][vi];
      if (Math.abs(x - p.x) < tol && Math.abs(y - p.y) < tol) return { obj, p: pi, v: vi };
    }
  return null;
}

function findEdge(p) {
  const obj = state.objects.find((o) => o.id === state.selected);
  if (!obj) return null;
  const tol = 6 / state.view.scale;
  for (let pi = 0; pi < obj.polygons.length; pi++) {
    const poly = obj.polygons[pi];
    for (let i = 0; i < poly.length; i++) {
      const [ax, ay] = poly[i], [bx, by] = poly[(i + 1) % poly.length];
      const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy || 1;
      const t = Math.max(0, Math.min(1, ((p.x - ax) * dx + (p.y - ay) * dy) / len2));
      if (Math.hypot(ax + t * dx - p.x, ay + t * dy - p.y) < tol) return { obj, p: pi, after: i };
    }
  }
  return null;
}

// ---------------------------------------------------------------- input
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!state.image) return;
  const p = toImage(ev);
  if (ev.button === 1 || (ev.button === 0 && ev.shiftKey)) {
    state.pan = { x: ev.clientX, y: ev.clientY, ox: state.view.ox, oy: state.view.oy };
    canvas.classList.add("panning");
    return;
  }
  if (state.editMode) {
    const hit = findVertex(p);
    if (hit && ev.button === 0 && ev.altKey) {
      if (hit.obj.polygons[hit.p].length > 3) { hit.obj.polygons[hit.p].splice(hit.v, 1); saveObject(hit.obj); }
      return;
    }
    if (hit && ev.button === 0) { state.dragVertex = hit; return; }
    const obj = [...state.objects].reverse().find((o) => o.polygons.some((poly) => pointInPoly(p, poly)));
    state.selected = obj ? obj.id : null;
    draw();
    return;
  }
  if (ev.button === 0 || ev.button === 2) sendClick(p.x, p.y, ev.button === 0);
});
canvas.addEventListener("dblclick", (ev) => {
  if (!state.editMode) return;
  const p = toImage(ev);
  const edge = findEdge(p);
  if (edge) { edge.obj.polygons[edge.p].splice(edge.after + 1, 0, [p.x, p.y]); saveObject(edge.obj); }
});
window.addEventListener("mousemove", (ev) => {
  if (state.pan) {
    state.view.ox = state.pan.ox + ev.clientX - state.pan.x; state.view.oy = state.pan.oy + ev.clientY - state.pan.y;
    draw(); return;
  }
  if (!state.editMode || !state.image) return;
  const p = toImage(ev);
  if (state.dragVertex) {
    const d = state.dragVertex;
    d.obj.polygons[d.p][d.v] = [Math.max(0, Math.min(state.width - 1, p.x)), Math.max(0, Math.min(state.height - 1, p.y))];
    draw(); return;
  }
  const hv = findVertex(p);
  const key = hv ? `${hv.p}:${hv.v}` : null;
  if (key !== (state.hoverVertex ? `${state.hoverVertex.p}:${state.hoverVertex.v}` : null)) { state.hoverVertex = hv; draw(); }
});
window.addEventListener("mouseup", () => {
  if (state.pan) { state.pan = null; canvas.classList.remove("panning"); }
  if (state.dragVertex) { const obj = state.dragVertex.obj; state.dragVertex = null; saveObject(obj); }
});
canvas.addEventListener("wheel", (ev) => {
  if (!state.image) return;
  ev.preventDefault();
  const r = canvas.getBoundingClientRect();
  const mx = ev.clientX - r.left, my = ev.clientY - r.top;
  const f = Math.exp(-ev.deltaY * 0.0015);
  const v = state.view;
  const s = Math.max(0.05, Math.min(40, v.scale * f));
  v.ox = mx - ((mx - v.ox) * s) / v.scale; v.oy = my - ((my - v.oy) * s) / v.scale; v.scale = s;
  draw();
}, { passive: false });
window.addEventListener("resize", () => draw());

function setEditMode(on) {
  state.editMode = on;
  $("#btn-edit").classList.toggle("on", on);
  canvas.classList.toggle("edit", on);
  if (!on) state.selected = null;
  draw();
}

function step(delta) {
  const names = state.images.filter((r) => r.status !== "error").map((r) => r.name);
  if (!names.length) return;
  const i = names.indexOf(state.image);
  openImage(names[(i + delta + names.length) % names.length]);
}

async function toggleDone() {
  if (!state.image) return;
  const rec = state.images.find((r) => r.name === state.image);
  try { await api("POST", `/api/images/${encodeURIComponent(state.image)}/done`, { done: !(rec && rec.status === "done") }); await refreshImages(); }
  catch (err) { setStatus(err.message, true); }
}

window.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  const k = ev.key.toLowerCase();
  if ((ev.ctrlKey || ev.metaKey) && k === "z") { ev.preventDefault(); sessionCall(ev.shiftKey ? "redo" : "undo"); }
  else if ((ev.ctrlKey || ev.metaKey) && k === "y") { ev.preventDefault(); sessionCall("redo"); }
  else if (ev.key === " ") { ev.preventDefault(); finishObject(); }
  else if (ev.key === "Escape") { sessionCall("reset"); }
  else if (ev.key === "Delete" || ev.key === "Backspace") { deleteSelected(); }
  else if (/^[1-9]$/.test(ev.key)) { const lb = state.labels[Number(ev.key) - 1]; if (lb) chooseLabel(lb.index); }
  else if (k === "e") setEditMode(!state.editMode);
  else if (k === "f") fitView();
  else if (k === "n") step(1);
  else if (k === "p") step(-1);
  else if (k === "d") toggleDone();
  else if (ev.key === "?") $("#help").hidden = !$("#help").hidden;
});

$("#btn-undo").onclick = () => sessionCall("undo");
$("#btn-redo").onclick = () => sessionCall("redo");
$("#btn-finish").onclick = finishObject;
$("#btn-edit").onclick = () => setEditMode(!state.editMode);
$("#btn-fit").onclick = fitView;
$("#btn-done").onclick = toggleDone;
$("#btn-help").onclick = () => ($("#help").hidden = !$("#help").hidden);
$("#help-close").onclick = () => ($("#help").hidden = true);
$("#backend").onchange = async (ev) => {
  try { const data = await api("POST", "/api/session/backend", { client: clientId, backend: ev.target.value }); state.backend = data.backend; await applyMask(data); setStatus(`backend: ${data.backend}`); }
  catch (err) { setStatus(err.message, true); renderBackends(); }
};
document.querySelectorAll("[data-export]").forEach((btn) => {
  btn.onclick = async () => {
    try { const data = await api("POST", "/api/export", { format: btn.dataset.export }); $("#export-result").textContent = `written: ${data.path}`; setStatus(`exported ${data.format}`); }
    catch (err) { setStatus(err.message, true); }
  };
});
$("#label-form").onsubmit = async (ev) => {
  ev.preventDefault();
  const name = $("#label-name").value.trim();
  const c = $("#label-color").value;
  const color = [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
  const index = state.labels.reduce((m, l) => Math.max(m, l.index), 0) + 1;
  try {
    state.labels = await api("PUT", "/api/labels", { labels: [...state.labels, { index, name, color }] });
    $("#label-name").value = "";
    if (state.label === null) state.label = index;
    renderLabels();
  } catch (err) { setStatus(err.message, true); }
};
$("#upload").onchange = async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const fd = new FormData(); fd.append("file", file);
  try { const data = await api("POST", "/api/upload", fd); await refreshImages(); openImage(data.image); }
  catch (err) { setStatus(err.message, true); }
  ev.target.value = "";
};

(async function init() {
  try {
    const s = await api("GET", "/api/state");
    state.images = s.images; state.labels = s.labels; state.backends = s.backends; state.backend = s.default_backend;
    state.label = s.labels.length ? s.labels[0].index : null;
    $("#folder").textContent = s.folder;
    renderImages(); renderLabels(); renderBackends();
    setStatus("ready");
    document.body.dataset.ready = "1";
  } catch (err) { setStatus(err.message, true); }
})();
