// The demo page: one session per tab on the server (fastclipseg.demo.app), drawn from the state
// each request returns. No framework and no build step: this file is served as it is.
"use strict";

const page = {
  config: { max_upload_bytes: 0, images: [], max_prompts: 10 },
  state: null,  // the server's state of this tab's session
  busy: false,
};

const $ = (id) => document.getElementById(id);

// -- talking to the server ---------------------------------------------------------------------

async function call(method, url, body, contentType) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.body = body;
    options.headers["Content-Type"] = contentType || "application/json";
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error(`the demo server did not answer (${error.message}): is it still running?`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    throw new Error(describeError(data, response));
  }
  return data;
}

function describeError(data, response) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((item) => item.msg || JSON.stringify(item)).join("; ");
  return `the server answered ${response.status} ${response.statusText}`;
}

// Runs one request at a time; its error, if any, is shown in the page.
async function run(what, action) {
  if (page.busy) return;
  page.busy = true;
  showError("");
  $("status").textContent = what + "…";
  document.body.dataset.state = "busy";
  render();
  try {
    const state = await action();
    if (state) page.state = state;
    $("status").textContent = "";
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    page.busy = false;
    document.body.dataset.state = "ready";
    render();
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// -- actions -----------------------------------------------------------------------------------

function upload(file) {
  if (file.size > page.config.max_upload_bytes) {
    const limit = (page.config.max_upload_bytes / 1048576).toFixed(1);
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB, above this demo's upload limit of ${limit} MB`);
    return;
  }
  run("encoding the image", () =>
    call("POST", "/api/sessions?name=" + encodeURIComponent(file.name), file,
         file.type || "application/octet-stream"));
}

function openExample(name) {
  run("encoding the image", () => call("POST", "/api/sessions?example=" + encodeURIComponent(name)));
}

function sessionUrl(action) {
  return `/api/sessions/${page.state.session}/${action}`;
}

function segment() {
  const prompts = $("prompt").value.split("\n").map((line) => line.trim()).filter((line) => line);
  if (!prompts.length) {
    showError("type a prompt first");
    return;
  }
  run("segmenting", () => call("POST", sessionUrl("segment"), JSON.stringify({ prompts })));
}

function refine() {
  const phrase = $("refine-phrase").value.trim();
  if (!phrase) {
    showError("type a refinement first, e.g. “exclude the collar”");
    return;
  }
  run("refining", () => call("POST", sessionUrl("refine"), JSON.stringify({ phrase })));
}

// -- drawing the state -------------------------------------------------------------------------

function render() {
  const state = page.state;
  const current = state && state.current;
  $("segment").disabled = page.busy || !state;
  $("refine").disabled = page.busy || !current;
  $("undo").disabled = page.busy || !state || !state.history.length;
  $("reset").disabled = page.busy || !state || !state.history.length;
  $("open-example").disabled = page.busy;
  $("file").disabled = page.busy;
  if (!state) return;

  document.body.dataset.version = String(state.version);
  $("image-info").textContent = `${state.name}: ${state.width} × ${state.height}`;
  setImage($("overlay"), state.links.overlay);
  $("heatmap-figure").hidden = !current;
  if (current) setImage($("heatmap"), state.links.heatmap);

  renderLegend(current);
  renderHistory(state.history);
  $("downloads").hidden = !current;
  if (current) {
    $("download-masks").href = state.links.masks;
    $("download-json").href = state.links.json;
    $("download-coco").href = state.links.coco;
  }
}

function setImage(img, url) {
  if (img.getAttribute("src") !== url) img.src = url;
}

function renderLegend(current) {
  const list = $("legend");
  list.replaceChildren();
  if (!current) return;
  const pixels = page.state.width * page.state.height;
  current.masks.forEach((mask) => {
    const item = document.createElement("li");
    item.className = "legend-entry";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = mask.colour;
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = mask.prompt;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = mask.score.toFixed(2);
    score.title = "mean probability inside the mask";
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = `${((100 * mask.area) / pixels).toFixed(1)} %`;
    area.title = "share of the image's pixels in the mask";
    item.append(swatch, prompt, score, area);
    list.append(item);
  });
}

function renderHistory(history) {
  const list = $("history");
  list.replaceChildren();
  history.forEach((label, index) => {
    const item = document.createElement("li");
    item.textContent = label;
    if (index === history.length - 1) item.className = "current";
    list.append(item);
  });
}

// -- wiring ------------------------------------------------------------------------------------

async function start() {
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) upload(file);
    event.target.value = "";  // choosing the same file again opens it again
  });
  $("open-example").addEventListener("click", () => openExample($("examples").value));
  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    segment();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {  // Enter segments, Shift+Enter starts a new line
      event.preventDefault();
      segment();
    }
  });
  $("refine-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refine();
  });
  $("undo").addEventListener("click", () => run("undoing", () => call("POST", sessionUrl("undo"))));
  $("reset").addEventListener("click", () => run("resetting", () => call("POST", sessionUrl("reset"))));
  try {
    page.config = await call("GET", "/api/config");
  } catch (error) {
    showError(error.message);
  }
  const examples = $("examples");
  page.config.images.forEach((name) => examples.append(new Option(name, name)));
  $("examples-row").hidden = !page.config.images.length;
  document.body.dataset.state = "ready";
  render();
}

document.addEventListener("DOMContentLoaded", start);
