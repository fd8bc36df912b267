// Evaluation: start runs, pick runs to compare, follow a run and page through its predictions.
// User data is only ever put on the page with textContent.
(function () {
  const api = (m, u, b) => window.annotune.api(m, u, b);

  const form = document.getElementById("new-eval");
  if (form) {
    const v = (n) => form.querySelector(`[name=${n}]`);
    const showKind = () => {
      for (const el of form.querySelectorAll("[data-kind]")) el.style.display = el.dataset.kind === v("model_kind").value ? "" : "none";
    };
    v("model_kind").onchange = showKind;
    showKind();
    document.getElementById("start-eval").onclick = async () => {
      const msg = document.getElementById("eval-msg");
      let generation;
      try { generation = JSON.parse(v("generation").value || "{}"); } catch (e) { msg.textContent = "generation: not JSON"; return; }
      const metrics = [...form.querySelectorAll("[name=metrics]:checked")].map((el) => el.value);
      const body = {name: v("name").value, dataset_version_id: Number(v("dataset_version_id").value),
        split: v("split").value, model_kind: v("model_kind").value, generation, metrics};
      if (body.model_kind === "base") body.base_model = v("base_model").value;
      if (body.model_kind === "adapter") body.training_job_id = Number(v("training_job_id").value);
      if (body.model_kind === "endpoint") body.provider_id = Number(v("provider_id").value);
      const seps = v("separators").value.split(/\s+/).filter((s) => s);
      if (metrics.includes("keywords") && seps.length) body.metric_options = {keywords: {separators: seps}};
      const res = await api("POST", `/api/v1/projects/${form.dataset.project}/eval-runs`, body);
      if (res.ok) location.href = `/projects/${form.dataset.project}/evaluation/runs/${res.data.id}`;
      else msg.textContent = res.data && res.data.error ? window.annotune.errorText(res) : `HTTP ${res.status}`;
    };
  }

  const list = document.getElementById("eval-runs");
  const pick = document.getElementById("compare-selected");
  if (list && pick) {
    pick.onclick = () => {
      const ids = [...list.querySelectorAll(".compare-pick:checked")].map((el) => Number(el.value)).sort((a, b) => a - b);
      if (ids.length < 2) { document.getElementById("compare-msg").textContent = "pick at least two runs"; return; }
      location.href = `/projects/${list.dataset.project}/evaluation/compare?runs=${ids.join(",")}`;
    };
  }

  const box = document.getElementById("eval-run");
  if (!box) return;
  const base = `/api/v1/projects/${box.dataset.project}/eval-runs/${box.dataset.run}`;
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
  const promptText = (prompt) => {
    const users = prompt.filter((m) => m.role === "user");
    return users.length ? users[users.length - 1].content : prompt.map((m) => `${m.role}: ${m.content}`).join("\n");
  };
  let cursor = null;
  const more = document.getElementById("more-predictions");
  const load = async () => {
    const res = await api("GET", `${base}/predictions?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    if (!res.ok) return;
    const body = document.querySelector("#predictions tbody");
    for (const p of res.data.items) {
      const tr = document.createElement("tr");
      const scores = Object.entries(p.scores).map(([k, val]) => `${k} ${Number(val).toFixed(3)}`).join(", ");
      tr.append(cell(p.item_id), cell(promptText(p.prompt)), cell(p.error ? `error: ${p.error}` : p.prediction),
                cell(p.reference), cell(scores));
      for (const td of tr.children) td.style.whiteSpace = "pre-wrap";
      body.append(tr);
    }
    cursor = res.data.next_cursor;
    more.hidden = !cursor;
  };
  more.onclick = load;
  load();
  const poll = async () => {
    const res = await api("GET", base);
    if (!res.ok) return;
    const r = res.data;
    document.getElementById("run-status").textContent = r.status;
    document.getElementById("run-done").textContent = r.done;
    document.getElementById("run-failed").textContent = r.failed;
    // the bar and its ETA: jobs_live.js
    if (["queued", "running"].includes(r.status)) setTimeout(poll, 2000);
    else if (box.dataset.status !== r.status) finished(r);  // show the scores, no reload
  };
  const finished = (r) => {
    box.dataset.status = r.status;
    const names = Object.keys(r.aggregate || {});
    const metrics = document.getElementById("metrics");
    if (metrics && names.length) {
      const table = document.createElement("table");
      table.className = "list"; table.dataset.testid = "aggregate";
      const head = document.createElement("thead"); const hr = document.createElement("tr");
      for (const h of ["Metric", "Mean"]) { const th = document.createElement("th"); th.textContent = h; hr.append(th); }
      head.append(hr);
      const body = document.createElement("tbody");
      for (const k of names) {
        const v = r.aggregate[k];
        const tr = document.createElement("tr");
        tr.append(cell(k), cell(typeof v === "number" ? v.toFixed(4) : "–"));
        body.append(tr);
      }
      table.append(head, body);
      metrics.querySelector(".scores").replaceChildren(table);
    }
    document.querySelector("#predictions tbody").replaceChildren();
    cursor = null;
    load();
  };
  if (["queued", "running"].includes(box.dataset.status)) setTimeout(poll, 2000);
})();
