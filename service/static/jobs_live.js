// Live job progress on any page, without a reload: every [data-job-url] element (rendered by the
// job_progress macro, templates/pages/_progress.html) polls its job's REST shape while the job is
// not finished, fills its <progress> and ETA (progress.js) from the job's own counters, and the
// text of the [data-job-field] elements beside it (status, counters, "counts.train"; data-job-hide-empty: hidden
// while empty). A job that has counted nothing yet shows an indeterminate bar while it moves. Each poll fires
// "annotune:job-progress" on the element, the last one "annotune:job-finished" too (detail: the job).
// Elements inside [data-job-poll=off] are drawn but not polled: their page refreshes them from a
// list of its own and paints them with paint() (the Documents table, documents_live.js); an
// element removed from the page stops being polled.
import {show} from "./progress.js";

const PERIOD_MS = 1500;
// per kind: its finished words, and done/total from its REST shape
const KINDS = {
  import: {finished: ["succeeded", "rejected", "failed", "cancelled"],
    counts: (j) => [j.bytes_read, j.bytes_total]},
  build: {finished: ["ready", "failed", "cancelled"],
    counts: (j) => [j.progress_done, j.progress_total]},
  export: {finished: ["ready", "failed", "cancelled"], counts: (j) => [j.progress, 100]},
  training: {finished: ["succeeded", "failed", "cancelled"], counts: (j) => [j.step, j.total_steps]},
  eval: {finished: ["succeeded", "failed", "cancelled"], counts: (j) => [j.done + j.failed, j.total]},
  parse: {queued: "uploaded", finished: ["parsed", "failed"],
    counts: (j) => [j.progress_done, j.progress_total]},
};
// the page renders done/total as numbers; these are the kind's own field names for them
const INIT_NAMES = {import: ["bytes_read", "bytes_total"], build: ["progress_done", "progress_total"],
  export: ["progress", null], training: ["step", "total_steps"], eval: ["done", "total"],
  parse: ["progress_done", "progress_total"]};

const kindOf = (el) => KINDS[el.dataset.jobKind];
const finished = (el, status) => kindOf(el).finished.includes(status);
const scope = (el) => el.closest("[data-job-scope]") || el.parentElement;

export function paint(el, job, initial = false) {
  const kind = kindOf(el);
  const [done, total] = kind.counts(job);
  const over = finished(el, job.status);
  el.dataset.status = job.status;
  if (job.started_at) el.dataset.started = job.started_at;
  const bar = el.querySelector("progress");
  if (total && (over || done > 0)) {
    // a finished job shows where it got to; one that succeeded is full
    const ok = over && !["failed", "cancelled", "rejected"].includes(job.status);
    show(el, {done: ok ? total : done || 0, total, startedAt: el.dataset.started, finished: over});
  } else if (bar) {
    // nothing counted yet: empty while queued (with the reason it waits), indeterminate while
    // it starts (or where the kind counts nothing, or SQLite shows the count only at the end)
    if (over) { bar.max = 1; bar.value = job.status === "failed" ? 0 : 1; }
    else if (job.status === (kind.queued || "queued")) { bar.max = 1; bar.value = 0; }
    else bar.removeAttribute("value");
    const eta = el.querySelector(".eta");
    if (eta) eta.textContent = !over && job.waiting ? job.waiting : "";
  }
  if (initial) return;  // the page rendered the fields; only the bar is drawn from its numbers
  for (const f of scope(el).querySelectorAll("[data-job-field]")) {
    const value = f.dataset.jobField.split(".").reduce((o, k) => (o == null ? undefined : o[k]), job);
    if (value === undefined) continue;
    f.textContent = value === null ? "" : String(value);
    if ("jobHideEmpty" in f.dataset) f.hidden = !f.textContent;
  }
  el.dispatchEvent(new CustomEvent("annotune:job-progress", {bubbles: true, detail: job}));
  if (over) el.dispatchEvent(new CustomEvent("annotune:job-finished", {bubbles: true, detail: job}));
}

async function poll(el) {
  const res = await window.annotune.api("GET", el.dataset.jobUrl);
  if (res.ok && res.data) paint(el, res.data);
  return !finished(el, el.dataset.status);
}

export function follow(root = document) {
  const found = [...root.querySelectorAll("[data-job-url][data-job-kind]")].filter(kindOf);
  for (const el of found) {
    const [done, total] = [Number(el.dataset.initDone), Number(el.dataset.initTotal)];
    paint(el, {status: el.dataset.status, started_at: el.dataset.started || null,
      ...fromInit(el, done, total)}, true);
  }
  let all = found.filter((el) => !el.closest("[data-job-poll=off]"));
  const moving = () => all.some((el) => !finished(el, el.dataset.status));
  const tick = async () => {
    all = all.filter((el) => el.isConnected);
    const live = all.filter((el) => !finished(el, el.dataset.status));
    for (const el of live) await poll(el);
    if (moving()) setTimeout(tick, PERIOD_MS);
  };
  if (moving()) setTimeout(tick, PERIOD_MS);
}

// The same element as the job_progress macro (templates/pages/_progress.html), for rows a page
// builds itself from a REST list; paint() it with the job.
export function progressElement(kind, url, job) {
  const el = document.createElement("span");
  el.className = "job-progress";
  el.dataset.testid = "job-progress";
  Object.assign(el.dataset, {jobKind: kind, jobUrl: url, status: job.status,
    started: job.started_at || "", initDone: "0", initTotal: "0"});
  const eta = document.createElement("span");
  eta.className = "eta muted";
  el.append(document.createElement("progress"), " ", eta);
  paint(el, job, true);
  return el;
}

// map the rendered done/total back onto the kind's own field names
function fromInit(el, done, total) {
  const names = INIT_NAMES[el.dataset.jobKind];
  if (!names) return {};
  const out = {[names[0]]: Number.isFinite(done) ? done : 0, failed: 0};
  if (names[1]) out[names[1]] = Number.isFinite(total) && total > 0 ? total : null;
  return out;
}

follow();
