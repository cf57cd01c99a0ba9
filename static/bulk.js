// Bulk relabel/exclude through the API, saved at once, with an undo stack.
import { send, toast } from "./api.js";

const undoStack = [];
const undoButton = () => document.getElementById("undo");

function refresh(ids, { label, status }) {
  for (const id of ids) {
    const el = document.querySelector(`[data-id="${id}"]`);
    if (!el) continue;
    if (label != null) {
      el.dataset.label = label;
      const text = el.querySelector(".lbl");
      if (text) text.textContent = label;
    }
    if (status != null) {
      el.dataset.status = status;
      el.classList.toggle("excluded", status === "excluded");
    }
    el.classList.add("changed");
  }
}

export async function apply(projectId, body, { record = true } = {}) {
  const result = await send(`/api/v1/projects/${projectId}/images/bulk`, { json: body });
  refresh(result.changed, body);
  if (record && result.changed.length) {
    undoStack.push(result.undo);
    if (undoButton()) undoButton().disabled = false;
  }
  return result;
}

export async function undo(projectId) {
  const last = undoStack.pop();
  if (undoButton()) undoButton().disabled = undoStack.length === 0;
  if (!last) return toast("Nothing to undo.");
  for (const batch of last.batches) {
    const body = { image_ids: batch.image_ids, status: batch.status };
    if (batch.label != null) body.label = batch.label;
    if (batch.reviewed != null) body.reviewed = batch.reviewed;
    await apply(projectId, body, { record: false });
  }
  const n = last.batches.reduce((sum, b) => sum + b.image_ids.length, 0);
  toast(`Undone: ${n} image${n === 1 ? "" : "s"} restored.`);
}

export function describe(body, count) {
  const what = body.label ? `relabelled as ${body.label}`
    : body.status === "excluded" ? "excluded"
      : body.status === "active" ? "restored" : "kept as labelled";
  return `${count} image${count === 1 ? "" : "s"} ${what}.`;
}
