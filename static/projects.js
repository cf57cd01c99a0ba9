// New-project form: add another label/query row.
const rows = document.getElementById("label-rows");
document.getElementById("add-label").addEventListener("click", () => {
  const n = rows.children.length;
  const row = rows.lastElementChild.cloneNode(true);
  for (const el of row.querySelectorAll("input, label")) {
    if (el.htmlFor) el.htmlFor = el.htmlFor.replace(/\d+$/, n);
    if (el.id) el.id = el.id.replace(/\d+$/, n);
    if (el.tagName === "INPUT") { el.value = ""; el.placeholder = ""; }
  }
  row.querySelector("label").textContent = `Label ${n + 1}`;
  rows.append(row);
  row.querySelector("input").focus();
});
