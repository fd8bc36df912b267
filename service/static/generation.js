// Generation page: live job counters, start jobs, add providers; template editor preview/save.
(function () {
  const api = (m, u, b) => window.annotune.api(m, u, b);
  const jobs = document.getElementById("jobs");
  if (jobs) {
    const pid = jobs.dataset.project;
    const base = `/api/v1/projects/${pid}/generation-jobs`;
    const refresh = async () => {
      for (const row of jobs.querySelectorAll("tr[data-job]")) {
        if (!["queued", "running", "paused"].includes(row.dataset.status)) continue;
        const res = await api("GET", `${base}/${row.dataset.job}`);
        if (!res.ok) continue;
        const j = res.data;
        row.dataset.status = j.status;
        row.querySelector(".st").textContent = j.status;
        row.querySelector(".done").textContent = `${j.done_units} / ${j.total_units}`;
        row.querySelector(".failed").textContent = j.failed_units;
        row.querySelector(".retried").textContent = j.retried;
        row.querySelector(".tok").textContent = `${j.prompt_tokens} / ${j.completion_tokens}`;
      }
    };
    setInterval(refresh, 2000);
    jobs.addEventListener("click", async (e) => {
      const action = e.target.dataset && e.target.dataset.action;
      if (!action) return;
      const row = e.target.closest("tr");
      await api("POST", `${base}/${row.dataset.job}/${action}`);
      row.dataset.status = "running"; refresh();
    });
    const start = document.getElementById("start-job");
    if (start) start.onclick = async () => {
      const box = document.getElementById("new-job");
      const val = (n) => box.querySelector(`[name=${n}]`);
      const docs = [...val("document_ids").selectedOptions].map((o) => Number(o.value));
      const params = {};
      if (val("n").value) params.n = Number(val("n").value);
      const res = await api("POST", base, {template_id: Number(val("template_id").value),
        provider_id: Number(val("provider_id").value), samples_per_chunk: Number(val("samples_per_chunk").value),
        document_ids: docs.length ? docs : null, params});
      const msg = document.getElementById("job-msg");
      if (res.ok) location.reload(); else msg.textContent = res.data.error.message;
    };
    for (const btn of document.querySelectorAll("[data-test-provider]")) {
      btn.onclick = async () => {
        const id = btn.dataset.testProvider;
        const out = document.querySelector(`[data-test-result="${id}"]`);
        out.textContent = "testing…";
        const res = await api("POST", `/api/v1/projects/${pid}/providers/${id}/test`);
        const d = res.data || {};
        out.textContent = res.ok && d.ok ? `ok (${(d.latency_s || 0).toFixed(2)} s)` : `failed: ${d.error || (d.error && d.error.message) || res.status}`;
      };
    }
    const add = document.getElementById("add-provider");
    if (add) add.onclick = async () => {
      const box = document.getElementById("new-provider");
      const body = {};
      for (const el of box.querySelectorAll("input, select")) if (el.value !== "") body[el.name] = el.type === "number" ? Number(el.value) : el.value;
      const res = await api("POST", `/api/v1/projects/${pid}/providers`, body);
      if (res.ok) location.reload(); else document.getElementById("prov-msg").textContent = res.data.error.message;
    };
  }
  const tpl = document.getElementById("template");
  if (tpl) {
    const pid = tpl.dataset.project;
    const msg = document.getElementById("tmsg");
    document.getElementById("preview").onclick = async () => {
      const chunk = tpl.querySelector("[name=chunk_id]").value;
      const res = await api("POST", `/api/v1/projects/${pid}/templates/${tpl.dataset.template}/preview`,
        {chunk_id: chunk ? Number(chunk) : null});
      document.getElementById("rendered").textContent = res.ok ? res.data.rendered : res.data.error.message;
    };
    const save = document.getElementById("save");
    if (save) save.onclick = async () => {
      let parser;
      try { parser = JSON.parse(tpl.querySelector("[name=parser]").value); } catch (e) { msg.textContent = "parser is not JSON"; return; }
      const res = await api("POST", `/api/v1/projects/${pid}/templates`, {
        name: tpl.querySelector("[name=name]").value, kind: tpl.dataset.kind, lang: tpl.dataset.lang,
        text: tpl.querySelector("[name=text]").value, parser});
      if (res.ok) location.href = `/projects/${pid}/templates/${res.data.id}`; else msg.textContent = res.data.error.message;
    };
  }
})();
