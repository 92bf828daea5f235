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
// An archive the service unpacks into a batch.
const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$/i;
const BATCH_ENDED = new Set(["completed", "cancelled"]);

const $ = (selector, root = document) => root.querySelector(selector);
const cardOf = new WeakMap();
const els = {
  model: $("#model"), priority: $("#priority"), key: $("#api-key"), notice: $("#options-status"),
  input: $("#files"), drop: $("#drop"), announcer: $("#announcer"), folder: $("#folder"),
  chooseFolder: $("#choose-folder"),
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

// ---- a batch's card: one bar for many images ----

class BatchCard {
  constructor(name) {
    this.name = name;
    this.id = null;
    this.finished = false;
    // A job's card, less its result, plus the links to the batch's results.
    this.el = fromTemplate("job-template", { "job-name": name });
    this.el.classList.add("batch");
    this.part = (selector) => $(selector, this.el);
    this.part(".job-result").replaceWith(fromTemplate("downloads-template"));
    this.part(".progress").setAttribute("aria-label", `Progress of ${name}`);
    this.part(".cancel").addEventListener("click", () => this.cancel());
    for (const [link, type] of [[".download-csv", "text/csv"], [".download-jsonl", "application/x-ndjson"]]) {
      this.part(link).addEventListener("click", (event) => {
        event.preventDefault();
        this.download(type);
      });
    }
    cardOf.set(this.el, this);
    els.jobs.prepend(this.el);
    syncLists();
    this.line("Uploading", 0);
  }

  line(text, progress) {
    const bar = this.part(".progress");
    bar.setAttribute("aria-valuenow", String(progress));
    bar.setAttribute("aria-valuetext", `${text}, ${progress}%`);
    this.part(".progress-fill").style.width = `${progress}%`;
    this.part(".job-stage").textContent = text;
  }

  accept(body) {
    this.id = body.batch_id;
    this.part(".cancel").hidden = false;
    this.line(`${body.total} images queued`, 0);
    announce(`${this.name}: ${body.total} images queued`);
  }

  show(body) {
    const c = body.counts;
    const ended = body.total - c.pending - c.processing;
    const parts = [`${ended} of ${body.total} done`];
    if (c.failed) parts.push(`${c.failed} failed`);
    if (c.cancelled + c.expired) parts.push(`${c.cancelled + c.expired} not run`);
    this.line(parts.join(" · "), body.progress);
    if (BATCH_ENDED.has(body.status)) this.end(body);
  }

  end(body) {
    if (this.finished) return;
    this.finished = true;
    this.el.dataset.state = body.status === "completed" ? "done" : "cancelled";
    this.part(".cancel").hidden = true;
    this.part(".batch-downloads").hidden = false;
    announce(`${this.name}: batch ${body.status}, ${body.counts.completed} of ${body.total} classified`);
    syncLists();
  }

  problem(title, detail) {
    this.finished = true;
    this.el.dataset.state = "refused";
    this.part(".job-stage").textContent = title;
    Object.assign(this.part(".job-problem"), { textContent: sentence(detail), hidden: false });
    this.part(".cancel").hidden = true;
    announce(`${this.name}: ${title}. ${sentence(detail)}`);
    syncLists();
  }

  async cancel() {
    this.part(".cancel").disabled = true;
    try {
      this.show((await api(`/batches/${this.id}`, { method: "DELETE" })).body);
    } catch (error) {
      announce(`${this.name}: ${error.message}`);
    }
  }

  // The results file, fetched with the page's credentials and handed to the browser as a download.
  async download(type) {
    const response = await fetch(`/batches/${this.id}/results`, { headers: { Accept: type, ...authHeaders() } });
    if (!response.ok) return announce(`${this.name}: the results could not be fetched`);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `${this.name}-results.${type === "text/csv" ? "csv" : "jsonl"}`;
    link.click();
    URL.revokeObjectURL(link.href);
  }

  remove() {
    this.el.remove();
  }
}

async function submitBatch(files, name) {
  const card = new BatchCard(name);
  const form = new FormData();
  for (const file of files) form.append("file", file, file.webkitRelativePath || file.name);
  form.append("model_version", els.model.value);
  form.append("top_k", String(TOP_K));
  if (els.priority.value !== "normal") form.append("priority", els.priority.value);
  try {
    const { body } = await api("/batches", { method: "POST", body: form });
    card.accept(body);
    followBatch(card, body.links.websocket);
  } catch (error) {
    card.problem(error.title, error.message);
  }
}

// The batch's WebSocket pushes its status on each change; polling takes over if it cannot be used.
function followBatch(card, websocketPath) {
  let socket;
  try {
    socket = new WebSocket(socketUrl(websocketPath));
  } catch {
    pollBatch(card);
    return;
  }
  socket.addEventListener("message", (event) => card.show(JSON.parse(event.data)));
  socket.addEventListener("close", () => {
    if (!card.finished) pollBatch(card);
  });
}

async function pollBatch(card) {
  while (!card.finished && card.el.isConnected) {
    try {
      card.show((await api(`/batches/${card.id}`)).body);
    } catch (error) {
      if (error.status >= 400 && error.status < 500 && error.status !== 429) return card.problem(error.title, error.message);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// Every file under a dropped folder (the browser hands them out a directory entry at a time).
async function filesOf(entry) {
  if (entry.isFile) return [await new Promise((resolve, reject) => entry.file(resolve, reject))];
  const reader = entry.createReader();
  const found = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) if (!child.name.startsWith(".")) found.push(...(await filesOf(child)));
  }
  return found;
}

// Chosen or dropped files: one archive goes as a batch, anything else as one job per image.
function submitChosen(files) {
  if (files.length === 1 && ARCHIVE.test(files[0].name)) submitBatch(files, files[0].name);
  else if (files.length) submitAll(files);
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
    submitChosen([...els.input.files]);
    els.input.value = "";
  });
  els.chooseFolder.addEventListener("click", () => els.folder.click());
  els.folder.addEventListener("change", () => {
    const files = [...els.folder.files];
    if (files.length) submitBatch(files, files[0].webkitRelativePath.split("/")[0] || "folder");
    els.folder.value = "";
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
  window.addEventListener("drop", async (event) => {
    event.preventDefault();
    els.drop.classList.remove("dragging");
    const entries = [...(event.dataTransfer?.items ?? [])].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
    const files = [...(event.dataTransfer?.files ?? [])];
    const folders = entries.filter((entry) => entry.isDirectory);
    // A dropped folder goes as one batch (its files read before the event's data is gone: all at once).
    for (const [folder, found] of await Promise.all(folders.map(async (f) => [f, await filesOf(f)]))) {
      submitBatch(found, folder.name);
    }
    if (!folders.length) submitChosen(files);
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
