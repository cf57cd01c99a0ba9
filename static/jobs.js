// Live job progress on the project page, from the job's server-sent events.
for (const row of document.querySelectorAll("[data-job]")) {
  if (!["queued", "running"].includes(row.dataset.status)) continue;
  const events = new EventSource(`/api/v1/jobs/${row.dataset.job}/events`);
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    row.querySelector(".status").textContent = job.status;
    row.querySelector("progress").value = job.progress;
    row.querySelector(".message").textContent = job.error || job.message;
    if (!["queued", "running"].includes(job.status)) {
      events.close();
      if (job.status === "succeeded") location.reload();
    }
  });
}
