// Demo page: send a dropped, pasted or chosen photo to the predict endpoint and draw bars.
const card = document.querySelector(".demo");
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const preview = document.getElementById("preview");
const answer = document.getElementById("answer");
const bars = document.getElementById("bars");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

async function classify(file) {
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  answer.textContent = "Classifying…";
  bars.replaceChildren();
  const body = new FormData();
  body.append("file", file);
  const response = await fetch(card.dataset.predictUrl, {
    method: "POST", body, headers: csrf ? { "X-CSRF-Token": csrf } : {},
  });
  const data = await response.json();
  if (!response.ok) {
    answer.textContent = typeof data.detail === "string" ? data.detail : "Something went wrong.";
    return;
  }
  answer.textContent = data.unknown
    ? "None of these"
    : `${data.label} (${(data.confidence * 100).toFixed(1)}%)`;
  const rows = Object.entries(data.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of rows) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, p * 100)}%`;
    const value = document.createElement("span");
    value.textContent = `${(p * 100).toFixed(1)}%`;
    li.append(name, bar, value);
    bars.append(li);
  }
}

input.addEventListener("change", () => classify(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  classify(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) classify(item.getAsFile());
});
