// fer8's web page: a photo, a video or the webcam goes to /v1/predict; the page draws the
// faces, each class's bar, each face's timeline, and on a click the face's heatmap.
// No framework and no build step: this file is served as it is, from the package.
"use strict";

const EXPRESSIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised", "worry"];
const $ = (id) => document.getElementById(id);

// Same colours as fer8.annotate.label_color, so the page matches `fer8 predict --annotate`:
// Okabe & Ito's colour-blind-safe palette, plus a dark grey.
const COLORS = {
  angry: [213, 94, 0], disgusted: [0, 158, 115], fearful: [204, 121, 167], happy: [230, 159, 0],
  neutral: [90, 90, 90], sad: [0, 114, 178], surprised: [86, 180, 233], worry: [240, 228, 66],
};
function labelColor(label) {
  if (Object.hasOwn(COLORS, label)) return COLORS[label];
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
// As fer8.labels.percent: one decimal, the same as the table, drawn labels and the bot.
const percent = (p) => `${(p * 100).toFixed(1)}%`;
// n of total in whole percent; "<1%" for a few samples that would round to nothing.
const share = (n, total) => {
  const rounded = Math.round((100 * n) / total);
  return rounded === 0 && n > 0 ? "<1%" : `${rounded}%`;
};

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

// Pictures smaller than this (shorter side) are drawn enlarged, so labels stay legible
// (as fer8.annotate does for `fer8 predict --annotate`).
const MIN_CANVAS = 320;
const FRAME_WAIT_MS = 250;  // the longest wait for a sought video frame to be presented

// What the canvas shows: a picture (a bitmap, or the video or camera element), its
// size in the pixels the boxes are in, its faces, and the heatmap shown, if any.
const view = {
  kind: null, source: null, width: 0, height: 0, faces: [], zoom: 1,
  upload: null,        // () => Promise<Blob>: the picture as sent, for ?explain=true
  explained: null,     // the faces with their explanations, once asked
  heat: null,          // {index, bitmap, box}: the heatmap drawn over face `index`
};

function sizeCanvas(width, height) {
  const canvas = $("canvas");
  view.zoom = Math.max(1, MIN_CANVAS / Math.min(width, height));
  const w = Math.round(width * view.zoom), h = Math.round(height * view.zoom);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
}

function render() {
  const canvas = $("canvas");
  sizeCanvas(view.width, view.height);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (view.source) ctx.drawImage(view.source, 0, 0, canvas.width, canvas.height);
  const zoom = view.zoom;
  if (view.heat) {
    const [x, y, w, h] = view.heat.box.map((v) => v * zoom);
    ctx.drawImage(view.heat.bitmap, x, y, w, h);
  }
  const unit = Math.max(canvas.width, canvas.height) / 1000;
  ctx.lineWidth = Math.max(2, 3 * unit);
  ctx.textBaseline = "top";
  view.faces.forEach((face, index) => {
    const [x, y, w, h] = face.box.map((v) => v * zoom);
    const color = labelColor(face.label);
    ctx.strokeStyle = css(color);
    ctx.strokeRect(x, y, w, h);
    const text = `${faceNumber(face, index)}. ${displayName(face.label)} ${percent(face.confidence)}`;
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

// A video's faces keep the server's track number; a camera's get one here (see Tracker).
const faceNumber = (face, index) => face.track ?? index + 1;

function show(kind, source, width, height, faces, upload) {
  if (view.kind !== kind || view.upload !== upload) view.explained = null;
  Object.assign(view, { kind, source, width, height, faces, upload, heat: null });
  render();
  listFaces(faces);
}

function listFaces(faces) {
  const list = $("faces");
  // The camera's list changes several times a second: while the same faces stay, their
  // items are updated in place, so a button keeps the keyboard's focus and a click.
  const items = [...list.children];
  if (view.kind === "camera" && items.length === faces.length
      && faces.every((face, i) => items[i].value === faceNumber(face, i))) {
    faces.forEach((face, i) => updateFace(items[i], face, i));
    return;
  }
  list.replaceChildren();
  faces.forEach((face, index) => {
    const item = document.createElement("li");
    item.className = "face";
    item.value = faceNumber(face, index);
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
    if (view.upload) {
      const why = document.createElement("button");
      why.type = "button";
      why.className = "why";
      why.textContent = view.heat?.index === index ? "Hide the heatmap" : "Why? Show the heatmap";
      why.setAttribute("aria-pressed", String(view.heat?.index === index));
      why.addEventListener("click", () => toggleHeat(index));
      item.append(why);
    }
    list.append(item);
  });
}

function updateFace(item, face, index) {
  item.querySelector(".label").textContent = displayName(face.label);
  item.querySelector(".confidence").textContent = percent(face.confidence);
  const ranked = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
  item.querySelectorAll(".bar").forEach((bar, i) => {
    const [label, probability] = ranked[i];
    bar.dataset.label = label;
    bar.children[0].textContent = displayName(label);
    bar.querySelector(".fill").style.width = `${(probability * 100).toFixed(1)}%`;
    bar.querySelector(".fill").style.background = css(labelColor(label));
    bar.querySelector(".value").textContent = percent(probability);
  });
  item.querySelector(".why")?.setAttribute("aria-pressed", String(view.heat?.index === index));
}

// --- Explanations: ?explain=true on the picture shown, the heatmap over the face ------

const overlap = (a, b) => {
  const w = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
  const h = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
  if (w <= 0 || h <= 0) return 0;
  return (w * h) / (a[2] * a[3] + b[2] * b[3] - w * h);
};

async function explainedFaces() {
  if (view.explained) return view.explained;
  const upload = view.upload;
  const blob = await upload();
  const form = new FormData();
  form.append("file", blob, blob.name || "picture.png");
  const response = await apiFetch("/v1/predict?explain=true", { method: "POST", body: form });
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || `Error ${response.status}`);
  if (view.upload === upload) view.explained = data.faces;
  return data.faces;
}

async function toggleHeat(index) {
  if (view.heat?.index === index) {
    hideHeat();
    return;
  }
  const face = view.faces[index];
  if (view.kind === "camera") {
    // The live picture stops at the frame these faces were found in, the one explained.
    camera.pause();
    const blob = camera.latest.blob;
    view.upload = async () => blob;
    view.explained = null;
    view.source = await createImageBitmap(blob);
    render();
  }
  setStatus(`Finding where the evidence for ${displayName(face.label)} lies…`);
  document.body.dataset.heat = "busy";
  try {
    // The same picture, asked again with its explanations: its face with the same box.
    const faces = await explainedFaces();
    const match = faces.filter((f) => f.explanation)
      .map((f) => [overlap(f.box, face.box), f]).sort((a, b) => b[0] - a[0])[0];
    if (!match || match[0] < 0.3) throw new Error("this face was not found again");
    const { png, box, label } = match[1].explanation;
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
    if (view.faces[index] !== face) return;  // the picture changed meanwhile
    view.heat = { index, bitmap, box };
    render();
    listFaces(view.faces);
    setStatus(`Face ${faceNumber(face, index)}: the heatmap shows where the evidence for `
      + `${displayName(label)} lies (stronger colour, more evidence). Esc hides it`
      + `${view.kind === "camera" ? " and goes back to the live picture" : ""}.`);
    document.body.dataset.heat = "shown";
  } catch (error) {
    setStatus(`No heatmap: ${error.message}`, true);
    document.body.dataset.heat = "error";
  }
}

function hideHeat() {
  if (!view.heat) return;
  view.heat = null;
  render();
  listFaces(view.faces);
  document.body.dataset.heat = "hidden";
  if (view.kind === "camera") camera.resume();
}

$("canvas").addEventListener("click", (event) => {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width) / view.zoom;
  const y = (event.clientY - rect.top) * (canvas.height / rect.height) / view.zoom;
  const hit = view.faces.findIndex((f) => x >= f.box[0] && x <= f.box[0] + f.box[2]
    && y >= f.box[1] && y <= f.box[1] + f.box[3]);
  if (hit >= 0 && view.upload) toggleHeat(hit);
  else hideHeat();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") hideHeat();
});

// --- Timelines: a strip per face, its label's colour, as tall as its confidence ------

const TIMELINE_HEIGHT = 40;

function timelineRow(id, title) {
  let row = document.getElementById(`timeline-${id}`);
  if (!row) {
    row = document.createElement("figure");
    row.className = "timeline";
    row.id = `timeline-${id}`;
    row.innerHTML = `<figcaption></figcaption><canvas height="${TIMELINE_HEIGHT}"></canvas>`;
    $("timelines").append(row);
  }
  row.querySelector("figcaption").textContent = title;
  return row;
}

// samples: [{time, label, confidence}] in time order, drawn between start and end (s),
// each as wide as the time to the next one, up to `step` (a face out of view leaves a gap).
function drawTimeline(row, samples, start, end, step, cursor = null) {
  const canvas = row.querySelector("canvas");
  canvas.width = Math.max(200, Math.round(canvas.clientWidth || 600));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const span = Math.max(end - start, 1e-6);
  const at = (t) => ((t - start) / span) * canvas.width;
  samples.forEach((sample, i) => {
    const next = samples[i + 1];
    const gap = next ? Math.min(next.time - sample.time, step) : step;
    const x = at(sample.time);
    const w = Math.max(1, at(sample.time + gap) - x);
    const h = Math.max(2, sample.confidence * canvas.height);
    ctx.fillStyle = css(labelColor(sample.label));
    ctx.fillRect(x, canvas.height - h, w, h);
  });
  if (cursor !== null) {
    ctx.fillStyle = "#1d2330";
    ctx.fillRect(at(cursor) - 1, 0, 2, canvas.height);
  }
  // How long each label lasted, as a share of the samples (not a confidence, which the
  // strip's height shows): "Happy 70%, Neutral 30% of the time".
  const counts = {};
  for (const s of samples) counts[s.label] = (counts[s.label] || 0) + 1;
  const summary = Object.entries(counts).sort((a, b) => b[1] - a[1])
    .map(([label, n]) => `${displayName(label)} ${share(n, samples.length)}`).join(", ")
    + " of the time";
  row.dataset.samples = String(samples.length);
  row.querySelector("figcaption").textContent += ` · ${summary}`;
  canvas.setAttribute("aria-label", row.querySelector("figcaption").textContent);
  canvas.title = summary;
}

// --- Videos: the server's frames, a slider over them, the frame drawn from <video> ----

const VIDEO_EXTENSIONS = [".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg",
  ".wmv", ".flv", ".3gp", ".ogv", ".ts", ".mts", ".m2ts"];
const isVideo = (file) => file.type.startsWith("video/")
  || VIDEO_EXTENSIONS.some((ext) => file.name.toLowerCase().endsWith(ext));

const video = { frames: [], tracks: new Map(), playable: false, file: null, index: 0 };

function videoTracks(frames) {
  const tracks = new Map();
  for (const frame of frames) {
    for (const face of frame.faces) {
      if (!tracks.has(face.track)) tracks.set(face.track, []);
      tracks.get(face.track).push({ time: frame.time, label: face.label,
                                    confidence: face.confidence });
    }
  }
  return tracks;
}

// The time between two sampled frames, and the timeline's length: the last frame's
// interval included.
const videoStep = () => (video.frames.length > 1 ? video.frames[1].time - video.frames[0].time : 1);
const videoEnd = () => (video.frames.length ? video.frames[video.frames.length - 1].time : 0)
  + videoStep();

function drawVideoTimelines() {
  const cursor = (video.frames[video.index]?.time ?? 0) + videoStep() / 2;
  for (const [track, samples] of video.tracks) {
    drawTimeline(timelineRow(track, `Face ${track}`), samples, 0, videoEnd(), videoStep(),
                 cursor);
  }
}

// Resolves once the player shows the picture at `time`. "seeked" alone is not enough:
// one from an earlier seek can arrive after this one started, and Chromium may fire it
// before the new frame is decoded, so drawing then copies the frame shown before.
function seekPlayer(player, time) {
  return new Promise((resolve) => {
    let target;
    const done = () => {
      // An earlier seek's event while this one is still going; once none is, this seek
      // is done or a later one replaced it (and its caller moves on).
      if (Math.abs(player.currentTime - target) > 1e-4 && player.seeking) return;
      player.removeEventListener("seeked", done);
      if (!player.requestVideoFrameCallback) {
        resolve();
        return;
      }
      // The frame may already be the one presented, when no callback comes.
      const timer = setTimeout(resolve, FRAME_WAIT_MS);
      player.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        resolve();
      });
    };
    player.addEventListener("seeked", done);
    player.currentTime = time;
    target = player.currentTime;  // the position as the player rounded it
  });
}

async function seekFrame(index) {
  video.index = index;
  const frame = video.frames[index];
  if (!frame) return;
  $("scrub").value = String(index);
  $("scrub-time").textContent = `${frame.time.toFixed(1)} s · `
    + `${frame.faces.length} face${frame.faces.length === 1 ? "" : "s"}`;
  drawVideoTimelines();
  const player = $("player");
  const upload = () => frameBlob(player, `frame-${frame.frame}.png`);
  if (!video.playable) {
    view.source = null;
    view.upload = null;
    listFaces(frame.faces);
    return;
  }
  if (Math.abs(player.currentTime - frame.time - 1e-3) > 1e-4) {
    await seekPlayer(player, frame.time + 1e-3);  // inside the frame, whatever the rounding
  }
  if (video.index !== index) return;  // the slider moved on meanwhile
  show("video", player, player.videoWidth, player.videoHeight, frame.faces, upload);
  document.body.dataset.frame = String(index);
}

// The picture a <video> or the camera shows now, as a file to send.
function frameBlob(element, name, maxSide = Infinity, type = "image/png") {
  const width = element.videoWidth, height = element.videoHeight;
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(element, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob((blob) => {
    resolve(new File([blob], name, { type }));
  }, type, 0.85));
}

async function canPlay(player, file) {
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  return new Promise((resolve) => {
    player.onloadeddata = () => resolve(player.videoWidth > 0);
    player.onerror = () => resolve(false);
  });
}

async function analyseVideo(file, data) {
  video.frames = data.filter((frame) => frame.frame !== null && !frame.error);
  video.tracks = videoTracks(video.frames);
  video.file = file;
  video.playable = await canPlay($("player"), file);
  $("timelines").replaceChildren();
  const broken = data.find((frame) => frame.error);
  const faces = video.tracks.size;
  const scrub = $("scrub");
  scrub.max = String(Math.max(0, video.frames.length - 1));
  $("scrubber").hidden = video.frames.length < 2;
  $("canvas").hidden = !video.playable;
  $("result").hidden = false;
  await seekFrame(0);
  const last = video.frames[video.frames.length - 1];
  let text = `${faces} face${faces === 1 ? "" : "s"} in ${file.name}: `
    + `${video.frames.length} frames sampled over ${last ? last.time.toFixed(1) : 0} s.`;
  if (!video.playable) {
    text += " This browser cannot play this video's format: its timeline is shown without the pictures.";
  }
  if (broken) text += ` ${broken.error}`;
  setStatus(text);
}

$("scrub").addEventListener("input", (event) => seekFrame(Number(event.target.value)));
$("timelines").addEventListener("click", (event) => {
  const canvas = event.target.closest("canvas");
  if (!canvas || !video.frames.length || view.kind === "camera") return;
  const rect = canvas.getBoundingClientRect();
  const time = ((event.clientX - rect.left) / rect.width) * videoEnd() - videoStep() / 2;
  let best = 0;
  video.frames.forEach((frame, i) => {
    if (Math.abs(frame.time - time) < Math.abs(video.frames[best].time - time)) best = i;
  });
  seekFrame(best);
});

// --- Photos and videos: the upload ---------------------------------------------------

function resetResult() {
  $("result").hidden = true;
  $("scrubber").hidden = true;
  $("canvas").hidden = false;
  $("timelines").replaceChildren();
  $("faces").replaceChildren();
  view.heat = null;
  view.explained = null;
}

async function analyse(file) {
  if (!file) return;
  camera.stop();
  setStatus(isVideo(file) ? `Analysing ${file.name}: every face in its frames, which takes a while…`
    : `Analysing ${file.name}…`);
  resetResult();
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
  if (Array.isArray(data)) {  // a video: an object per sampled frame
    await analyseVideo(file, data);
    document.body.dataset.state = "done";
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
  show("photo", bitmap, bitmap.width, bitmap.height, data.faces, async () => file);
  $("result").hidden = false;
  if (data.faces.length) {
    setStatus(`${data.faces.length} face${data.faces.length > 1 ? "s" : ""} in ${file.name}`);
  } else {
    setStatus("No face found. Try a clear, front-facing photo.");
  }
  document.body.dataset.state = "done";
}

// --- The webcam: a frame goes when the answer to the last one has come --------------

// Follows each face from frame to frame by its box, so its timeline continues.
class Tracker {
  constructor() { this.tracks = []; this.next = 1; }

  update(faces, now) {
    const taken = new Set();
    const numbered = faces.map((face) => {
      let best = null, score = 0.2;
      for (const track of this.tracks) {
        const s = overlap(track.box, face.box);
        if (!taken.has(track) && s > score) { best = track; score = s; }
      }
      if (!best) {
        best = { id: this.next++, samples: [] };
        this.tracks.push(best);
      }
      taken.add(best);
      best.box = face.box;
      best.seen = now;
      best.samples.push({ time: now, label: face.label, confidence: face.confidence });
      return { ...face, track: best.id };
    });
    for (const track of this.tracks) {
      track.samples = track.samples.filter((s) => s.time > now - CAMERA_WINDOW);
    }
    this.tracks = this.tracks.filter((t) => t.seen > now - CAMERA_WINDOW);
    return numbered;
  }
}

const CAMERA_WINDOW = 30;   // seconds of timeline shown for each face
const CAMERA_SIDE = 640;    // frames sent are at most this many pixels on their longer side

const camera = {
  stream: null, running: false, paused: false, tracker: null, latest: null,
  done: [], inFlight: 0, frames: 0, started: 0, chain: 0, looping: false,

  async start() {
    const element = $("camera");
    if (!navigator.mediaDevices?.getUserMedia) {
      setStatus("This browser offers no camera here: browsers allow the camera only on "
        + "localhost or over HTTPS (fer8 serve --ssl-certfile cert.pem --ssl-keyfile key.pem).",
        true);
      return;
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, facingMode: "user" }, audio: false });
    } catch (error) {
      setStatus(`No camera: ${error.message || error.name}.`, true);
      return;
    }
    element.srcObject = this.stream;
    await element.play();
    resetResult();
    $("result").hidden = false;
    Object.assign(view, { kind: "camera", source: null, faces: [], upload: null });
    Object.assign(this, { running: true, paused: false, tracker: new Tracker(), latest: null,
                          done: [], frames: 0, started: performance.now() });
    $("camera-toggle").textContent = "Stop the camera";
    document.body.dataset.state = "camera";
    setStatus("The camera is on. Frames are analysed and dropped; nothing is stored.");
    this.draw();
    this.loop();
  },

  stop() {
    if (!this.stream) return;
    this.running = false;
    for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    $("camera").srcObject = null;
    $("camera-toggle").textContent = "Start the camera";
    setStatus("The camera is off.");
    if (document.body.dataset.state === "camera") document.body.dataset.state = "";
  },

  pause() { this.paused = true; },
  resume() {
    if (!this.paused) return;
    this.paused = false;
    this.draw();
    this.loop();
  },

  // Draws the live picture with the latest answer's boxes, for each new camera frame
  // (requestVideoFrameCallback: a 30 fps camera is 30 draws a second, not the screen's
  // 60 or more, which leaves the CPU to the frames sent), else every screen refresh.
  draw(chain = ++this.chain) {
    if (!this.running || this.paused || chain !== this.chain) return;  // one chain at a time
    const element = $("camera");
    if (element.videoWidth) {
      const scale = Math.min(1, CAMERA_SIDE / Math.max(element.videoWidth, element.videoHeight));
      const faces = this.latest ? this.latest.faces : [];
      view.kind = "camera";
      view.source = element;
      view.width = Math.round(element.videoWidth * scale);
      view.height = Math.round(element.videoHeight * scale);
      view.faces = faces;
      render();
    }
    if (element.requestVideoFrameCallback) element.requestVideoFrameCallback(() => this.draw(chain));
    else requestAnimationFrame(() => this.draw(chain));
  },

  // One frame in flight at most: the next is taken when this one's answer is in, so
  // the page goes at the server's pace and never queues frames.
  async loop() {
    if (this.looping) return;
    this.looping = true;
    try {
      while (this.running && !this.paused) {
        const element = $("camera");
        if (!element.videoWidth) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          continue;
        }
        const blob = await frameBlob(element, "camera.jpg", CAMERA_SIDE, "image/jpeg");
        const form = new FormData();
        form.append("file", blob, blob.name);
        let data;
        this.inFlight += 1;
        try {
          const response = await apiFetch("/v1/predict", { method: "POST", body: form });
          data = await response.json();
          if (!response.ok) throw new Error(data.detail || `Error ${response.status}`);
        } catch (error) {
          setStatus(`The server did not answer: ${error.message}`, true);
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        } finally {
          this.inFlight -= 1;
        }
        if (!this.running || this.paused) break;  // (the frame explained stays the latest)
        const now = (performance.now() - this.started) / 1000;
        const faces = this.tracker.update(data.faces, now);
        this.latest = { faces, blob };
        this.frames += 1;
        this.done.push(now);
        this.done = this.done.filter((t) => t > now - 5);
        this.showLive(faces, now);
      }
    } finally {
      this.looping = false;
    }
  },

  showLive(faces, now) {
    const rate = this.done.length > 1
      ? (this.done.length - 1) / (this.done[this.done.length - 1] - this.done[0]) : 0;
    $("fps").textContent = `${rate.toFixed(1)} frames a second (as fast as the server answers)`;
    document.body.dataset.fps = rate.toFixed(2);
    document.body.dataset.frames = String(this.frames);
    if (!this.paused) {
      view.upload = async () => this.latest.blob;
      view.explained = null;
      view.faces = faces;
      listFaces(faces);
    }
    for (const row of $("timelines").querySelectorAll(".timeline")) {
      if (!this.tracker.tracks.some((t) => `timeline-${t.id}` === row.id)) row.remove();
    }
    const start = Math.max(0, now - CAMERA_WINDOW);
    for (const track of this.tracker.tracks) {
      const last = track.samples[track.samples.length - 1];
      drawTimeline(timelineRow(track.id, `Face ${track.id}: ${displayName(last.label)} now; the last ${CAMERA_WINDOW} s`),
                   track.samples, start, Math.max(now, start + 1), 2);
    }
  },
};

function setMode(mode) {
  const cameraMode = mode === "camera";
  $("mode-file").setAttribute("aria-pressed", String(!cameraMode));
  $("mode-camera").setAttribute("aria-pressed", String(cameraMode));
  $("upload-panel").hidden = cameraMode;
  $("camera-panel").hidden = !cameraMode;
  if (!cameraMode) camera.stop();
  resetResult();
  setStatus("");
  (cameraMode ? $("camera-toggle") : $("file")).focus();
}

$("mode-file").addEventListener("click", () => setMode("file"));
$("mode-camera").addEventListener("click", () => setMode("camera"));
$("camera-toggle").addEventListener("click", () => (camera.stream ? camera.stop() : camera.start()));

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
