// fer8's web page: upload a photo to /v1/predict, draw the faces, show each class's bar.
"use strict";

const EXPRESSIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised", "worry"];
const $ = (id) => document.getElementById(id);

// Same colours as fer8.annotate.label_color, so the page matches `fer8 predict --annotate`.
function labelColor(label) {
  let index = EXPRESSIONS.indexOf(label);
  if (index < 0) index = [...label].reduce((sum, ch) => sum + ch.charCodeAt(0), 0);
  const h = (index * 0.13) % 1, s = 0.85, v = 0.95;
  const i = Math.floor(h * 6), f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return [Math.trunc(r * 255), Math.trunc(g * 255), Math.trunc(b * 255)];
}

const css = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

// Dark text on light label colours, white on dark ones (as fer8.annotate does).
const textColor = ([r, g, b]) => (0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff");

const displayName = (label) => label.charAt(0).toUpperCase() + label.slice(1);
const percent = (p) => `${Math.round(p * 100)}%`;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// With API keys on (fer8 serve --api-key-file), /v1/* answers 401 without a key and 403
// with a wrong one: the page then asks for the key, once, and keeps it in this tab's
// session storage (gone when the tab closes; never in a cookie, so no other site's page
// can make the browser send it).
const KEY_STORAGE = "fer8-api-key";

let keyAsked = null;  // one question at a time, whichever requests are waiting for it

function askForKey(refused) {
  const form = $("key-form");
  $("key-error").hidden = !refused;
  form.hidden = false;
  $("key").focus();
  keyAsked ??= new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) return;
      form.hidden = true;
      $("key").value = "";
      keyAsked = null;
      resolve(key);
    };
  });
  return keyAsked;
}

async function apiFetch(url, options = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = new Headers(options.headers || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(url, { ...options, headers });
    if (response.status !== 401 && response.status !== 403) return response;
    if (response.status === 403) sessionStorage.removeItem(KEY_STORAGE);
    sessionStorage.setItem(KEY_STORAGE, await askForKey(response.status === 403));
  }
}

async function showModel() {
  try {
    const model = await (await apiFetch("/v1/models")).json();
    $("model").textContent = `Model ${model.name} (${model.backbone}, ${model.input_size}px): `
      + model.labels.map(displayName).join(", ");
  } catch (error) {
    $("model").textContent = "";
  }
}

// Photos smaller than this (shorter side) are drawn enlarged, so labels stay legible
// (as fer8.annotate does for `fer8 predict --annotate`).
const MIN_CANVAS = 320;

function drawFaces(bitmap, faces) {
  const canvas = $("canvas");
  const zoom = Math.max(1, MIN_CANVAS / Math.min(bitmap.width, bitmap.height));
  canvas.width = Math.round(bitmap.width * zoom);
  canvas.height = Math.round(bitmap.height * zoom);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const unit = Math.max(canvas.width, canvas.height) / 1000;
  ctx.lineWidth = Math.max(2, 3 * unit);
  ctx.textBaseline = "top";
  faces.forEach((face, index) => {
    const [x, y, w, h] = face.box.map((v) => v * zoom);
    const color = labelColor(face.label);
    ctx.strokeStyle = css(color);
    ctx.strokeRect(x, y, w, h);
    const text = `${index + 1}. ${displayName(face.label)} ${percent(face.confidence)}`;
    const pad = 4 * Math.max(1, unit);
    // A label wider than the picture gets a smaller font; then it is kept inside the
    // canvas, moved left from the box's edge where the box is near the right side.
    let size = Math.max(12, Math.round(26 * unit));
    ctx.font = `600 ${size}px system-ui, sans-serif`;
    while (size > 8 && ctx.measureText(text).width + 2 * pad > canvas.width) {
      size -= 1;
      ctx.font = `600 ${size}px system-ui, sans-serif`;
    }
    const height = size + 2 * pad;
    const width = ctx.measureText(text).width + 2 * pad;
    const left = Math.max(0, Math.min(x, canvas.width - width));
    const top = y - height >= 0 ? y - height : y;
    ctx.fillStyle = css(color);
    ctx.fillRect(left, top, width, height);
    ctx.fillStyle = textColor(color);
    ctx.fillText(text, left + pad, top + pad);
  });
}

function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren();
  if (faces.length === 0) {
    setStatus("No face found. Try a clear, front-facing photo.");
  }
  faces.forEach((face) => {
    const item = document.createElement("li");
    item.className = "face";
    const title = document.createElement("h2");
    title.innerHTML = `<span class="label"></span> <span class="confidence"></span>`;
    title.querySelector(".label").textContent = displayName(face.label);
    title.querySelector(".confidence").textContent = percent(face.confidence);
    item.append(title);
    const ranked = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
    for (const [label, probability] of ranked) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.label = label;
      bar.innerHTML = `<span></span><span class="track"><span class="fill"></span></span>`
        + `<span class="value"></span>`;
      bar.children[0].textContent = displayName(label);
      bar.querySelector(".fill").style.width = `${(probability * 100).toFixed(1)}%`;
      bar.querySelector(".fill").style.background = css(labelColor(label));
      bar.querySelector(".value").textContent = percent(probability);
      item.append(bar);
    }
    list.append(item);
  });
}

async function analyse(file) {
  if (!file) return;
  setStatus(`Analysing ${file.name}…`);
  $("result").hidden = true;
  document.body.dataset.state = "busy";
  const form = new FormData();
  form.append("file", file, file.name);
  let response, data;
  try {
    response = await apiFetch("/v1/predict", { method: "POST", body: form });
    data = await response.json();
  } catch (error) {
    setStatus(`The server did not answer: ${error}`, true);
    document.body.dataset.state = "error";
    return;
  }
  if (!response.ok) {
    setStatus(data.detail || `Error ${response.status}`, true);
    document.body.dataset.state = "error";
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);  // applies EXIF orientation, like the server
  } catch (error) {
    setStatus("The browser cannot display this image format.", true);
    document.body.dataset.state = "error";
    return;
  }
  drawFaces(bitmap, data.faces);
  listFaces(data.faces);
  $("result").hidden = false;
  if (data.faces.length) {
    setStatus(`${data.faces.length} face${data.faces.length > 1 ? "s" : ""} in ${file.name}`);
  }
  document.body.dataset.state = "done";
}

$("file").addEventListener("change", (event) => analyse(event.target.files[0]));
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  analyse(event.dataTransfer.files[0]);
});
showModel();
