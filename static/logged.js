// A deployment's logged photos on the models page: a grid (newest first, filtered), select,
// and add them to the project's inbox or to a label, through the prediction log API.
import { send } from "./api.js";

const PAGE = 60;
const pct = (c) => `${Math.round(c * 100)}%`;
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(typeof data?.detail === "string" ? data.detail : `HTTP ${response.status}`);
  return data;
}

function tile(item) {
  const li = document.createElement("li");
  li.className = "tile";
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", "false");
  li.tabIndex = 0;
  li.dataset.id = item.id;
  const img = document.createElement("img");
  img.src = item.photo_url;
  img.alt = `logged photo ${item.id}`;
  img.loading = "lazy";
  img.width = img.height = 160;
  const caption = document.createElement("span");
  caption.className = "caption";
  const text = document.createElement("span");
  text.className = "lbl";
  text.textContent = item.unknown ? `none of these (${item.label}?)` : `${item.label} ${pct(item.confidence)}`;
  text.title = `${new Date(item.created_at).toLocaleString()}: answered ${item.unknown ? "“none of these”" : item.label}, ${pct(item.confidence)}`;
  caption.append(text);
  li.append(img, caption);
  return li;
}

function setUp(box) {
  const slug = box.dataset.slug;
  const base = `/api/v1/deployments/${encodeURIComponent(slug)}/log`;
  const grid = box.querySelector(".log-grid");
  const only = box.querySelector(".log-only");
  const count = box.querySelector(".log-count");
  const add = box.querySelector(".log-add");
  const addLabel = box.querySelector(".log-add-label");
  const label = box.querySelector(".log-label");
  const result = box.querySelector(".log-result");
  const empty = box.querySelector(".log-empty");
  const more = box.querySelector(".log-more");
  let loaded = 0;
  let total = 0;

  const selected = () => [...grid.querySelectorAll('[aria-selected="true"]')].map((li) => Number(li.dataset.id));
  function counted() {
    const n = selected().length;
    count.textContent = `${n} selected`;
    add.disabled = addLabel.disabled = n === 0;
  }

  function say(message, { error = false, link = null } = {}) {
    result.replaceChildren(document.createTextNode(message));
    result.classList.toggle("error", error);
    if (link) {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      result.append(" ", a);
    }
  }

  async function load({ reset = false } = {}) {
    if (reset) { grid.replaceChildren(); loaded = 0; counted(); }
    try {
      const page = await getJSON(`${base}?only=${only.value}&limit=${PAGE}&offset=${loaded}`);
      total = page.total;
      grid.append(...page.items.map(tile));
      loaded += page.items.length;
      empty.hidden = total > 0;
      more.hidden = loaded >= total;
    } catch (error) {
      say(`Could not load the logged photos: ${error.message}`, { error: true });
    }
  }

  function toggle(li) {
    li.setAttribute("aria-selected", li.getAttribute("aria-selected") === "true" ? "false" : "true");
    counted();
  }
  grid.addEventListener("click", (event) => {
    const li = event.target.closest(".tile");
    if (li) toggle(li);
  });
  grid.addEventListener("keydown", (event) => {
    const li = event.target.closest(".tile");
    if (li && (event.key === " " || event.key === "Enter")) { event.preventDefault(); toggle(li); }
  });

  async function addSelected(asLabel) {
    const ids = selected();
    if (!ids.length) return;
    add.disabled = addLabel.disabled = true;
    say(`Adding ${plural(ids.length, "photo")}…`);
    try {
      const answer = await send(`${base}/add`, { json: { ids, label: asLabel } });
      const parts = [`Added ${plural(answer.added.length, "photo")} ${asLabel ? `as ${asLabel}` : "to the inbox"}`];
      if (answer.duplicates.length) parts.push(`${plural(answer.duplicates.length, "was", "were")} already in the project`);
      if (answer.rejected.length) parts.push(`${answer.rejected.length} refused (${answer.rejected[0].reason})`);
      const project = box.dataset.project;
      say(`${parts.join("; ")}.`, {
        error: answer.added.length === 0 && answer.duplicates.length === 0,
        link: asLabel
          ? { href: `/projects/${project}/images?label=${encodeURIComponent(asLabel)}`, text: `See ${asLabel}` }
          : { href: `/projects/${project}/inbox`, text: "Open the inbox" },
      });
      grid.querySelectorAll('[aria-selected="true"]').forEach((li) => {
        li.setAttribute("aria-selected", "false");
        li.classList.add("changed");
      });
    } catch (error) {
      say(`Nothing added: ${error.message}`, { error: true });
    }
    counted();
  }

  add.addEventListener("click", () => addSelected(null));
  addLabel.addEventListener("click", () => addSelected(label.value || null));
  only.addEventListener("change", () => load({ reset: true }));
  more.addEventListener("click", () => load());
  box.addEventListener("toggle", () => { if (box.open && loaded === 0) load({ reset: true }); });
}

document.querySelectorAll("details.logged").forEach(setUp);
