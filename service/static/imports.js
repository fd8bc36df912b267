// Import page: its counts follow the import (jobs_live.js); when it finishes, its per-line report
// and the link to the imported samples appear without a reload. Text only (textContent), never markup.
const box = document.getElementById("import-job");
const table = document.querySelector("[data-testid=import-report] tbody");

if (box && table) {
  box.addEventListener("annotune:job-progress", (e) => {
    const j = e.detail;
    document.getElementById("import-counts").textContent =
      `Lines read ${j.lines_read} · imported ${j.imported} · skipped ${j.skipped}`;
  });
  box.addEventListener("annotune:job-finished", (e) => {
    const job = e.detail;
    document.getElementById("imported-link").hidden = !job.imported;
    if (!job.report || !job.report.length) return;
    const rows = job.report.slice(0, 1000).map((r) => {
      const tr = document.createElement("tr");
      for (const v of [r.line, r.index, r.code, r.field, r.message]) {
        const td = document.createElement("td");
        td.textContent = v === null || v === undefined ? "" : String(v);
        tr.append(td);
      }
      return tr;
    });
    table.replaceChildren(...rows);
  });
}
