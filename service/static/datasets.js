// Version page: when the build finishes (jobs_live.js) the heading says so and a link offers its
// statistics; when an export finishes its download link appears. No reload, text only.
const build = document.getElementById("version-build");
if (build) {
  build.addEventListener("annotune:job-finished", (e) => {
    const badge = document.querySelector("[data-testid=version-status]");
    if (badge) badge.textContent = e.detail.status;
    document.getElementById("version-ready").hidden = e.detail.status !== "ready";
  });
}
for (const cell of document.querySelectorAll("[data-testid=exports] [data-job-url]")) {
  cell.addEventListener("annotune:job-finished", (e) => {
    const files = cell.closest("tr").querySelector(".export-files");
    if (!files || e.detail.status !== "ready" || files.querySelector("a")) return;
    const a = document.createElement("a");
    a.href = `${cell.dataset.jobUrl}/download`;
    a.textContent = (e.detail.files && e.detail.files.zip) || "download";
    files.append(a);
  });
}
