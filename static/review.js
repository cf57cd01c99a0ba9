// Review cards and top losses: one click keeps, relabels or excludes an image; undo reverts.
import { toast } from "./api.js";
import { apply, describe, undo } from "./bulk.js";

const list = document.getElementById("review");
const projectId = list?.dataset.project;

async function fix(card, body) {
  try {
    const result = await apply(projectId, { image_ids: [Number(card.dataset.id)], ...body });
    card.classList.add("done");
    toast(describe(body, result.changed.length || 1), { undo: () => undo(projectId) });
  } catch (err) {
    toast(err.message);
  }
}

list?.addEventListener("click", (e) => {
  const button = e.target.closest("button");
  const card = e.target.closest("[data-id]");
  if (!button || !card) return;
  if (button.hasAttribute("data-keep")) {
    card.classList.add("done", "kept");
    toast("Kept as it is.");
  } else if (button.dataset.bulkLabel) fix(card, { label: button.dataset.bulkLabel, status: "active" });
  else if (button.dataset.bulkStatus) fix(card, { status: button.dataset.bulkStatus });
});
list?.addEventListener("change", (e) => {
  const select = e.target.closest("select[data-relabel]");
  if (select?.value) fix(select.closest("[data-id]"), { label: select.value, status: "active" });
});
document.querySelector('[data-command="undo"]')?.addEventListener("click", () => undo(projectId).catch((err) => toast(err.message)));
document.addEventListener("keydown", (e) => {
  if (e.key.toLowerCase() === "z" && !e.target.closest("input, select, textarea")) undo(projectId).catch((err) => toast(err.message));
});
