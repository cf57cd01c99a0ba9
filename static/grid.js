// The image grid: click, shift-click and keyboard selection; bulk relabel/exclude; undo.
import { toast } from "./api.js";
import { apply, describe, undo } from "./bulk.js";

const grid = document.getElementById("grid");
const projectId = grid.dataset.project;
const tiles = () => [...grid.querySelectorAll(".tile")].filter((t) => !t.closest("[hidden]"));
const touch = matchMedia("(hover: none) and (pointer: coarse)").matches;
const count = document.getElementById("selected-count");
const labels = [...document.querySelectorAll("[data-bulk-label]")].map((b) => b.dataset.bulkLabel);
let anchor = 0;

function setSelected(tile, on) {
  tile.setAttribute("aria-selected", on ? "true" : "false");
}
function selected() {
  return tiles().filter((t) => t.getAttribute("aria-selected") === "true");
}
function update() {
  count.textContent = `${selected().length} selected`;
}
function focusTile(index) {
  const all = tiles();
  if (!all.length) return;
  index = Math.max(0, Math.min(all.length - 1, index));
  all.forEach((t, i) => { t.tabIndex = i === index ? 0 : -1; });
  all[index].focus();
  return index;
}
function selectRange(from, to, on = true) {
  const all = tiles();
  const [a, b] = from < to ? [from, to] : [to, from];
  for (let i = a; i <= b; i++) setSelected(all[i], on);
}

grid.addEventListener("click", (e) => {
  const tile = e.target.closest(".tile");
  if (!tile || e.target.closest("a")) return;  // a tile's link opens the image
  const index = tiles().indexOf(tile);
  if (e.shiftKey) selectRange(anchor, index);
  else {
    setSelected(tile, tile.getAttribute("aria-selected") !== "true");
    anchor = index;
  }
  focusTile(index);
  update();
});

async function run(body) {
  const ids = selected().map((t) => Number(t.dataset.id));
  if (!ids.length) {
    return toast(touch ? "Select images first: tap them, or Select all."
      : "Select images first (click, Shift-click, or A for all).");
  }
  try {
    const result = await apply(projectId, { image_ids: ids, ...body });
    settleGroups();
    toast(describe(body, result.changed.length), { undo: () => undoAndSettle() });
  } catch (err) {
    toast(err.message);
  }
}

function undoAndSettle() {
  return undo(projectId).then(settleGroups, (err) => toast(err.message));
}

// Duplicates page: a group with at most one photo left in training is resolved and folds
// away (an undo brings it back); its photos leave the selection.
function settleGroups() {
  const groups = [...document.querySelectorAll(".dup-group")];
  if (!groups.length) return;
  for (const group of groups) {
    group.hidden = group.querySelectorAll(".tile:not(.excluded)").length <= 1;
    if (group.hidden) group.querySelectorAll(".tile").forEach((t) => setSelected(t, false));
  }
  document.getElementById("all-resolved").hidden = groups.some((g) => !g.hidden);
  update();
}

document.getElementById("toolbar").addEventListener("click", (e) => {
  const button = e.target.closest("button");
  if (!button) return;
  if (button.dataset.bulkLabel) run({ label: button.dataset.bulkLabel });
  else if (button.dataset.bulkStatus) run({ status: button.dataset.bulkStatus });
  else if (button.dataset.command === "select-all") { tiles().forEach((t) => setSelected(t, true)); update(); }
  else if (button.dataset.command === "clear") { tiles().forEach((t) => setSelected(t, false)); update(); }
  else if (button.dataset.command === "undo") undoAndSettle();
  else if (button.dataset.command === "similar") {
    const first = selected()[0];
    if (!first) return toast("Select a photo first: Find similar shows its nearest look-alikes in the inbox.");
    location.href = `/projects/${projectId}/inbox?similar=${first.dataset.id}`;
  }
});

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea")) return;
  const all = tiles();
  const current = Math.max(0, all.indexOf(document.activeElement));
  const perRow = Math.max(1, Math.round(grid.clientWidth / (all[0]?.offsetWidth || 1)));
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow };
  const key = e.key.toLowerCase();
  if (e.key in moves) {
    e.preventDefault();
    const next = focusTile(current + moves[e.key]);
    if (e.shiftKey) { selectRange(current, next); update(); }
  } else if (e.key === " " && all.includes(document.activeElement)) {
    e.preventDefault();
    const tile = document.activeElement;
    setSelected(tile, tile.getAttribute("aria-selected") !== "true");
    anchor = current;
    update();
  } else if (key === "a" && !e.altKey) {
    e.preventDefault();
    all.forEach((t) => setSelected(t, true));
    update();
  } else if (e.key === "Escape") {
    all.forEach((t) => setSelected(t, false));
    update();
  } else if (key === "x" || e.key === "Delete") run({ status: "excluded" });
  else if (key === "r" && !e.ctrlKey && !e.metaKey) run({ status: "active" });
  else if (key === "z") { e.preventDefault(); undoAndSettle(); }
  else if (/^[1-9]$/.test(e.key) && labels[Number(e.key) - 1]) run({ label: labels[Number(e.key) - 1] });
});
