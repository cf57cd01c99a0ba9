// Project page: live jobs, web search per label, drag-and-drop upload (files, folders, zips), URL lists.
import { errorText, send } from "./api.js";
import { ACTIVE, jobRow, showJob, watch } from "./jobs.js";

const projectId = document.getElementById("project").dataset.project;
const IMAGE = /\.(jpe?g|png|gif|webp|bmp|tiff?|zip)$/i;
const BATCH = 40;

for (const row of document.querySelectorAll("#jobs [data-job]")) {
  if (ACTIVE.includes(row.dataset.status)) watch(row.dataset.job, (job) => job && showJob(row, job));
}

// A job started here shows beside its form and in "Recent jobs", both rows kept alike by
// one event stream.
function follow(list, job, { reload = true } = {}) {
  const rows = [jobRow(job), jobRow(job)];
  list.prepend(rows[0]);
  const recent = document.getElementById("jobs");
  recent.querySelector("li.muted")?.remove();  // "No jobs yet."
  recent.prepend(rows[1]);
  watch(job.id, (update) => {
    if (!update) return;
    for (const row of rows) showJob(row, update);
    if (update.status === "succeeded" && reload) setTimeout(() => location.reload(), 800);
  });
}

function failure(list, message) {
  const li = document.createElement("li");
  li.className = "error";
  li.setAttribute("role", "alert");
  li.textContent = message;
  list.prepend(li);
}

for (const form of document.querySelectorAll(".search-form")) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const list = form.closest(".label-card").querySelector(".jobs");
    const body = { label: form.dataset.label, query: form.query.value, max_images: Number(form.max_images.value) };
    if (form.licence.value) body.licence = form.licence.value;
    try {
      follow(list, await send(`/api/v1/projects/${projectId}/searches`, { json: body }));
    } catch (err) {
      failure(list, `Search failed: ${err.message}`);
    }
  });
}

const urlForm = document.getElementById("url-form");
urlForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const list = urlForm.querySelector(".jobs");
  const urls = urlForm.urls.value.split(/\s+/).map((u) => u.trim()).filter(Boolean);
  if (!urls.length) return failure(list, "Paste at least one image URL.");
  try {
    follow(list, await send(`/api/v1/projects/${projectId}/url-imports`, { json: { label: urlForm.label.value, urls } }));
    urlForm.urls.value = "";
  } catch (err) {
    failure(list, `Import failed: ${err.message}`);
  }
});

// Upload: files keep the chosen label; files inside a dropped or chosen folder take the folder's
// name. One Upload click is one record of the upload history (the batches name it by upload_id);
// the page shows bytes sent and files filed while it runs, then reloads onto the history.
const form = document.getElementById("upload-form");
const status = document.getElementById("upload-status");
const drop = document.getElementById("drop");
const button = document.getElementById("upload-button");
const bar = document.getElementById("upload-progress");
const chosenNote = document.getElementById("upload-chosen");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
// A chosen folder and dropped files wait for the Upload click, as chosen files do; `skipped`:
// files of a folder that are neither images nor zips.
const pending = { folder: { items: [], skipped: 0 }, dropped: { items: [], skipped: 0 } };
let busy = false;
// After an upload the page opens on its history, at the new record.
const uploaded = new URLSearchParams(location.search).get("uploaded");
if (uploaded) document.querySelector(`#uploads [data-upload="${CSS.escape(uploaded)}"]`)?.scrollIntoView();

async function walk(entry, folder, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    if (!folder || IMAGE.test(file.name)) out.items.push({ file, label: folder });
    else out.skipped += 1;
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    let batch;
    do {
      batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      for (const child of batch) await walk(child, entry.name, out);
    } while (batch.length);
  }
}

// Files chosen one by one all go (the server says why it refuses one); a folder's other files
// (notes, .DS_Store) are skipped and counted.
function fromFileList(files, { folder = false } = {}) {
  const all = [...files];
  const kept = folder ? all.filter((f) => IMAGE.test(f.name)) : all;
  if (folder) pending.folder.skipped = all.length - kept.length;
  return kept.map((file) => {
    const parts = (file.webkitRelativePath || "").split("/");
    return { file, label: parts.length > 1 ? parts[parts.length - 2] : "" };
  });
}

const mb = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e6 ? 2 : bytes < 1e7 ? 1 : 0)} MB`;
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// One batch as multipart, by XHR: fetch cannot report bytes sent.
function post(body, onSent) {
  return new Promise((ok, fail) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/projects/${projectId}/images`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onSent(e.loaded / e.total); });
    xhr.addEventListener("load", () => (xhr.status < 300 ? ok(xhr.response)
      : fail(new Error(errorText(xhr.response, xhr.status)))));
    xhr.addEventListener("error", () => fail(new Error("the connection to the server failed")));
    xhr.send(body);
  });
}

function showChosen() {
  const count = form.files.files.length + pending.folder.items.length + pending.dropped.items.length;
  const skipped = pending.folder.skipped + pending.dropped.skipped;
  chosenNote.textContent = count ? `${plural(count, "file")} chosen${skipped ? ` (${plural(skipped, "other file")} of the folder skipped: not images or zips)` : ""}: click Upload to send them.` : "";
}

async function upload(items) {
  if (!items.length) {
    status.textContent = "Choose or drop photos, folders or zips first.";
    return;
  }
  busy = true;
  button.disabled = true;
  const chosen = form.label.value;
  const inbox = form.label.selectedOptions[0]?.hasAttribute("data-inbox");  // folder names ignored
  const groups = new Map();
  for (const { file, label } of items) {
    const key = inbox ? "" : chosen || label || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(file);
  }
  const total = items.reduce((sum, { file }) => sum + file.size, 0) || 1;
  const outcome = { added: 0, duplicates: 0, rejected: 0 };
  const failures = [];
  let sent = 0, filed = 0, uploadId = "";
  const show = (batchSent = 0) => {
    bar.value = Math.min(1, (sent + batchSent) / total);
    status.textContent = `Uploading… ${mb(sent + batchSent)} of ${mb(total)} sent · ` +
      `${filed} of ${plural(items.length, "file")} filed (${outcome.added} added, ` +
      `${plural(outcome.duplicates, "duplicate")}, ${outcome.rejected} rejected)`;
  };
  bar.hidden = false;
  show();
  for (const [label, files] of groups) {
    for (let i = 0; i < files.length; i += BATCH) {
      const batch = files.slice(i, i + BATCH);
      const bytes = batch.reduce((sum, f) => sum + f.size, 0);
      const body = new FormData();
      if (label) body.append("label", label);
      if (uploadId) body.append("upload_id", uploadId);
      for (const f of batch) body.append("files", f, f.name);
      try {
        const result = await post(body, (share) => show(share * bytes));
        uploadId = String(result.upload_id ?? uploadId);
        outcome.added += result.added.length;
        outcome.duplicates += result.duplicates.length;
        outcome.rejected += result.rejected.length;
      } catch (err) {
        failures.push(`${plural(batch.length, "file")} (${batch[0].name}${batch.length > 1 ? " …" : ""}) not sent: ${err.message}`);
      }
      sent += bytes;
      filed += batch.length;
      show();
    }
  }
  status.textContent = `Added ${outcome.added}, ${plural(outcome.duplicates, "duplicate")}, ` +
    `${outcome.rejected} rejected.`;
  if (failures.length) {  // nothing of these reached the history: say so here, and stay
    const list = document.createElement("ul");
    list.className = "error";
    list.setAttribute("role", "alert");
    for (const failure of failures) list.append(Object.assign(document.createElement("li"), { textContent: failure }));
    status.append(list);
    busy = false;
    button.disabled = false;
    return;
  }
  status.textContent += " Showing the upload history…";
  // One navigation, a moment after the final count shows.
  setTimeout(() => location.replace(`/projects/${projectId}?uploaded=${uploadId}#uploads`), 600);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (busy) return;
  const items = [...fromFileList(form.files.files), ...pending.folder.items, ...pending.dropped.items];
  upload(items).catch((err) => {
    status.textContent = errorText({ detail: err.message });
    busy = false;
    button.disabled = false;
  });
});
form.files.addEventListener("change", showChosen);
document.getElementById("folder").addEventListener("change", (e) => {
  pending.folder.items = fromFileList(e.target.files, { folder: true });
  showChosen();
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (busy) return;
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const dropped = { items: [], skipped: 0 };
  if (entries.length) for (const entry of entries) await walk(entry, "", dropped);
  else dropped.items.push(...fromFileList(e.dataTransfer.files));
  pending.dropped = dropped;  // a new drop replaces the last, as a new choice of files does
  showChosen();
});
