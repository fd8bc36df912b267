// Training: start jobs; job page polls events (?after= cursor) and redraws the loss curve.
(function () {
  const api = (m, u, b) => window.annotune.api(m, u, b);
  const form = document.getElementById("new-training");
  if (form) {
    document.getElementById("start-training").onclick = async () => {
      const v = (n) => form.querySelector(`[name=${n}]`);
      let hp;
      try { hp = JSON.parse(v("hyperparameters").value || "{}"); } catch (e) { document.getElementById("train-msg").textContent = "hyperparameters: not JSON"; return; }
      if (v("max_steps").value) hp.max_steps = Number(v("max_steps").value);
      const res = await api("POST", `/api/v1/projects/${form.dataset.project}/training-jobs`, {
        dataset_version_id: Number(v("dataset_version_id").value), base_model: v("base_model").value,
        method: v("method").value, hyperparameters: hp, evaluate_after: v("evaluate_after").checked});
      if (res.ok) location.href = `/projects/${form.dataset.project}/training/${res.data.id}`;
      else document.getElementById("train-msg").textContent = window.annotune.errorText(res);
    };
  }
  const box = document.getElementById("training-job");
  if (!box) return;
  const base = `/api/v1/projects/${box.dataset.project}/training-jobs/${box.dataset.job}`;
  const train = [], evals = [];
  let after = 0;
  const svgNS = "http://www.w3.org/2000/svg";
  const draw = () => {
    const svg = document.getElementById("loss-chart");
    svg.replaceChildren();
    const all = train.concat(evals);
    if (!all.length) return;
    const maxStep = Math.max(...all.map((p) => p.step), 1);
    const lo = Math.min(...all.map((p) => p.loss)), hi = Math.max(...all.map((p) => p.loss));
    const x = (s) => 40 + (540 * s) / maxStep;
    const y = (l) => 200 - (180 * (l - lo)) / ((hi - lo) || 1);
    for (const [pts, color] of [[train, "#2f5fd0"], [evals, "#c2410c"]]) {
      if (!pts.length) continue;
      const line = document.createElementNS(svgNS, "polyline");
      line.setAttribute("points", pts.map((p) => `${x(p.step)},${y(p.loss)}`).join(" "));
      line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "2");
      svg.append(line);
    }
    const label = (text, xpos, ypos, anchor) => {
      const t = document.createElementNS(svgNS, "text");
      t.setAttribute("x", xpos); t.setAttribute("y", ypos); t.setAttribute("font-size", "11");
      if (anchor) t.setAttribute("text-anchor", anchor);
      t.textContent = text; svg.append(t);
      return t;
    };
    for (const [val, ypos] of [[hi, 20], [lo, 200]]) label(val.toFixed(3), 2, ypos);
    // the step axis: a baseline with ticks at 0, ¼, ½, ¾ and the last step
    const axis = document.createElementNS(svgNS, "line");
    for (const [k, v] of Object.entries({x1: 40, x2: 580, y1: 204, y2: 204, stroke: "#9ca3af"})) axis.setAttribute(k, v);
    svg.append(axis);
    const ticks = [...new Set([0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(f * maxStep)))];
    for (const s of ticks) label(String(s), x(s), 216, "middle").setAttribute("class", "step-tick");
    label("step", 580, 216, "end");
  };
  const poll = async () => {
    const res = await api("GET", `${base}/events?after=${after}`);
    if (res.ok) {
      const list = document.getElementById("events");
      for (const e of res.data.items) {
        after = e.id;
        if (e.kind === "metrics" && e.loss !== null) train.push({step: e.step, loss: e.loss});
        if (e.kind === "eval" && e.loss !== null) evals.push({step: e.step, loss: e.loss});
        const li = document.createElement("li");
        li.className = e.level;
        li.textContent = `${e.created_at.slice(11, 19)} [${e.level}] ${e.message}`;
        list.append(li);
      }
      draw();
    }
    const job = await api("GET", base);
    if (job.ok) {
      document.getElementById("job-status").textContent = job.data.status;
      document.getElementById("job-step").textContent = job.data.step;
      if (["queued", "running", "validating"].includes(job.data.status)) setTimeout(poll, 2000);
      else if (!document.querySelector("#events li.done")) { /* final state: one last redraw */ }
    }
  };
  poll();
  const cancel = document.getElementById("cancel-training");
  if (cancel) cancel.onclick = async () => { await api("POST", `${base}/cancel`); };
})();
