// Generation page: the New job form previews what Start will do (units, prompts, tokens, time),
// asks before a large job, never runs over every document by default; the jobs table shows
// progress with an ETA and only the actions that fit each job's status.
import {duration, show} from "./progress.js";

const api = (m, u, b) => window.annotune.api(m, u, b);
const jobs = document.getElementById("jobs");
const form = document.getElementById("new-job");
const pid = jobs && jobs.dataset.project;
const base = `/api/v1/projects/${pid}/generation-jobs`;
const LIVE = new Set(["queued", "running", "paused", "cancelling"]);

const errorText = (res) => window.annotune.errorText(res);

// -- jobs table
function paint(row, j) {
  row.dataset.status = j.status;
  if (j.started_at) row.dataset.started = j.started_at;
  // a queued job says why it is not running yet (no free worker on its queue, or not yet sent)
  row.querySelector(".st").textContent = j.waiting ? `${j.status} (${j.waiting})` : j.status;
  row.querySelector(".done").textContent = `${j.done_units} / ${j.total_units}`;
  // failed units by reason (truncated, wrong_shape, ...); the job's error on hover
  const reasons = Object.entries(j.failure_reasons || {}).map(([code, n]) => `${n} ${code}`).join(", ");
  const failed = row.querySelector(".failed");
  failed.textContent = reasons ? `${j.failed_units} (${reasons})` : j.failed_units;
  failed.title = j.error || "";
  row.querySelector(".retried").textContent = j.retried;
  row.querySelector(".tok").textContent = `${j.prompt_tokens} / ${j.completion_tokens}`;
  paintProgress(row, j.done_units + j.failed_units, j.total_units);
  const allowed = {pause: ["queued", "running"], resume: ["paused"], cancel: ["queued", "running", "paused"]};
  for (const b of row.querySelectorAll("button[data-action]")) b.hidden = !allowed[b.dataset.action].includes(j.status);
}
function paintProgress(row, done, total) {
  const cell = row.querySelector(".progress-cell");
  if (cell) show(cell, {done, total, startedAt: row.dataset.started, finished: !LIVE.has(row.dataset.status)});
}
async function refresh() {
  for (const row of jobs.querySelectorAll("tr[data-job]")) {
    // a job asked to stop keeps counting until its runner sees the flag: poll until it is final
    if (!LIVE.has(row.dataset.status) && !row.dataset.settling) continue;
    const res = await api("GET", `${base}/${row.dataset.job}`);
    if (!res.ok) continue;
    paint(row, res.data);
    if (!LIVE.has(res.data.status) && row.dataset.settling) {
      row.dataset.settling = String(Number(row.dataset.settling) - 1);
      if (row.dataset.settling === "0") delete row.dataset.settling;
    }
  }
}
if (jobs) {
  for (const row of jobs.querySelectorAll("tr[data-job]")) {
    const [done, total] = row.querySelector(".done").textContent.split("/").map((x) => Number(x));
    paintProgress(row, done + Number(row.querySelector(".failed").textContent), total);
  }
  setInterval(refresh, 2000);
  jobs.addEventListener("click", async (e) => {
    const action = e.target.dataset && e.target.dataset.action;
    if (!action) return;
    const row = e.target.closest("tr");
    const res = await api("POST", `${base}/${row.dataset.job}/${action}`);
    if (res.ok) { row.dataset.settling = "3"; paint(row, res.data); }
    refresh();
  });
}

// -- new job form
function parseIds(text) {
  const ids = [];
  for (const part of text.split(/[\s,，]+/).filter(Boolean)) {
    const m = part.match(/^(\d+)(?:-(\d+))?$/);
    if (!m) throw new Error(`"${part}" is not a chunk id or a range like 12-40`);
    const a = Number(m[1]), b = Number(m[2] || m[1]);
    if (b < a || b - a > 100000) throw new Error(`"${part}" is not a usable range`);
    for (let i = a; i <= b; i++) ids.push(i);
  }
  return ids;
}
function body() {
  const val = (n) => form.querySelector(`[name=${n}]`);
  const docs = [...val("document_ids").selectedOptions].map((o) => Number(o.value));
  const chunks = parseIds(val("chunk_ids").value);
  if (!docs.length && !chunks.length && !val("all_documents").checked)
    throw new Error("Choose documents or chunks, or tick “every parsed document”.");
  const params = {};
  if (val("n").value) params.n = Number(val("n").value);
  const kind = val("template_id").selectedOptions[0]?.dataset.kind;
  if (kind === "question" && val("answer_template_id").value) params.answer_template_id = Number(val("answer_template_id").value);
  const pairs = val("ga_pair_ids") ? [...val("ga_pair_ids").selectedOptions].map((o) => Number(o.value)) : [];
  if (pairs.length) params.ga_pair_ids = pairs;  // a genre–audience fan-out
  if (val("domain_leaf_id") && val("domain_leaf_id").value) params.domain_leaf_id = Number(val("domain_leaf_id").value);
  return {template_id: Number(val("template_id").value), provider_id: Number(val("provider_id").value),
    samples_per_chunk: Number(val("samples_per_chunk").value), document_ids: docs.length ? docs : null,
    chunk_ids: chunks.length ? chunks : null, params};
}
function describe(p) {
  const time = p.estimated_seconds == null ? "time unknown until this provider has answered a job"
    : `about ${duration(p.estimated_seconds)} (measured ${p.provider.latency_s.toFixed(2)} s per call)`;
  return `${p.units} unit(s) of ${p.template} over ${p.chunks} chunk(s)` +
    (p.skipped_units ? ` (${p.skipped_units} already generated, skipped)` : "") +
    ` · ${p.prompts} prompt(s) · ~${p.estimated_prompt_tokens} prompt + ~${p.estimated_completion_tokens} completion tokens · ${time}`;
}
async function plan(msg) {
  let b;
  try { b = body(); } catch (err) { msg.textContent = err.message; return null; }
  const res = await api("POST", `${base}/plan`, b);
  const box = document.getElementById("job-plan");
  if (!res.ok) { msg.textContent = errorText(res); box.hidden = true; return null; }
  box.textContent = describe(res.data) + (res.data.notes.length ? " — " + res.data.notes.join("; ") : "");
  box.hidden = false;
  msg.textContent = "";
  return {body: b, plan: res.data};
}
async function start(b, msg) {
  msg.textContent = "starting…";
  const res = await api("POST", base, b);
  if (res.ok) location.reload(); else msg.textContent = errorText(res);
}
if (form) {
  const msg = document.getElementById("job-msg");
  const confirmBox = document.getElementById("job-confirm");
  const answerLabel = form.querySelector("[data-for-kind=question]");
  const templateSelect = form.querySelector("[name=template_id]");
  const syncKind = () => { answerLabel.hidden = templateSelect.selectedOptions[0]?.dataset.kind !== "question"; };
  templateSelect.addEventListener("change", syncKind);
  syncKind();
  let pending = null;
  document.getElementById("plan-job").addEventListener("click", () => plan(msg));
  document.getElementById("start-job").addEventListener("click", async () => {
    confirmBox.hidden = true;
    const p = await plan(msg);
    if (!p) return;
    if (p.plan.units === 0) { msg.textContent = "Nothing to do: every unit was already generated."; return; }
    if (p.plan.confirm) {
      pending = p.body;
      document.getElementById("job-confirm-text").textContent =
        `This starts ${p.plan.units} units (more than ${p.plan.threshold}). ${describe(p.plan)}. Start anyway?`;
      confirmBox.hidden = false;
      document.getElementById("job-confirm-ok").focus();
      return;
    }
    start(p.body, msg);
  });
  document.getElementById("job-confirm-ok").addEventListener("click", () => { confirmBox.hidden = true; if (pending) start(pending, msg); });
  document.getElementById("job-confirm-cancel").addEventListener("click", () => { confirmBox.hidden = true; pending = null; msg.textContent = "Not started."; });
}
