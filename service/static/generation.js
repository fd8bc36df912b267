// Generation page: test and add providers; template editor preview/save (jobs: generation_form.js).
(function () {
  const api = (m, u, b) => window.annotune.api(m, u, b);
  const jobs = document.getElementById("jobs");
  if (jobs) {
    const pid = jobs.dataset.project;
    // the jobs table and the New job form: generation_form.js
    for (const btn of document.querySelectorAll("[data-test-provider]")) {
      btn.onclick = async () => {
        const id = btn.dataset.testProvider;
        const out = document.querySelector(`[data-test-result="${id}"]`);
        const began = Date.now();
        const tick = () => { out.textContent = `testing… ${Math.round((Date.now() - began) / 1000)} s (waits for the provider's timeout at most)`; };
        tick();
        const timer = setInterval(tick, 1000);
        btn.disabled = true;
        const res = await api("POST", `/api/v1/projects/${pid}/providers/${id}/test`);
        clearInterval(timer);
        btn.disabled = false;
        const d = res.data || {};
        const why = typeof d.error === "string" ? d.error : (d.error && d.error.message) || `HTTP ${res.status}`;
        out.textContent = res.ok && d.ok ? `ok (${(d.latency_s || 0).toFixed(2)} s)` : `failed after ${Math.round((Date.now() - began) / 1000)} s: ${why}`;
      };
    }
    const add = document.getElementById("add-provider");
    if (add) add.onclick = async () => {
      const box = document.getElementById("new-provider");
      const body = {};
      for (const el of box.querySelectorAll("input, select")) if (el.value !== "") body[el.name] = el.type === "number" ? Number(el.value) : el.value;
      const res = await api("POST", `/api/v1/projects/${pid}/providers`, body);
      if (res.ok) location.reload(); else document.getElementById("prov-msg").textContent = window.annotune.errorText(res);
    };
  }
  const tpl = document.getElementById("template");
  if (tpl) {
    const pid = tpl.dataset.project;
    const msg = document.getElementById("tmsg");
    document.getElementById("preview").onclick = async () => {
      const chunk = tpl.querySelector("[name=chunk_id]").value;
      const res = await api("POST", `/api/v1/projects/${pid}/templates/${tpl.dataset.template}/preview`,
        {chunk_id: chunk ? Number(chunk) : null, text: tpl.querySelector("[name=text]").value});
      document.getElementById("rendered").textContent = res.ok ? res.data.rendered : window.annotune.errorText(res);
    };
    const save = document.getElementById("save");
    if (save) save.onclick = async () => {
      let parser;
      try { parser = JSON.parse(tpl.querySelector("[name=parser]").value); } catch (e) { msg.textContent = "parser is not JSON"; return; }
      const res = await api("POST", `/api/v1/projects/${pid}/templates`, {
        name: tpl.querySelector("[name=name]").value, kind: tpl.dataset.kind, lang: tpl.dataset.lang,
        text: tpl.querySelector("[name=text]").value, parser});
      if (res.ok) location.href = `/projects/${pid}/templates/${res.data.id}`; else msg.textContent = window.annotune.errorText(res);
    };
  }
})();
