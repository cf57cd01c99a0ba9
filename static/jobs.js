// Live job progress from the job's server-sent events.
export const ACTIVE = ["queued", "running"];

export function watch(jobId, onUpdate) {
  const events = new EventSource(`/api/v1/jobs/${jobId}/events`);
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    onUpdate(job);
    if (!ACTIVE.includes(job.status)) events.close();
  });
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) onUpdate(null); };
  return events;
}

export function counters(detail) {
  if (!detail) return "";
  return ["found", "downloaded", "duplicates", "rejected", "failed"]
    .filter((k) => detail[k] !== undefined).map((k) => `${k} ${detail[k]}`).join(" · ");
}

export function showJob(row, job) {
  row.dataset.status = job.status;
  row.querySelector(".status").textContent = job.status;
  row.querySelector(".status").className = `status badge ${job.status}`;
  row.querySelector("progress").value = job.progress;
  row.querySelector(".message").textContent = job.error || job.message;
  const extra = row.querySelector(".counters");
  if (extra) extra.textContent = counters(job.detail);
}

export function jobRow(job) {
  const li = document.createElement("li");
  li.dataset.job = job.id;
  li.innerHTML = '<a><strong></strong></a> <span class="status badge"></span> <progress max="1"></progress> <span class="message"></span> <span class="counters"></span>';
  li.querySelector("a").href = `/jobs/${job.id}`;
  li.querySelector("strong").textContent = job.title;  // "Search #2": per kind, per project
  showJob(li, job);
  return li;
}
