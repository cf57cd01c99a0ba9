// Fetch helpers for the JSON API: CSRF header, readable errors, a toast for feedback.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export function errorText(data, status) {
  if (typeof data?.detail === "string") return data.detail;
  if (Array.isArray(data?.detail)) return data.detail.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
  if (status === 404) return "This feature is not available on this server yet.";
  return `Something went wrong (HTTP ${status}).`;
}

export async function send(url, { method = "POST", json, form } = {}) {
  const headers = { "X-CSRF-Token": csrf };
  let body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorText(data, response.status));
  return data;
}

let hideTimer;
export function toast(message, { undo } = {}) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.replaceChildren(document.createTextNode(message));
  if (undo) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Undo";
    button.addEventListener("click", undo);
    box.append(" ", button);
  }
  box.hidden = false;
  clearTimeout(hideTimer);
  hideTimer = setTimeout(() => { box.hidden = true; }, 6000);
}
