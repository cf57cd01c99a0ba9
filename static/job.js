// Training job page: live loss and error curves (inline SVG), epoch table, cancel.
import { send } from "./api.js";
import { ACTIVE, watch } from "./jobs.js";

const root = document.getElementById("job");
const NS = "http://www.w3.org/2000/svg";
const W = 400, H = 200, PAD = 32;

function svgEl(name, attrs) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function chart(svg, series) {
  if (!svg) return;
  svg.replaceChildren();
  const points = series.flatMap((s) => s.values);
  if (!points.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" });
    t.textContent = "waiting for the first epoch…";
    return svg.append(t);
  }
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const top = Math.max(...points) * 1.1 || 1;
  const x = (i) => PAD + (i * (W - PAD - 8)) / (n - 1);
  const y = (v) => H - PAD + 4 - (v / top) * (H - PAD - 4);
  svg.append(svgEl("line", { x1: PAD, y1: H - PAD + 4, x2: W - 8, y2: H - PAD + 4, class: "axis-line" }));
  svg.append(svgEl("line", { x1: PAD, y1: 4, x2: PAD, y2: H - PAD + 4, class: "axis-line" }));
  for (const v of [0, top / 2, top]) {
    const t = svgEl("text", { x: PAD - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    t.textContent = v.toFixed(2);
    svg.append(t);
  }
  const label = svgEl("text", { x: W / 2, y: H - 4, "text-anchor": "middle", class: "axis" });
  label.textContent = "epoch";
  svg.append(label);
  for (const s of series) {
    if (!s.values.length) continue;
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { d, class: `curve ${s.cls}` }));
    s.values.forEach((v, i) => svg.append(svgEl("circle", { cx: x(i), cy: y(v), r: 3, class: `dot ${s.cls}` })));
  }
}

function table(history) {
  const body = document.querySelector("#epochs tbody");
  if (!body) return;
  body.replaceChildren(...history.map((row) => {
    const tr = document.createElement("tr");
    for (const v of [row.phase, row.epoch, row.train_loss, row.valid_loss, row.error_rate, row.seconds]) {
      const td = document.createElement("td");
      td.textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : v ?? "";
      tr.append(td);
    }
    return tr;
  }));
}

function show(job) {
  root.dataset.status = job.status;
  const badge = root.querySelector(".status");
  badge.textContent = job.status;
  badge.className = `badge status ${job.status}`;
  root.querySelector("progress").value = job.progress;
  root.querySelector(".message").textContent = job.error || job.message;
  const history = job.detail?.history || [];
  chart(document.getElementById("loss-chart"), [
    { cls: "train", values: history.map((r) => r.train_loss) },
    { cls: "valid", values: history.map((r) => r.valid_loss) },
  ]);
  chart(document.getElementById("error-chart"), [{ cls: "error", values: history.map((r) => r.error_rate) }]);
  table(history);
  document.getElementById("cancel").hidden = !ACTIVE.includes(job.status);
  const link = document.getElementById("result-link");
  if (job.result?.model_id) {
    link.href = `/models/${job.result.model_id}`;
    link.hidden = false;
  }
}

show(JSON.parse(document.getElementById("job-data").textContent));
if (ACTIVE.includes(root.dataset.status)) watch(root.dataset.job, (job) => job && show(job));
document.getElementById("cancel").addEventListener("click", async (e) => {
  e.target.disabled = true;
  try {
    show(await send(`/api/v1/jobs/${root.dataset.job}/cancel`));
  } catch (err) {
    root.querySelector(".message").textContent = err.message;
  }
});
