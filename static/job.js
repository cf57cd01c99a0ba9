// A job's page: one progress bar for the whole job with its step in plain words and the time
// left, live loss and error curves (inline SVG), the epoch table, cancel.
import { send } from "./api.js";
import { ACTIVE, watch } from "./jobs.js";

const root = document.getElementById("job");
const bar = root.querySelector("progress");
const phaseLine = document.getElementById("phase");
const etaLine = document.getElementById("eta");
const expected = JSON.parse(document.getElementById("job-expected")?.textContent || "null");
const NS = "http://www.w3.org/2000/svg";
const W = 400, H = 210, PAD = 32, BASE = H - 44;

// The phases a training's progress events name, in order, in plain words, with a rough share
// of the whole job. The worker's progress is already one fraction for the whole job; the
// shares only matter if a phase's progress starts again from zero. A phase this table does
// not know is shown by its own name and gets a small share.
const PHASES = {
  decode: { name: "Looking at your photos", share: 0.05 },
  frozen: { name: "Looking at your photos", share: 0.6 },
  head: { name: "Learning your labels", share: 0.1 },
  folds: { name: "Checking on photos it has not seen", share: 0.05 },
  unfrozen: { name: "Fine-tuning the whole network", share: 0.6 },
  bank: { name: "Remembering your photos for “None of these”", share: 0.1 },
  sweep: { name: "Trying learning rates", share: 0.2 },
  export: { name: "Packaging the model for serving", share: 0 },
  done: { name: "Finished", share: 0 },
};
const ORDER = Object.keys(PHASES);
const STEP_NAMES = { frozen: "Learning your labels", unfrozen: "Fine-tuning the whole network" };
const UNKNOWN_SHARE = 0.05;

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 0.05) return "under 0.1 s";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 59.5) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(Math.round(seconds) / 60), rest = Math.round(seconds) % 60;
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

const percent = (v) => `${(v * 100).toFixed(1)}%`;
const time = (iso) => iso ? Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`) : NaN;

function phaseName(phase, job) {
  // The frozen phase first looks at every photo (features), then learns the head: its
  // curves' first point says which.
  if (phase === "frozen" && (job.detail?.history || []).some((r) => r.phase === "frozen")) {
    return PHASES.head.name;
  }
  if (PHASES[phase]) return PHASES[phase].name;
  return phase ? phase.charAt(0).toUpperCase() + phase.slice(1).replaceAll("_", " ") : "Working";
}

// The job's progress as one bar that never goes back: the worker's fraction while it only
// grows; if a new phase starts again from zero, the rest of the bar is shared out by PHASES.
const bar1 = { shown: 0, phase: null, floor: 0, span: 1, seen: new Set() };

function overall(job) {
  const phase = job.detail?.phase ?? null;
  const p = Math.min(Math.max(job.progress || 0, 0), 1);
  if (phase !== bar1.phase) {
    if (bar1.phase !== null && p < bar1.shown - 0.01) {
      const left = ORDER.filter((name) => !bar1.seen.has(name));
      const total = left.reduce((sum, name) => sum + PHASES[name].share, 0) || 1;
      const share = PHASES[phase]?.share ?? UNKNOWN_SHARE;
      bar1.floor = bar1.shown;
      bar1.span = (1 - bar1.shown) * Math.min(1, share / total);
    } else {
      bar1.floor = 0;
      bar1.span = 1;
    }
    bar1.phase = phase;
    bar1.seen.add(phase);
  }
  const value = bar1.span === 1 && bar1.floor === 0 ? p : bar1.floor + bar1.span * p;
  bar1.shown = Math.max(bar1.shown, Math.min(value, 1));
  return bar1.shown;
}

// A step's progress message in plain words: "608/1416" reads "608 of 1416".
function stepText(job) {
  const phase = job.detail?.phase;
  const message = job.message || "";
  const count = message.match(/(\d+)\/(\d+)/);
  const of = count ? `${count[1]} of ${count[2]}` : "";
  const last = (job.detail?.history || []).slice(-1)[0];
  const errorNow = last ? ` · error rate so far ${percent(last.error_rate)}` : "";
  if (job.status !== "running") return message;
  if (phase === "export") return "Saving the model in the format the server runs (ONNX) and storing it";
  if (!count) return message;
  switch (phase) {
    case "decode": return `Photo ${of}`;
    case "frozen": return last ? `Head epoch ${of}${errorNow}` : `${of} views of your photos (each photo and its altered copies)`;
    case "folds": return `Round ${of}: each round, a fifth of the photos is judged by a head that has not seen them`;
    case "unfrozen": return `Whole-network epoch ${of}${errorNow}`;
    case "bank": return `Photo ${of}`;
    default: return message;
  }
}

const clock = { exportSince: null, timer: null, job: null };

function estimate(job, fraction) {
  if (job.status === "queued") return "Waiting for a worker to start it…";
  if (job.status !== "running") {
    const took = (time(job.finished_at) - time(job.started_at)) / 1000;
    return Number.isFinite(took) && took >= 0 ? `Took ${duration(took)}.` : "";
  }
  const elapsed = (Date.now() - time(job.started_at)) / 1000;
  const packaging = expected?.packaging_s ?? 20;
  const phase = job.detail?.phase;
  if (phase === "export") {
    const since = (Date.now() - clock.exportSince) / 1000;
    return `Packaging for ${duration(since)} (it usually takes about ${duration(packaging)}) · ${duration(elapsed)} in all`;
  }
  let left = null;
  if (Number.isFinite(elapsed) && elapsed >= 3 && fraction >= 0.05) {
    left = (elapsed * (1 - fraction)) / fraction + packaging;  // from the rate so far
  } else if (expected?.total_s) {
    left = Math.max(expected.total_s - (Number.isFinite(elapsed) ? elapsed : 0), packaging);
  }
  const so = Number.isFinite(elapsed) ? `${duration(Math.max(elapsed, 0))} so far` : "";
  if (left === null) return so ? `Estimating the time left… · ${so}` : "Estimating the time left…";
  const words = left < 10 ? "Almost done" : left < 60
    ? `About ${Math.max(10, Math.round(left / 5) * 5)} s left` : `About ${Math.round(left / 60)} min left`;
  return so ? `${words} · ${so}` : words;
}

function progress(job) {
  const fraction = overall(job);
  const phase = job.detail?.phase;
  const packaging = job.status === "running" && phase === "export";
  if (packaging) {
    clock.exportSince ??= Date.now();
    bar.removeAttribute("value");  // indeterminate: it moves while the model is packaged
  } else {
    bar.value = job.status === "succeeded" ? 1 : fraction;
  }
  bar.textContent = `${Math.round(fraction * 100)}%`;
  if (!phaseLine) return;
  root.dataset.phase = phase || "";
  phaseLine.textContent = job.status === "running" ? `${phaseName(phase, job)}…`
    : job.status === "succeeded" ? "Finished" : job.status === "queued" ? "Queued" : "";
  etaLine.textContent = estimate(job, fraction);
}

function svgEl(name, attrs) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function text(svg, x, y, content, anchor = "middle") {
  const t = svgEl("text", { x, y, "text-anchor": anchor, class: "axis" });
  t.textContent = content;
  svg.append(t);
}

// x: one point per epoch, numbered as the recipe counts them (head epochs 1..n, then
// whole-network epochs 1..m), a dashed line between the two.
function chart(svg, history, series, format) {
  if (!svg) return;
  svg.replaceChildren();
  const points = series.flatMap((s) => history.map(s.value));
  if (!points.length) return text(svg, W / 2, H / 2, "waiting for the first epoch…");
  const n = Math.max(2, history.length);
  const top = Math.max(...points) * 1.1 || 1;
  const x = (i) => PAD + 6 + (i * (W - PAD - 20)) / (n - 1);
  const y = (v) => BASE - (v / top) * (BASE - 8);
  svg.append(svgEl("line", { x1: PAD, y1: BASE, x2: W - 8, y2: BASE, class: "axis-line" }));
  svg.append(svgEl("line", { x1: PAD, y1: 4, x2: PAD, y2: BASE, class: "axis-line" }));
  for (const v of [0, top / 2, top]) text(svg, PAD - 4, y(v) + 4, format(v), "end");
  history.forEach((row, i) => text(svg, x(i), BASE + 14, String(row.epoch)));
  const split = history.findIndex((row) => row.phase !== history[0].phase);
  const head = split < 0 ? history.length : split;
  let caption = `head epoch (1–${head})`;
  if (split > 0) {
    const mid = (x(split - 1) + x(split)) / 2;
    svg.append(svgEl("line", { x1: mid, y1: 4, x2: mid, y2: BASE, class: "axis-line phase-split" }));
    caption += `, then whole-network epoch (1–${history.length - split})`;
  }
  text(svg, W / 2, H - 6, caption);
  for (const s of series) {
    const d = history.map((r, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(s.value(r)).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { d, class: `curve ${s.cls}` }));
    history.forEach((r, i) => svg.append(svgEl("circle", { cx: x(i), cy: y(s.value(r)), r: 3, class: `dot ${s.cls}` })));
  }
}

function table(history) {
  const body = document.querySelector("#epochs tbody");
  if (!body) return;
  body.replaceChildren(...history.map((row) => {
    const tr = document.createElement("tr");
    const cells = [STEP_NAMES[row.phase] || phaseName(row.phase, {}), row.epoch,
      row.train_loss?.toFixed(3), row.valid_loss?.toFixed(3),
      row.error_rate === undefined ? "" : percent(row.error_rate), duration(row.seconds)];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v ?? "";
      tr.append(td);
    }
    return tr;
  }));
}

function show(job) {
  clock.job = job;
  root.dataset.status = job.status;
  const badge = root.querySelector(".status");
  badge.textContent = job.status;
  badge.className = `badge status ${job.status}`;
  progress(job);
  const training = job.kind === "training";
  root.querySelector(".message").textContent = job.error || (training ? stepText(job) : job.message);
  const history = (job.detail?.history || []).filter((r) => r.error_rate !== undefined);
  chart(document.getElementById("loss-chart"), history, [
    { cls: "train", value: (r) => r.train_loss },
    { cls: "valid", value: (r) => r.valid_loss },
  ], (v) => v.toFixed(2));
  chart(document.getElementById("error-chart"), history,
    [{ cls: "error", value: (r) => r.error_rate }], (v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`);
  table(history);
  document.getElementById("cancel").hidden = !ACTIVE.includes(job.status);
  const link = document.getElementById("result-link");
  if (job.result?.model_id) {
    link.href = `/models/${job.result.model_id}`;
    link.hidden = false;
  }
}

show(JSON.parse(document.getElementById("job-data").textContent));
if (ACTIVE.includes(root.dataset.status)) {
  watch(root.dataset.job, (job) => job && show(job));
  // The time so far and the packaging clock move between events too.
  clock.timer = setInterval(() => {
    if (!ACTIVE.includes(clock.job.status)) return clearInterval(clock.timer);
    if (phaseLine) etaLine.textContent = estimate(clock.job, bar1.shown);
  }, 1000);
}
document.getElementById("cancel").addEventListener("click", async (e) => {
  e.target.disabled = true;
  try {
    show(await send(`/api/v1/jobs/${root.dataset.job}/cancel`));
  } catch (err) {
    root.querySelector(".message").textContent = err.message;
  }
});
