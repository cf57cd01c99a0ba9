// Demo page: send a dropped, pasted, chosen, example or webcam photo to the predict endpoint
// and draw the probabilities as bars. No build step, no dependencies.
import { acceptPhotos, percent, showBars } from "./answer.js";

const card = document.querySelector(".demo");
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const preview = document.getElementById("preview");
const answer = document.getElementById("answer");
const bars = document.getElementById("bars");
const result = document.getElementById("result");
const video = document.getElementById("camera");
const cameraStart = document.getElementById("camera-start");
const cameraSnap = document.getElementById("camera-snap");
const cameraStop = document.getElementById("camera-stop");
const cameraMessage = document.getElementById("camera-message");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
let stream = null;

async function classify(blob) {
  if (!blob) return;
  if (blob.type && !blob.type.startsWith("image/")) {
    answer.textContent = "That is not an image: choose a photo (JPEG, PNG, WebP…).";
    return;
  }
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  card.setAttribute("aria-busy", "true");
  answer.className = "";
  answer.textContent = "Classifying…";
  bars.replaceChildren();
  reveal();
  const body = new FormData();
  body.append("file", blob, blob.name || "photo.jpg");
  try {
    const response = await fetch(card.dataset.predictUrl, {
      method: "POST", body, headers: csrf ? { "X-CSRF-Token": csrf } : {},
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      answer.className = "error";
      answer.textContent = typeof data.detail === "string"
        ? data.detail : `Something went wrong (HTTP ${response.status}).`;
      return;
    }
    show(data);
  } catch (error) {
    answer.className = "error";
    answer.textContent = "Could not reach the server: check the connection and try again.";
  } finally {
    card.removeAttribute("aria-busy");
    reveal();
  }
}

// On a narrow screen the photo and its answer sit below the drop zone, the webcam and the
// examples, out of sight: bring them into view (unless they already are).
function reveal() {
  const box = result.getBoundingClientRect();
  if (box.top >= 0 && box.bottom <= innerHeight) return;
  const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
  result.scrollIntoView({ block: box.height > innerHeight ? "start" : "end",
                          behavior: still ? "auto" : "smooth" });
}

function show(data) {
  // `answer` is null for "none of these"; `label` is then only the closest guess.
  const none = data.answer === null;
  answer.className = none ? "unknown" : "known";
  answer.textContent = none ? "None of these" : `${data.answer} (${percent(data.confidence)})`;
  const why = document.getElementById("answer-why");
  why.hidden = !none;
  if (none) {  // in words for a visitor; the numbers behind it one click away
    why.querySelector(".plain").textContent = "This doesn't look like any of the photos this "
      + `model learned from. The closest label is ${data.label}.`;
    why.querySelector(".numbers").textContent = data.unknown_reason
      || "It scored below this model's threshold.";
  }
  showBars(bars, data.probabilities);
}

acceptPhotos(drop, input, classify);

for (const button of document.querySelectorAll(".example")) {
  button.addEventListener("click", async () => {
    const response = await fetch(button.dataset.src);
    if (response.ok) classify(await response.blob());
  });
}

function cameraSay(text) {
  cameraMessage.textContent = text;
  cameraMessage.hidden = !text;
}

function cameraShow(on) {
  video.hidden = !on;
  cameraSnap.hidden = !on;
  cameraStop.hidden = !on;
  cameraStart.hidden = on;
}

cameraStart.addEventListener("click", async () => {
  if (!navigator.mediaDevices?.getUserMedia) {
    cameraSay("This browser cannot use a webcam here (it needs HTTPS or localhost). "
      + "Choose a file instead.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (error) {
    cameraSay(error.name === "NotAllowedError"
      ? "The webcam is blocked: allow it in the browser's site settings, or choose a file."
      : "No webcam is available. Choose a file instead.");
    return;
  }
  video.srcObject = stream;
  cameraSay("");
  cameraShow(true);
  cameraSnap.focus();
});

function stopCamera() {
  stream?.getTracks().forEach((track) => track.stop());
  stream = null;
  video.srcObject = null;
  cameraShow(false);
}

cameraStop.addEventListener("click", stopCamera);
cameraSnap.addEventListener("click", () => {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => classify(blob), "image/jpeg", 0.9);
});

for (const button of document.querySelectorAll(".copy")) {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (error) {
      getSelection().selectAllChildren(document.getElementById(button.dataset.copy));
      button.textContent = "Press Ctrl+C to copy";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
}
