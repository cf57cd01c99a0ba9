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

// Upload: files keep the chosen label; files inside a dropped or chosen folder take the folder's name.
const form = document.getElementById("upload-form");
const status = document.getElementById("upload-status");
const drop = document.getElementById("drop");

async function walk(entry, folder, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    if (IMAGE.test(file.name)) out.push({ file, label: folder });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    let batch;
    do {
      batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      for (const child of batch) await walk(child, entry.name, out);
    } while (batch.length);
  }
}

function fromFileList(files) {
  return [...files].filter((f) => IMAGE.test(f.name)).map((file) => {
    const parts = (file.webkitRelativePath || "").split("/");
    return { file, label: parts.length > 1 ? parts[parts.length - 2] : "" };
  });
}

async function upload(items) {
  if (!items.length) return (status.textContent = "No images or zips found in what was dropped.");
  const chosen = form.label.value;
  const inbox = form.label.selectedOptions[0]?.hasAttribute("data-inbox");  // folder names ignored
  const groups = new Map();
  for (const { file, label } of items) {
    const key = inbox ? "" : chosen || label || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(file);
  }
  const totals = { added: 0, duplicates: 0, rejected: [] };
  let done = 0;
  for (const [label, files] of groups) {
    for (let i = 0; i < files.length; i += BATCH) {
      const body = new FormData();
      if (label) body.append("label", label);
      for (const f of files.slice(i, i + BATCH)) body.append("files", f, f.name);
      try {
        const result = await send(`/api/v1/projects/${projectId}/images`, { form: body });
        totals.added += result.added.length;
        totals.duplicates += result.duplicates.length;
        totals.rejected.push(...result.rejected.map((r) => `${r.filename}: ${r.reason}`));
      } catch (err) {
        totals.rejected.push(err.message);
      }
      done += Math.min(BATCH, files.length - i);
      status.textContent = `Uploading… ${done} of ${items.length} files`;
    }
  }
  status.textContent = `Added ${totals.added}, duplicates ${totals.duplicates}, rejected ${totals.rejected.length}` +
    (totals.rejected.length ? `: ${totals.rejected.slice(0, 5).join("; ")}` : "") + ". Reloading…";
  setTimeout(() => location.reload(), totals.rejected.length ? 4000 : 600);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  upload(fromFileList(form.files.files)).catch((err) => { status.textContent = errorText({ detail: err.message }); });
});
document.getElementById("folder").addEventListener("change", (e) => upload(fromFileList(e.target.files)));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const items = [];
  if (entries.length) for (const entry of entries) await walk(entry, "", items);
  else items.push(...fromFileList(e.dataTransfer.files));
  upload(items);
});
