// Documents page: the table follows uploads and parsing live (uploaded → parsing → parsed or
// failed) by polling the REST list while anything is still moving. No reload, no innerHTML.
// A document being parsed shows the same progress bar with an ETA as every other job
// (jobs_live.js), drawn from the list's progress_done/progress_total: the table is marked
// data-job-poll=off, so jobs_live.js does not poll each document on its own as well.
import {progressElement} from "./jobs_live.js";

const table = document.getElementById("documents");
const MOVING = new Set(["uploaded", "parsing", "queued"]);
const PERIOD_MS = 1500;

if (table && table.dataset.live === "on") {
  const pid = table.dataset.project;
  const body = table.tBodies[0];
  const query = new URLSearchParams({limit: "100"});
  if (table.dataset.status) query.set("status", table.dataset.status);
  let timer = null;
  let quietPolls = 0;

  const cell = (text, className) => {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  };
  const row = (d) => {
    const tr = document.createElement("tr");
    tr.dataset.doc = String(d.id);
    tr.dataset.status = d.status;
    const link = document.createElement("a");
    link.href = `/projects/${pid}/documents/${d.id}`;
    link.textContent = d.filename;
    const name = document.createElement("td");
    name.append(link);
    const status = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge " + d.status;
    badge.textContent = MOVING.has(d.status) ? d.status + "…" : d.status;
    status.append(badge);
    if (MOVING.has(d.status)) {
      status.append(" ", progressElement("parse", `/api/v1/projects/${pid}/documents/${d.id}`, d));
    }
    tr.append(name, status, cell(d.format), cell((d.size_bytes / 1024).toFixed(1) + " KiB"),
      cell(d.page_count ? String(d.page_count) : ""), cell(String(d.chunk_count)), cell(d.error || "", "danger"));
    return tr;
  };
  const empty = () => {
    const tr = document.createElement("tr");
    const td = cell("No documents yet.", "muted");
    td.colSpan = 7;
    tr.append(td);
    return tr;
  };
  const markUploads = (items) => {
    for (const d of items) {
      const msg = document.querySelector(`#upload-list li[data-doc="${d.id}"] span.muted`);
      if (msg) msg.textContent = d.status === "parsed" ? ` uploaded, parsed (${d.chunk_count} chunks)`
        : d.status === "failed" ? " uploaded, parsing failed" : ` uploaded, ${d.status}…`;
    }
  };

  async function poll() {
    timer = null;
    const res = await window.annotune.api("GET", `/api/v1/projects/${pid}/documents?${query}`);
    if (!res.ok || !res.data) return;
    const items = res.data.items;
    body.replaceChildren(...(items.length ? items.map(row) : [empty()]));
    markUploads(items);
    const moving = items.some((d) => MOVING.has(d.status));
    quietPolls = moving ? 0 : quietPolls + 1;
    if (moving || quietPolls < 2) schedule();  // a little longer: uploads may still be arriving
  }
  function schedule() { if (!timer) timer = setTimeout(poll, PERIOD_MS); }

  document.addEventListener("annotune:uploaded", () => { quietPolls = 0; schedule(); });
  if (Array.from(body.rows).some((tr) => MOVING.has(tr.dataset.status))) schedule();
}
