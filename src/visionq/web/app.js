// The visionq page: upload images, follow each job live (WebSocket, else polling), show the top-5.
// Plain DOM, no framework; every piece of text from the service is set with textContent.

const STAGES = {
  uploading: "Uploading", queued: "Waiting in the queue", initializing: "Starting",
  preprocessing: "Preparing the image", inference: "Classifying", postprocessing: "Finishing",
  completed: "Done", failed: "Failed", cancelled: "Cancelled", expired: "Expired",
};
const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const UNSUCCESSFUL = new Set(["failed", "cancelled", "expired"]);
const TOP_K = 5;
const UNKNOWN_JOB = 4404; // WebSocket close code for an unknown job id
const POLL_MS = 1000;
const POLL_MAX_MS = 10000;
const RECENT_MAX = 20;
const KEY_STORE = "visionq.apiKey";
const RECENT_STORE = "visionq.recent";
// A JWT (three base64url parts) goes in `Authorization: Bearer`; anything else is an API key.
const JWT = /^[\w-]+\.[\w-]+\.[\w-]+$/;

const $ = (selector, root = document) => root.querySelector(selector);
const cardOf = new WeakMap();
const els = {
  model: $("#model"), priority: $("#priority"), key: $("#api-key"), notice: $("#options-status"),
  input: $("#files"), drop: $("#drop"), announcer: $("#announcer"),
  jobs: $("#jobs"), jobsEmpty: $("#jobs-empty"), clearJobs: $("#clear-jobs"),
  recent: $("#recent"), recentEmpty: $("#recent-empty"), clearRecent: $("#clear-recent"),
};

// A fresh copy of a <template>'s element, and a way to fill its parts by class name.
function fromTemplate(id, texts = {}) {
  const element = $(`#${id}`).content.firstElementChild.cloneNode(true);
  for (const [name, text] of Object.entries(texts)) $(`.${name}`, element).textContent = text;
  return element;
}

// ---- talking to the service ----

class ProblemError extends Error {
  constructor(response, body) {
    const detail = typeof body?.detail === "string" ? body.detail : `the service answered ${response.status}`;
    super(detail);
    this.status = response.status;
    this.title = typeof body?.title === "string" ? body.title : "Request refused";
  }
}

function authHeaders() {
  const key = els.key.value.trim();
  if (!key) return {};
  return JWT.test(key) ? { Authorization: `Bearer ${key}` } : { "X-API-Key": key };
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { Accept: "application/json", ...authHeaders() } });
  } catch {
    const detail = "the service could not be reached; check that it is running";
    throw new ProblemError({ status: 0 }, { title: "Service unreachable", detail });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ProblemError(response, body);
  return { status: response.status, body };
}

function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = els.key.value.trim();
  if (key) url.searchParams.set("token", key);
  return url.href;
}

// ---- small helpers ----

const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
const percent = (c) => (c < 0.001 ? "< 0.1%" : `${(c * 100).toFixed(1)}%`);

function announce(text) {
  els.announcer.textContent = text;
}

// localStorage may be missing or full (private browsing): the page then works on without memory.
function store(name, value) {
  try { localStorage.setItem(name, JSON.stringify(value)); } catch { /* nothing remembered */ }
}

function load(name, fallback) {
  try { return JSON.parse(localStorage.getItem(name)) ?? fallback; } catch { return fallback; }
}

// ---- a job's card ----

class JobCard {
  constructor(name, imageUrl = null) {
    this.name = name;
    this.imageUrl = imageUrl;
    this.id = null;
    this.progress = 0;
    this.finished = false;
    this.el = fromTemplate("job-template", { "job-name": name });
    this.part = (selector) => $(selector, this.el);
    this.part(".progress").setAttribute("aria-label", `Progress of ${name}`);
    this.part(".predictions").setAttribute("aria-label", `Top predictions for ${name}`);
    this.part(".cancel").addEventListener("click", () => this.cancel());
    cardOf.set(this.el, this);
    els.jobs.prepend(this.el);
    syncLists();
  }

  // `ahead`: a queued job's queue position, when the service gives one.
  stage(stage, progress = this.progress, ahead = null) {
    let label = STAGES[stage] ?? stage;
    if (stage === "queued" && ahead !== null) label += ahead === 0 ? " (next)" : ` (${ahead} ahead)`;
    this.progress = Math.max(this.progress, Math.min(100, Math.round(progress)));
    const bar = this.part(".progress");
    bar.setAttribute("aria-valuenow", String(this.progress));
    bar.setAttribute("aria-valuetext", `${label}, ${this.progress}%`);
    this.part(".progress-fill").style.width = `${this.progress}%`;
    const line = this.part(".job-stage");
    if (line.dataset.stage !== stage) announce(`${this.name}: ${(STAGES[stage] ?? stage).toLowerCase()}`);
    line.dataset.stage = stage;
    line.textContent = `${label} · ${this.progress}%`;
  }

  accept(id) {
    this.id = id;
    this.part(".cancel").hidden = false;
  }

  finish(state) {
    this.finished = true;
    this.el.dataset.state = state;
    this.part(".cancel").hidden = true;
    syncLists();
  }

  // A refused upload, a failed or cancelled job, or one the service no longer knows: said in plain words.
  problem(title, detail, state = "refused") {
    this.finish(state);
    this.part(".job-stage").textContent = title;
    Object.assign(this.part(".job-problem"), { textContent: sentence(detail), hidden: false });
    this.release();
    announce(`${this.name}: ${title}. ${sentence(detail)}`);
  }

  failed(body) {
    const otherwise = {
      cancelled: "the job was cancelled before it finished",
      expired: "no worker started the job before its deadline",
    };
    const detail = body.error?.message ?? otherwise[body.status] ?? "the job failed";
    updateRecent(this.id, { top1: body.status });
    this.problem(STAGES[body.status] ?? "Failed", detail, body.status);
  }

  result(body) {
    this.stage("completed", 100);
    this.finish("done");
    const items = body.predictions.map((p) => {
      const texts = { "pred-name": p.class_name, "pred-value": percent(p.confidence) };
      const item = fromTemplate("prediction-template", texts);
      $(".bar-fill", item).style.width = `${Math.max(p.confidence * 100, 0.5)}%`;
      return item;
    });
    this.part(".predictions").replaceChildren(...items);
    const image = body.metadata?.image;
    const facts = [body.model_version, `${Math.round(body.processing_time * 1000)} ms`];
    if (image) facts.push(`${image.width} × ${image.height} ${image.format}`);
    this.part(".meta").textContent = facts.join(" · ");
    this.showThumbnail();
    this.part(".job-result").hidden = false;
    const top = body.predictions[0];
    if (top) {
      updateRecent(this.id, { top1: top.class_name });
      announce(`${this.name}: ${top.class_name}, ${percent(top.confidence)}`);
    }
  }

  showThumbnail() {
    if (!this.imageUrl) return;
    const thumb = this.part(".thumb");
    thumb.alt = this.name;
    thumb.addEventListener("error", () => thumb.remove(), { once: true });
    thumb.src = this.imageUrl;
    thumb.hidden = false;
  }

  release() {
    if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
    this.imageUrl = null;
  }

  async cancel() {
    this.part(".cancel").disabled = true;
    try {
      await api(`/jobs/${this.id}`, { method: "DELETE" });
    } catch (error) {
      announce(`${this.name}: ${error.message}`);
    }
  }

  remove() {
    this.release();
    this.el.remove();
  }
}

// ---- following a job ----

// Applies one message (a status body, a failure body or the result); true once the job is over.
function apply(card, body) {
  if (card.finished) return true;
  if (Array.isArray(body.predictions)) card.result(body);
  else if (UNSUCCESSFUL.has(body.status)) card.failed(body);
  else if (body.stage) card.stage(body.stage, body.progress ?? 0, body.queue_position ?? null);
  return card.finished;
}

function follow(card, websocketPath) {
  let socket;
  try {
    socket = new WebSocket(socketUrl(websocketPath));
  } catch {
    poll(card);
    return;
  }
  socket.addEventListener("message", (event) => apply(card, JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (card.finished) return;
    if (event.code !== UNKNOWN_JOB) poll(card);
    else card.problem("Unknown job", "the service no longer knows this job; its result may have expired");
  });
}

async function poll(card) {
  let wait = POLL_MS;
  while (!card.finished && card.el.isConnected) {
    try {
      const { body } = await api(`/status/${card.id}`);
      if (TERMINAL.has(body.status)) {
        apply(card, (await api(`/result/${card.id}`)).body);
        return;
      }
      apply(card, body);
      wait = POLL_MS;
    } catch (error) {
      // A refusal (unknown job, no access) ends it; an unreachable or busy service is asked again, less often.
      if (error.status >= 400 && error.status < 500 && error.status !== 429) {
        card.problem(error.title, error.message);
        return;
      }
      wait = Math.min(wait * 2, POLL_MAX_MS);
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

async function submit(card, file) {
  const form = new FormData();
  form.append("file", file);
  form.append("model_version", els.model.value);
  form.append("priority", els.priority.value);
  form.append("top_k", String(TOP_K));
  card.stage("uploading", 0);
  try {
    const { body } = await api("/classify", { method: "POST", body: form });
    card.accept(body.job_id);
    remember({ id: body.job_id, name: file.name, top1: null, time: new Date().toISOString() });
    follow(card, body.links.websocket);
  } catch (error) {
    card.problem(error.title, error.message);
  }
}

function submitAll(fileList) {
  // Cards go on top of the list: make them last file first, so a batch reads in the order it was chosen.
  const jobs = [...fileList].reverse().map((file) => [new JobCard(file.name, URL.createObjectURL(file)), file]);
  for (const [card, file] of jobs.reverse()) submit(card, file);
}

async function reopen(entry) {
  const card = new JobCard(entry.name);
  card.accept(entry.id);
  card.part(".job-name").focus();
  try {
    const { status, body } = await api(`/result/${entry.id}`);
    if (status === 202) follow(card, `/ws/${entry.id}`);
    else apply(card, body);
  } catch (error) {
    card.problem(error.title, error.message);
  }
}

// ---- recent jobs (this browser only) ----

function remember(entry) {
  const recent = load(RECENT_STORE, []).filter((e) => e.id !== entry.id);
  store(RECENT_STORE, [entry, ...recent].slice(0, RECENT_MAX));
  renderRecent();
}

function updateRecent(id, changes) {
  if (!id) return;
  store(RECENT_STORE, load(RECENT_STORE, []).map((e) => (e.id === id ? { ...e, ...changes } : e)));
  renderRecent();
}

function renderRecent() {
  const items = load(RECENT_STORE, []).map((entry) => {
    const when = new Date(entry.time).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    const texts = { "recent-name": entry.name, "recent-top": entry.top1 ?? "in progress", "recent-time": when };
    const item = fromTemplate("recent-template", texts);
    $("button", item).addEventListener("click", () => reopen(entry));
    return item;
  });
  els.recent.replaceChildren(...items);
  els.recentEmpty.hidden = items.length > 0;
  els.clearRecent.hidden = items.length === 0;
}

// ---- page set-up ----

function syncLists() {
  const all = [...els.jobs.children];
  els.jobsEmpty.hidden = all.length > 0;
  els.clearJobs.hidden = !all.some((el) => el.dataset.state !== "running");
}

async function loadModels() {
  try {
    const { body } = await api("/models");
    const latest = body.find((m) => m.aliases.includes("latest"));
    const options = [new Option(latest ? `Latest (${latest.name} v${latest.version})` : "Latest", "latest")];
    for (const m of body) options.push(new Option(`${m.name} v${m.version}`, `${m.name}@${m.version}`));
    const chosen = els.model.value;
    els.model.replaceChildren(...options);
    els.model.value = options.some((o) => o.value === chosen) ? chosen : "latest";
    els.notice.hidden = true;
  } catch (error) {
    els.notice.textContent = `The list of models could not be loaded: ${error.message}.`;
    els.notice.hidden = false;
  }
}

function setUp() {
  els.key.value = load(KEY_STORE, "");
  const saveKey = () => {
    store(KEY_STORE, els.key.value.trim());
    loadModels();
  };
  els.key.addEventListener("change", saveKey);
  // Enter in a field must not submit the form: that would reload the page with the key in its address.
  $("#options").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey();
  });
  els.drop.addEventListener("click", () => els.input.click());
  els.input.addEventListener("change", () => {
    submitAll(els.input.files);
    els.input.value = "";
  });
  // Files may be dropped anywhere on the page; the drop zone lights up while they are dragged in.
  window.addEventListener("dragover", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    event.preventDefault();
    els.drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) els.drop.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    els.drop.classList.remove("dragging");
    if (event.dataTransfer?.files.length) submitAll(event.dataTransfer.files);
  });
  els.clearJobs.addEventListener("click", () => {
    for (const el of [...els.jobs.children]) if (el.dataset.state !== "running") cardOf.get(el)?.remove();
    syncLists();
    els.drop.focus();
  });
  els.clearRecent.addEventListener("click", () => {
    store(RECENT_STORE, []);
    renderRecent();
    els.drop.focus();
  });
  renderRecent();
  syncLists();
  loadModels();
}

setUp();
