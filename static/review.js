// Review cards and top losses: one click keeps, relabels or excludes an image; undo reverts.
import { toast } from "./api.js";
import { apply, describe, undo } from "./bulk.js";

const list = document.getElementById("review");
const projectId = list?.dataset.project;

async function fix(card, body) {
  try {
    const result = await apply(projectId, { image_ids: [Number(card.dataset.id)], ...body });
    card.classList.add("done");
    card.classList.toggle("kept", body.label == null && body.status == null);
    toast(describe(body, result.changed.length || 1), { undo: () => undo(projectId) });
  } catch (err) {
    toast(err.message);
  }
}

list?.addEventListener("click", (e) => {
  const button = e.target.closest("button");
  const card = e.target.closest("[data-id]");
  if (!button || !card) return;
  // Every decision here marks the image reviewed: the queue leaves it out after a reload.
  if (button.hasAttribute("data-keep")) fix(card, { reviewed: true });
  else if (button.dataset.bulkLabel) fix(card, { label: button.dataset.bulkLabel, status: "active", reviewed: true });
  else if (button.dataset.bulkStatus) fix(card, { status: button.dataset.bulkStatus, reviewed: true });
});
list?.addEventListener("change", (e) => {
  const select = e.target.closest("select[data-relabel]");
  if (select?.value) fix(select.closest("[data-id]"), { label: select.value, status: "active", reviewed: true });
});
document.querySelector('[data-command="undo"]')?.addEventListener("click", () => undo(projectId).catch((err) => toast(err.message)));
document.addEventListener("keydown", (e) => {
  if (e.key.toLowerCase() === "z" && !e.target.closest("input, select, textarea")) undo(projectId).catch((err) => toast(err.message));
});
