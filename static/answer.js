// What the demo page and a model's "Try it" panel share: the answer's probability bars and
// taking a photo that is chosen, dropped or pasted.

export const percent = (p) => `${(p * 100).toFixed(1)}%`;

// One bar per label, the likeliest first, into the <ul> `bars` (emptied by the caller).
export function showBars(bars, probabilities) {
  for (const [label, p] of Object.entries(probabilities).sort((a, b) => b[1] - a[1])) {
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

// Calls take(file) for a photo chosen in `input`, dropped on `drop` or pasted on the page.
export function acceptPhotos(drop, input, take) {
  input.addEventListener("change", () => take(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) take(item.getAsFile());
  });
}
