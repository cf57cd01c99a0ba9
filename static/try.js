// A model's page: try the version on a dropped, pasted or chosen photo before deploying it.
// The photo goes to the owner-only POST /api/v1/models/{id}/predict (the serving runtime).
import { errorText } from "./api.js";

const panel = document.getElementById("try");
const drop = document.getElementById("try-drop");
const input = document.getElementById("try-file");
const preview = document.getElementById("try-preview");
const answer = document.getElementById("try-answer");
const bars = document.getElementById("try-bars");
const numbers = document.getElementById("try-numbers");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
const percent = (p) => `${(p * 100).toFixed(1)}%`;

function say(text, cls) {
  answer.className = cls;
  answer.replaceChildren(text);
}

async function tryPhoto(file) {
  if (!file) return;
  bars.replaceChildren();
  numbers.hidden = true;
  if (file.type && !file.type.startsWith("image/")) {
    preview.hidden = true;
    say(`“${file.name}” is not a photo: choose a JPEG, PNG or WebP image.`, "error");
    return;
  }
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  panel.setAttribute("aria-busy", "true");
  say("Asking the model…", "");
  const body = new FormData();
  body.append("file", file, file.name || "photo.jpg");
  try {
    const response = await fetch(panel.dataset.predictUrl, {
      method: "POST", body, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      preview.hidden = true;
      say(errorText(data, response.status), "error");
      return;
    }
    show(data);
  } catch (error) {
    say("Could not reach the server: check the connection and try again.", "error");
  } finally {
    panel.removeAttribute("aria-busy");
  }
}

function show(data) {
  // `answer` is null for "none of these"; `label` is then only the closest guess.
  if (data.answer === null) {
    const strong = document.createElement("strong");
    strong.textContent = "None of these.";
    const words = document.createElement("span");
    words.className = "plain";
    words.textContent = ` This doesn't look like any of the photos this model learned from `
      + `(the closest is ${data.label}).`;
    answer.className = "unknown";
    answer.replaceChildren(strong, words);
    numbers.querySelector("p").textContent = data.unknown_reason
      || "Its answer fell below the threshold.";
    numbers.hidden = false;
  } else {
    say(`${data.answer} (${percent(data.confidence)} sure)`, "known");
  }
  for (const [label, p] of Object.entries(data.probabilities).sort((a, b) => b[1] - a[1])) {
    const li = document.createElement("li");
    li.dataset.label = label;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, p * 100)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    li.append(name, track, value);
    bars.append(li);
  }
}

input.addEventListener("change", () => tryPhoto(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  tryPhoto(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) tryPhoto(item.getAsFile());
});
