// A model's page: try the version on a dropped, pasted or chosen photo before deploying it.
// The photo goes to the owner-only POST /api/v1/models/{id}/predict (the serving runtime).
import { errorText } from "./api.js";
import { acceptPhotos, percent, showBars } from "./answer.js";

const panel = document.getElementById("try");
const drop = document.getElementById("try-drop");
const input = document.getElementById("try-file");
const preview = document.getElementById("try-preview");
const answer = document.getElementById("try-answer");
const bars = document.getElementById("try-bars");
const numbers = document.getElementById("try-numbers");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

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
  showBars(bars, data.probabilities);
}

acceptPhotos(drop, input, tryPhoto);
