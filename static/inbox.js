// The inbox: photos without a label, one group of look-alikes at a time, the model's
// suggestions (accept above a confidence, undo), the rest most informative first, and
// "Similar" on any photo. Everything goes through the JSON API (api_inbox, images/bulk).
import { send, toast } from "./api.js";
import { ACTIVE, watch } from "./jobs.js";

const root = document.getElementById("inbox");
const projectId = root.dataset.project;
const INBOX = `/api/v1/projects/${projectId}/inbox`;
const LIMIT = 500;  // photos shown at once in a view (a cluster, the suggestions, the rest)
const $ = (id) => document.getElementById(id);
const grid = $("inbox-grid");
const restGrid = $("rest-grid");
const labelChoice = $("label-choice");
const labelThese = $("label-these");
const range = $("min-confidence-range");
const number = $("min-confidence");

const state = {
  view: "clusters", cluster: null, similarTo: Number(root.dataset.similar) || null,
  summary: null, confident: [], informative: [], watching: null,
};
const undoStack = [];
const labelledHere = new Map();  // id -> label given on this page (the similar view shows it)
let lastAccept = null;

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const pct = (c) => `${Math.round(c * 100)}%`;

function showError(message) {
  const box = $("inbox-error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = typeof data?.detail === "string" ? data.detail : `HTTP ${response.status}`;
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return data;
}

// --- tiles and selection ------------------------------------------------------------------

function tile(item, { selected = false } = {}) {
  const li = document.createElement("li");
  li.className = "tile";
  li.setAttribute("role", "option");
  li.tabIndex = 0;
  li.dataset.id = item.id;
  li.setAttribute("aria-selected", selected ? "true" : "false");
  const img = document.createElement("img");
  img.src = item.thumb_url || `/api/v1/images/${item.id}/thumb?size=160`;
  img.alt = `photo ${item.id}`;
  img.loading = "lazy";
  img.width = img.height = 160;
  const caption = document.createElement("span");
  caption.className = "caption";
  const text = document.createElement("span");
  text.className = "lbl";
  if (item.label) {
    text.textContent = item.label;
    li.dataset.label = item.label;
  } else if (item.suggestion) {
    text.textContent = `${item.suggestion.label} ${pct(item.suggestion.confidence)}`;
    text.title = "the model's suggestion and its confidence";
    li.dataset.suggestion = item.suggestion.label;
    li.dataset.confidence = item.suggestion.confidence;
  } else {
    text.textContent = "—";
  }
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "link similar";
  similar.dataset.similar = item.id;
  similar.textContent = "Similar";
  similar.setAttribute("aria-label", `Find photos similar to photo ${item.id}`);
  caption.append(text, similar);
  li.append(img, caption);
  return li;
}

const tiles = () => [...root.querySelectorAll(".tile")];
const selectedIds = () => tiles().filter((t) => t.getAttribute("aria-selected") === "true").map((t) => Number(t.dataset.id));

function updateSelection() {
  const n = selectedIds().length;
  $("selected-count").textContent = `${n} selected`;
  labelThese.textContent = `Label these ${n}`;
  labelThese.disabled = n === 0 || !labelChoice.value;
}

function toggle(t) {
  t.setAttribute("aria-selected", t.getAttribute("aria-selected") === "true" ? "false" : "true");
  updateSelection();
}

function fill(list, items, options) {
  list.replaceChildren(...items.map((item) => tile(item, options)));
}

for (const list of [grid, restGrid]) {
  list.addEventListener("click", (e) => {
    const similar = e.target.closest("button.similar");
    if (similar) return showSimilar(Number(similar.dataset.similar));
    const t = e.target.closest(".tile");
    if (t) toggle(t);
  });
  list.addEventListener("keydown", (e) => {
    const t = e.target.closest(".tile");
    if (t && (e.key === " " || e.key === "Enter") && !e.target.closest("button")) {
      e.preventDefault();
      toggle(t);
    }
  });
}

$("label-bar").addEventListener("click", (e) => {
  const command = e.target.closest("button")?.dataset.command;
  if (command === "select-all" || command === "clear") {
    for (const t of tiles()) t.setAttribute("aria-selected", command === "select-all" ? "true" : "false");
    updateSelection();
  }
});
labelChoice.addEventListener("change", updateSelection);

// --- summary: counts, organizing progress, clusters ------------------------------------------

function showOrganize(summary) {
  const box = $("organize");
  const job = summary.organize_job;
  const start = $("organize-start");
  if (job && ACTIVE.includes(job.status)) {
    box.hidden = false;
    start.hidden = true;
    $("organize-progress").hidden = false;
    $("organize-progress").value = job.progress || 0;
    $("organize-text").textContent = `Organizing the inbox: ${job.message || job.status}…`;
    if (state.watching !== job.id) {
      state.watching = job.id;
      watch(job.id, (update) => {
        if (!update) return;
        $("organize-progress").value = update.progress || 0;
        $("organize-text").textContent = `Organizing the inbox: ${update.message || update.status}…`;
        if (!ACTIVE.includes(update.status)) {
          state.watching = null;
          if (update.status === "failed") showError(`Organizing failed: ${update.error || update.message}`);
          refresh();
        }
      });
    }
  } else if (summary.pending > 0) {
    box.hidden = false;
    start.hidden = false;
    $("organize-progress").hidden = true;
    $("organize-text").textContent = `${plural(summary.pending, "photo")} not grouped yet.`;
  } else {
    box.hidden = true;
  }
}

$("organize-start").addEventListener("click", async () => {
  try {
    const answer = await send(`${INBOX}/organize`);
    showOrganize({ organize_job: answer.job, pending: 0 });
  } catch (err) {
    showError(`Could not start organizing: ${err.message}`);
  }
});

function clusterName(index) {
  return `Group ${index + 1}`;
}

function showPicker(clusters) {
  const picker = $("cluster-picker");
  if (!clusters.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "Not grouped yet: the photos are shown together below until grouping ends.";
    picker.replaceChildren(li);
    return;
  }
  picker.replaceChildren(...clusters.map((cluster, index) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cluster secondary";
    button.dataset.cluster = cluster.id;
    button.setAttribute("aria-pressed", String(cluster.id === state.cluster && state.view === "clusters"));
    const strip = document.createElement("span");
    strip.className = "samples";
    for (const id of (cluster.sample_ids || []).slice(0, 4)) {
      const img = document.createElement("img");
      img.src = `/api/v1/images/${id}/thumb?size=96`;
      img.alt = "";
      img.width = img.height = 48;
      strip.append(img);
    }
    const text = document.createElement("span");
    text.className = "cluster-name";
    text.textContent = `${clusterName(index)} · ${plural(cluster.size, "photo")}`;
    button.append(strip, text);
    li.append(button);
    return li;
  }));
}

$("cluster-picker").addEventListener("click", (e) => {
  const button = e.target.closest("[data-cluster]");
  if (!button) return;
  state.cluster = Number(button.dataset.cluster);
  setView("clusters");
});

function clustersBySize() {
  return [...(state.summary?.clusters || [])].filter((c) => c.size > 0).sort((a, b) => b.size - a.size || a.id - b.id);
}

// --- views ----------------------------------------------------------------------------------

function setTitle(title, note) {
  $("view-title").textContent = title;
  $("view-note").textContent = note || "";
}

async function showCluster() {
  const clusters = clustersBySize();
  if (!clusters.some((c) => c.id === state.cluster)) state.cluster = clusters[0]?.id ?? null;
  const query = state.cluster == null ? "" : `&cluster=${state.cluster}`;
  const page = await getJSON(`${INBOX}?order=cluster&limit=${LIMIT}${query}`);
  showPicker(clusters);  // with the grid, so the two never show different groups
  // A group opens all selected (its misfits are clicked out); photos not grouped yet, none.
  const grouped = state.cluster != null;
  fill(grid, page.items, { selected: grouped });
  chooseLikeliest(page.items);
  const index = clusters.findIndex((c) => c.id === state.cluster);
  const name = index >= 0 ? clusterName(index) : "Not grouped yet";
  const shownNote = page.items.length < page.total ? ` The first ${page.items.length} are shown; the rest follow once these are labelled.` : "";
  setTitle(`${name}: ${plural(page.total, "photo")}`, (grouped
    ? "All selected: click the photos that do not belong to leave them out, then choose a label and “Label these”."
    : "Click photos to select them for a label, or wait a moment for the groups.") + shownNote);
}

// The label chooser starts on the group's most frequent suggestion, when a model gave some.
function chooseLikeliest(items) {
  const counts = new Map();
  for (const i of items) if (i.suggestion) counts.set(i.suggestion.label, (counts.get(i.suggestion.label) || 0) + 1);
  const [best] = [...counts].sort((a, b) => b[1] - a[1])[0] || [];
  if (best && [...labelChoice.options].some((o) => o.value === best)) labelChoice.value = best;
}

function threshold() {
  const value = Math.max(0, Math.min(100, Number(number.value) || 0));
  return value / 100;
}

function showSuggestionGrids() {
  const t = threshold();
  const above = state.confident.filter((i) => i.suggestion && i.suggestion.confidence >= t);
  const aboveIds = new Set(above.map((i) => i.id));
  const rest = state.informative.filter((i) => !aboveIds.has(i.id));
  fill(grid, above);
  if (!above.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = state.confident.some((i) => i.suggestion)
      ? "No suggestion is that confident: lower the confidence to see more."
      : "No suggestions yet: they come with the next organize job.";
    grid.append(li);
  }
  fill(restGrid, rest);
  $("rest").hidden = rest.length === 0;
  const shown = Math.round(t * 100);
  const more = state.summary && state.confident.length < state.summary.total && above.length === state.confident.length ? "+" : "";
  $("accept").textContent = `Accept ${above.length}${more} suggestion${above.length === 1 && !more ? "" : "s"} above ${shown}%`;
  $("accept").disabled = above.length === 0;
  $("accept").dataset.count = above.length;
  setTitle(`${plural(above.length, "suggestion")} at ${shown}% or more, most confident first`,
    "Check them: click a wrong one and label it yourself, or accept them all at once.");
  updateSelection();
}

async function showSuggestions() {
  const [confident, informative] = await Promise.all([
    getJSON(`${INBOX}?order=confidence&limit=${LIMIT}`),
    getJSON(`${INBOX}?order=informative&limit=${LIMIT}`),
  ]);
  state.confident = confident.items;
  state.informative = informative.items;
  showSuggestionGrids();
}

async function showSimilar(imageId) {
  state.similarTo = imageId;
  const button = root.querySelector('[data-view="similar"]');
  button.hidden = false;
  try {
    const answer = await getJSON(`/api/v1/images/${imageId}/similar?limit=24`);
    const known = [...state.confident, ...state.informative].find((i) => i.id === imageId) || {};
    const source = { id: imageId, thumb_url: `/api/v1/images/${imageId}/thumb?size=240`, ...known };
    if (labelledHere.has(imageId)) source.label = labelledHere.get(imageId);
    // Photos still in the inbox show their suggestion, when the lists loaded here have one.
    const suggested = new Map([...state.confident, ...state.informative].map((i) => [i.id, i.suggestion]));
    const nearest = answer.items.filter((i) => i.id !== imageId)
      .map((i) => (i.label ? i : { ...i, suggestion: suggested.get(i.id) || null }));
    const items = [source, ...nearest];
    state.view = "similar";
    markView();
    grid.replaceChildren(...items.map((item) => tile(item, { selected: !item.label })));
    $("rest").hidden = true;
    const waiting = items.filter((i) => !i.label).length;
    setTitle(`Similar to photo ${imageId}: ${plural(answer.items.length, "look-alike")}`,
      `Nearest first. The ${plural(waiting, "photo")} without a label are selected, ready to label together; photos with a label show it.`);
    updateSelection();
    showError("");
  } catch (err) {
    showError(`Find similar: ${err.message}`);
  }
}

function markView() {
  for (const b of root.querySelectorAll("[data-view]")) b.setAttribute("aria-pressed", String(b.dataset.view === state.view));
  $("cluster-panel").hidden = state.view !== "clusters";
  $("suggest-panel").hidden = state.view !== "suggestions";
  if (state.view !== "suggestions") $("rest").hidden = true;
}

async function render() {
  markView();
  if (state.view === "similar" && state.similarTo) return showSimilar(state.similarTo);
  if (state.view === "suggestions") await showSuggestions();
  else await showCluster();
  updateSelection();
}

function setView(view) {
  state.view = view;
  render().catch((err) => showError(err.message));
}

root.querySelector(".views").addEventListener("click", (e) => {
  const button = e.target.closest("[data-view]");
  if (button && !button.disabled) setView(button.dataset.view);
});

async function refresh() {
  try {
    const summary = await getJSON(`${INBOX}?order=cluster&limit=1`);
    state.summary = summary;
    $("inbox-loading").hidden = true;
    showOrganize(summary);
    const empty = summary.total === 0 && state.view !== "similar";
    $("empty").hidden = !empty;
    $("workspace").hidden = empty;
    // Suggestions once a model exists and the organize job that brings them up to date ended.
    const organizing = summary.organize_job && ACTIVE.includes(summary.organize_job.status);
    const suggestions = root.querySelector('[data-view="suggestions"]');
    suggestions.disabled = summary.model_id == null || organizing;
    suggestions.textContent = summary.model_id != null && organizing ? "Suggestions (updating…)" : "Suggestions";
    $("model-note").textContent = summary.model_id == null ? ""
      : "Suggestions come from the latest model; photos it was trained on get out-of-sample ones.";
    if (state.view === "suggestions" && suggestions.disabled) state.view = "clusters";
    if (!empty) await render();
    // Last, once the view shows the same state (what the browser test waits for).
    $("inbox-total").textContent = `${plural(summary.total, "photo")} without a label`;
  } catch (err) {
    $("inbox-loading").hidden = true;
    showError(`The inbox could not be loaded: ${err.message}`);
  }
}

// --- actions: label a selection, accept suggestions, undo ----------------------------------

async function replay(undo) {
  for (const batch of undo.batches || []) {
    await send(`/api/v1/projects/${projectId}/images/bulk`, { json: batch });
  }
}

function setUndo() {
  $("undo").disabled = undoStack.length === 0;
}

labelThese.addEventListener("click", async () => {
  const ids = selectedIds();
  const label = labelChoice.value;
  if (!ids.length || !label) return;
  labelThese.disabled = true;
  try {
    const result = await send(`/api/v1/projects/${projectId}/images/bulk`, { json: { image_ids: ids, label } });
    if (result.changed.length) undoStack.push(result.undo);
    for (const id of result.changed) labelledHere.set(id, label);
    setUndo();
    toast(`${plural(result.changed.length, "photo")} labelled as ${label}.`, { undo: undoLast });
    showError("");
    await refresh();
  } catch (err) {
    showError(`Labelling failed: ${err.message}`);
    updateSelection();
  }
});

async function undoLast() {
  const last = undoStack.pop();
  setUndo();
  if (!last) return;
  try {
    await replay(last);
    for (const batch of last.batches || []) for (const id of batch.image_ids) labelledHere.delete(id);
    if (last === lastAccept) {
      lastAccept = null;
      $("accept-undo").hidden = true;
    }
    const n = (last.batches || []).reduce((sum, b) => sum + b.image_ids.length, 0);
    toast(`Undone: ${plural(n, "photo")} back in the inbox.`);
    await refresh();
  } catch (err) {
    showError(`Undo failed: ${err.message}`);
  }
}
$("undo").addEventListener("click", undoLast);

$("accept").addEventListener("click", async () => {
  const minConfidence = threshold();
  $("accept").disabled = true;
  try {
    const result = await send(`${INBOX}/accept`, { json: { min_confidence: minConfidence } });
    if (result.accepted) {
      lastAccept = result.undo;
      undoStack.push(result.undo);
      setUndo();
      const undoButton = $("accept-undo");
      undoButton.hidden = false;
      undoButton.textContent = `Undo: put the ${plural(result.accepted, "photo")} back`;
    }
    toast(`Accepted ${plural(result.accepted, "suggestion")} at ${Math.round(minConfidence * 100)}% or more.`);
    showError("");
    await refresh();
  } catch (err) {
    showError(`Accepting failed: ${err.message}`);
    $("accept").disabled = false;
  }
});

$("accept-undo").addEventListener("click", async () => {
  if (!lastAccept) return;
  const index = undoStack.lastIndexOf(lastAccept);
  if (index >= 0) undoStack.splice(index, 1);
  undoStack.push(lastAccept);  // the accept is undone even if labels were given after it
  await undoLast();
});

function syncThreshold(value) {
  range.value = value;
  number.value = value;
  if (state.view === "suggestions") showSuggestionGrids();
}
range.addEventListener("input", () => syncThreshold(range.value));
number.addEventListener("input", () => {
  range.value = number.value;
  if (state.view === "suggestions") showSuggestionGrids();
});

// The grid's keys: A selects all, Escape clears, Z undoes the last labelling here.
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (key === "a" || e.key === "Escape") {
    for (const t of tiles()) t.setAttribute("aria-selected", key === "a" ? "true" : "false");
    updateSelection();
  } else if (key === "z" && undoStack.length) undoLast();
});

if (state.similarTo) state.view = "similar";
refresh();
