// Review queue, samples list (bulk + assignment) and adjudication. Plain JS, no framework.
// User text only ever goes into the page through textContent / .value (never innerHTML).
(function () {
  "use strict";
  const A = window.annotune;

  // ---------------------------------------------------------------- small DOM helpers
  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.append(typeof c === "string" ? document.createTextNode(c) : c));
    return node;
  }
  const clone = (x) => JSON.parse(JSON.stringify(x));
  // Equality of JSON values whatever the order of object keys: the server sends messages as
  // {content, role} (sorted keys), the editor collects {role, content}.
  function canonical(x) {
    if (Array.isArray(x)) return x.map(canonical);
    if (x && typeof x === "object") {
      const out = {};
      Object.keys(x).sort().forEach((k) => { if (x[k] !== undefined) out[k] = canonical(x[k]); });
      return out;
    }
    return x;
  }
  const same = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
  function readJSON(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  function say(text, isError) {
    const line = document.getElementById("status-line") || document.getElementById("bulk-result");
    if (!line) return;
    line.textContent = text;
    line.classList.toggle("danger", !!isError);
  }
  function errorText(res) {
    const e = res.data && res.data.error;
    return e ? e.message : "request failed (" + res.status + ")";
  }

  // ---------------------------------------------------------------- safe Markdown preview
  // Builds DOM nodes; text is only ever set with textContent, so nothing in it is markup.
  function inline(parent, text) {
    const re = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\n]+\*)/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
      const tok = m[0];
      if (tok.startsWith("`")) parent.append(el("code", {text: tok.slice(1, -1)}));
      else if (tok.startsWith("**")) parent.append(el("strong", {text: tok.slice(2, -2)}));
      else parent.append(el("em", {text: tok.slice(1, -1)}));
      last = m.index + tok.length;
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }
  function renderMarkdown(text) {
    const out = document.createDocumentFragment();
    const lines = String(text || "").split("\n");
    let para = null;
    let list = null;
    const endBlocks = () => { para = null; list = null; };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = line.match(/^\s*```\s*([\w+-]*)/);
      if (fence) {
        endBlocks();
        const body = [];
        i++;
        while (i < lines.length && !/^\s*```/.test(lines[i])) { body.push(lines[i]); i++; }
        const code = el("code", {text: body.join("\n")});
        if (fence[1]) code.dataset.lang = fence[1];
        out.append(el("pre", {}, [code]));
        continue;
      }
      if (!line.trim()) { endBlocks(); continue; }
      const h = line.match(/^(#{1,6})\s+(.*)$/);
      if (h) { endBlocks(); const node = el("h" + Math.min(6, h[1].length + 2)); inline(node, h[2]); out.append(node); continue; }
      const li = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/);
      if (li) {
        const kind = li[1] ? "ol" : "ul";
        if (!list || list.tagName.toLowerCase() !== kind) { para = null; list = el(kind); out.append(list); }
        const item = el("li"); inline(item, li[2]); list.append(item);
        continue;
      }
      list = null;
      if (!para) { para = el("p"); out.append(para); } else { para.append(el("br")); }
      inline(para, line);
    }
    return out;
  }
  window.annotuneMarkdown = renderMarkdown;  // exposed for tests

  function turnView(messages, other) {
    const box = el("div");
    (messages || []).forEach((m, i) => {
      const o = other && other[i];
      const differs = !o || o.role !== m.role || o.content !== m.content;
      box.append(el("div", {className: "turn-view" + (other && differs ? " differs" : "")}, [
        el("div", {className: "role", text: m.role}),
        el("div", {className: "raw", text: m.content}),
      ]));
    });
    return box;
  }

  // ---------------------------------------------------------------- review queue
  function initReview(data) {
    const root = document.getElementById("review");
    const help = document.getElementById("help");
    document.getElementById("help-close").addEventListener("click", () => { help.hidden = true; });
    if (!root || !data.sample) {
      document.addEventListener("keydown", (e) => {
        if (e.key === "?") { help.hidden = !help.hidden; e.preventDefault(); }
        else if (e.key === "Escape") help.hidden = true;
      });
      return;
    }
    const pid = data.project_id;
    const sid = data.sample.id;
    const editor = document.getElementById("editor");
    const reasoning = document.getElementById("reasoning");
    const banner = document.getElementById("banner");
    const conflictBox = document.getElementById("conflict");
    const versionText = document.getElementById("version");
    const reject = document.getElementById("reject");
    let version = data.sample.version;
    let base = {messages: clone(data.sample.messages), reasoning: data.sample.reasoning || ""};
    let dirty = false;
    let busy = false;
    let preview = false;
    const draftPrefix = "annotune:draft:" + sid + ":";
    const draftKey = () => draftPrefix + version;

    // trail of samples seen in this tab, for j/k
    const trailKey = "annotune:trail:" + pid;
    let trail = [];
    try { trail = JSON.parse(sessionStorage.getItem(trailKey) || "[]"); } catch (e) { trail = []; }
    let pos = trail.lastIndexOf(sid);
    if (pos < 0) { trail.push(sid); trail = trail.slice(-200); pos = trail.length - 1; }
    sessionStorage.setItem(trailKey, JSON.stringify(trail));

    function reviewUrl(id) { return "/projects/" + pid + "/review" + (id ? "?sample=" + id : ""); }
    function go(url) { dirty = false; window.location.href = url; }

    // -- editor
    function autosize(t) { t.style.height = "auto"; t.style.height = Math.min(600, t.scrollHeight + 4) + "px"; }
    function renderTurn(m, i) {
      const role = el("select", {"aria-label": "role of turn " + (i + 1), onchange: changed},
        ["system", "user", "assistant"].map((r) => el("option", {value: r, text: r, selected: r === m.role})));
      const text = el("textarea", {value: m.content, rows: 3, "aria-label": m.role + " turn " + (i + 1),
        className: "turn-text", oninput: (e) => { autosize(e.target); changed(); }});
      const prev = el("div", {className: "preview", hidden: !preview});
      const remove = el("button", {type: "button", className: "plain", text: "remove", title: "remove this turn",
        onclick: () => { const msgs = collect(); msgs.splice(i, 1); renderEditor(msgs); changed(); }});
      const box = el("div", {className: "turn", dataset: {index: String(i)}}, [el("header", {}, [role, remove]), text, prev]);
      if (preview) prev.replaceChildren(renderMarkdown(m.content));
      return box;
    }
    function renderEditor(messages) {
      editor.replaceChildren(...messages.map(renderTurn));
      editor.querySelectorAll("textarea").forEach(autosize);
    }
    function collect() {
      return Array.from(editor.querySelectorAll(".turn")).map((t) => ({
        role: t.querySelector("select").value, content: t.querySelector("textarea").value,
      }));
    }
    function current() { return {messages: collect(), reasoning: reasoning.value}; }
    function changed() {
      const now = current();
      dirty = !same(now.messages, base.messages) || now.reasoning !== base.reasoning;
      if (dirty) localStorage.setItem(draftKey(), JSON.stringify(Object.assign({at: new Date().toISOString()}, now)));
      else localStorage.removeItem(draftKey());
      if (preview) editor.querySelectorAll(".turn").forEach((t) =>
        t.querySelector(".preview").replaceChildren(renderMarkdown(t.querySelector("textarea").value)));
      say(dirty ? "Unsaved changes (kept in this browser until saved)" : "");
    }
    function clearDrafts() {
      Object.keys(localStorage).filter((k) => k.startsWith(draftPrefix)).forEach((k) => localStorage.removeItem(k));
    }
    function setBase(sample) {
      version = sample.version;
      versionText.textContent = String(version);
      base = {messages: clone(sample.messages), reasoning: sample.reasoning || ""};
    }
    function showBanner(children) { banner.replaceChildren(...children); banner.hidden = false; }

    renderEditor(base.messages);
    reasoning.value = base.reasoning;
    reasoning.addEventListener("input", changed);

    // -- drafts that survive a reload
    (function restoreDraft() {
      const keys = Object.keys(localStorage).filter((k) => k.startsWith(draftPrefix));
      let draft = null;
      let older = null;
      keys.forEach((k) => {
        const v = parseInt(k.slice(draftPrefix.length), 10);
        let d = null;
        try { d = JSON.parse(localStorage.getItem(k)); } catch (e) { d = null; }
        if (!d) return;
        if (v === version) draft = d;
        else if (v < version && (!older || older.v < v)) older = {v, d, k};
      });
      if (draft) {
        renderEditor(draft.messages);
        reasoning.value = draft.reasoning || "";
        changed();
        showBanner([
          el("span", {text: "Recovered your unsaved edits from " + new Date(draft.at).toLocaleString() + ". "}),
          el("button", {type: "button", className: "plain", text: "Discard draft", onclick: () => {
            renderEditor(base.messages); reasoning.value = base.reasoning; changed(); banner.hidden = true; }}),
        ]);
        banner.dataset.testid = "draft-restored";
      } else if (older) {
        showBanner([
          el("span", {text: "You have unsaved edits made on version " + older.v + "; the sample has changed since. "}),
          el("button", {type: "button", text: "Compare and merge", onclick: () => {
            banner.hidden = true;
            showConflict(older.d.messages, Object.assign({}, data.sample, {version}), "Your older draft vs the current sample.");
            localStorage.removeItem(older.k);
          }}),
        ]);
      }
    })();

    window.addEventListener("beforeunload", (e) => {
      if (dirty) { e.preventDefault(); e.returnValue = ""; }
    });

    // -- conflicts: never overwrite silently
    function showConflict(mine, theirs, note) {
      conflictBox.replaceChildren(
        el("h3", {text: "Someone else changed this sample"}),
        el("p", {className: "muted", text: (note ? note + " " : "") + "Current version " + theirs.version +
          ", status " + theirs.status + ". Yours was based on version " + version + "."}),
        el("div", {className: "cols"}, [
          el("div", {dataset: {testid: "conflict-mine"}}, [el("h4", {text: "Your version"}), turnView(mine, theirs.messages)]),
          el("div", {dataset: {testid: "conflict-theirs"}}, [el("h4", {text: "Current version " + theirs.version}), turnView(theirs.messages, mine)]),
        ]),
        el("div", {className: "actions"}, [
          el("button", {type: "button", className: "plain", text: "Take theirs", dataset: {act: "take-theirs"}, onclick: () => {
            clearDrafts(); setBase(theirs); renderEditor(base.messages); reasoning.value = base.reasoning;
            changed(); conflictBox.hidden = true; say("Loaded version " + version + ". Your edits were discarded.");
          }}),
          el("button", {type: "button", text: "Keep mine", dataset: {act: "keep-mine"}, onclick: async () => {
            clearDrafts(); setBase(theirs); renderEditor(mine); changed(); conflictBox.hidden = true;
            await save();
          }}),
          el("button", {type: "button", className: "plain", text: "Merge by editing", dataset: {act: "merge"}, onclick: () => {
            clearDrafts(); setBase(theirs); renderEditor(mine); changed();
            conflictBox.replaceChildren(
              el("h3", {text: "Merging onto version " + theirs.version}),
              el("p", {className: "muted", text: "Edit your version on the left/below, then save (Ctrl+S). The current version, for reference:"}),
              turnView(theirs.messages, null));
            const first = editor.querySelector("textarea"); if (first) first.focus();
          }}),
        ]));
      conflictBox.hidden = false;
      conflictBox.scrollIntoView({block: "nearest"});
    }

    // -- saving and deciding
    async function save() {
      if (busy) return false;
      if (!dirty) { say("Nothing to save."); return true; }
      const now = current();
      const body = {};
      if (!same(now.messages, base.messages)) body.messages = now.messages;
      if (now.reasoning !== base.reasoning) body.reasoning = now.reasoning;
      busy = true;
      say("Saving…");
      const res = await A.api("PATCH", "/api/v1/projects/" + pid + "/samples/" + sid, body, {"If-Match": '"' + version + '"'});
      busy = false;
      if (res.ok) {
        clearDrafts(); setBase(res.data); dirty = false; banner.hidden = true;
        say("Saved (version " + version + ").");
        return true;
      }
      if (res.status === 409 && res.data.error.current) { showConflict(now.messages, res.data.error.current, "Your save was not applied."); say("Conflict: choose how to resolve it.", true); return false; }
      say(errorText(res), true);
      return false;
    }

    async function decide(decision, reason) {
      if (busy) return;
      if (reasoning.value !== base.reasoning) { if (!(await save())) return; }
      const now = current();
      const body = {decision, version, reason: reason || null};
      if (!same(now.messages, base.messages)) body.messages = now.messages;
      busy = true;
      say("Saving decision…");
      const res = await A.api("POST", "/api/v1/projects/" + pid + "/review/samples/" + sid + "/decision", body);
      busy = false;
      if (res.ok) {
        clearDrafts();
        const r = res.data;
        say(r.flagged ? "Recorded; reviewers disagree, sent to adjudication." : "Recorded: " + decision.replace("_", " ") + ".");
        go(pos < trail.length - 1 ? reviewUrl(trail[pos + 1]) : reviewUrl(null));
        return;
      }
      if (res.status === 409 && res.data.error.current) {
        showConflict(now.messages, res.data.error.current, "Your decision was not recorded.");
        say("Conflict: resolve it, then decide again.", true);
        return;
      }
      say(errorText(res), true);
    }

    async function skip() {
      if (busy) return;
      busy = true;
      const res = await A.api("POST", "/api/v1/projects/" + pid + "/review/samples/" + sid + "/skip");
      busy = false;
      if (!res.ok) { say(errorText(res), true); return; }
      // a skip leaves edits in the local draft; the unload warning still guards them
      window.location.href = reviewUrl(null);
    }
    function prevSample() {
      if (pos > 0) window.location.href = reviewUrl(trail[pos - 1]);
      else say("No previous sample in this session.");
    }
    function nextSample() {
      if (pos < trail.length - 1) window.location.href = reviewUrl(trail[pos + 1]);
      else skip();
    }

    // -- reject dialog
    const reasonSelect = document.getElementById("reject-reason");
    const reasonText = document.getElementById("reject-text");
    function openReject() { reject.hidden = false; reasonSelect.focus(); }
    function closeReject() { reject.hidden = true; }
    function confirmReject() {
      const parts = [reasonSelect.value, reasonText.value.trim()].filter(Boolean);
      if (!parts.length) { reasonText.focus(); say("Choose a reason or write one.", true); return; }
      closeReject();
      decide("rejected", parts.join(": "));
    }
    document.getElementById("reject-ok").addEventListener("click", confirmReject);
    document.getElementById("reject-cancel").addEventListener("click", closeReject);
    reject.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); confirmReject(); }
      else if (e.key === "Escape") { e.preventDefault(); closeReject(); }
      e.stopPropagation();
    });

    function focusTurn(delta) {
      const areas = Array.from(editor.querySelectorAll("textarea"));
      if (!areas.length) return;
      const i = areas.indexOf(document.activeElement);
      const next = areas[i < 0 ? (delta > 0 ? 0 : areas.length - 1) : (i + delta + areas.length) % areas.length];
      next.focus();
      next.scrollIntoView({block: "nearest"});
    }
    function togglePreview() {
      preview = !preview;
      editor.querySelectorAll(".preview").forEach((p) => { p.hidden = !preview; });
      changed();
    }
    function addTurn() {
      const msgs = collect();
      const last = msgs.length ? msgs[msgs.length - 1].role : "assistant";
      msgs.push({role: last === "user" ? "assistant" : "user", content: ""});
      renderEditor(msgs); changed();
      const areas = editor.querySelectorAll("textarea"); areas[areas.length - 1].focus();
    }

    root.querySelectorAll("button[data-act]").forEach((b) => b.addEventListener("click", () => {
      const act = b.dataset.act;
      if (act === "save") save();
      else if (act === "accepted" || act === "needs_changes") decide(act);
      else if (act === "rejected") openReject();
      else if (act === "skip") skip();
      else if (act === "prev") prevSample();
      else if (act === "next") nextSample();
      else if (act === "add-turn") addTurn();
      else if (act === "preview") togglePreview();
    }));

    document.addEventListener("keydown", (e) => {
      if (!help.hidden) {
        if (e.key === "Escape" || e.key === "?") { help.hidden = true; e.preventDefault(); }
        return;
      }
      if (!reject.hidden) return;
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); save(); return; }
      const t = e.target;
      const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT");
      if (typing) {
        if (e.key === "Escape") { e.preventDefault(); t.blur(); }
        else if (e.altKey && (e.key === "]" || e.key === "[")) { e.preventDefault(); focusTurn(e.key === "]" ? 1 : -1); }
        return;
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const actions = {
        a: () => decide("accepted"), r: openReject, n: () => decide("needs_changes"), s: skip,
        j: nextSample, k: prevSample, p: togglePreview, "]": () => focusTurn(1), "[": () => focusTurn(-1),
        e: () => {
          const areas = Array.from(editor.querySelectorAll(".turn"));
          const target = areas.find((x) => x.querySelector("select").value === "assistant") || areas[0];
          if (target) target.querySelector("textarea").focus();
        },
        "?": () => { help.hidden = false; document.getElementById("help-close").focus(); },
      };
      const fn = actions[e.key];
      if (fn) { e.preventDefault(); fn(); }
    });
  }

  // ---------------------------------------------------------------- samples list: bulk + assign
  function confirmDialog(text) {
    const box = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    box.hidden = false;
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    ok.focus();
    return new Promise((resolve) => {
      const done = (v) => { box.hidden = true; ok.onclick = null; cancel.onclick = null; resolve(v); };
      ok.onclick = () => done(true);
      cancel.onclick = () => done(false);
    });
  }

  // a bulk change or assignment over many samples runs as a job (202): poll until it is done
  async function waitForJob(job, verb) {
    for (;;) {
      const res = await A.api("GET", job.status_url);
      if (!res.ok) { say(errorText(res), true); return false; }
      const j = res.data;
      const skipped = j.skipped ? " (" + j.skipped + " skipped: changed by someone meanwhile)" : "";
      if (j.done) {
        if (j.status === "failed") { say("The job failed: " + (j.error || "unknown error"), true); return false; }
        say(verb + " " + j.changed + " of " + j.matching + " sample(s)" + skipped + ".");
        return true;
      }
      say("Working… " + j.processed + " of " + j.matching + " sample(s) done" + skipped + ".");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  function initSamples() {
    const bulk = document.getElementById("bulk");
    const selectAll = document.getElementById("select-all");
    if (selectAll) selectAll.addEventListener("change", () => {
      document.querySelectorAll(".row-select").forEach((c) => { c.checked = selectAll.checked; });
    });
    if (!bulk) return;
    const pid = bulk.dataset.project;
    const filterSpec = readJSON("samples-filter") || {};
    function scopeFilter() {
      if (document.getElementById("bulk-scope").value === "all") return filterSpec;
      const ids = Array.from(document.querySelectorAll(".row-select:checked")).map((c) => parseInt(c.value, 10));
      return ids.length ? {ids} : null;
    }
    document.getElementById("bulk-go").addEventListener("click", async () => {
      const filter = scopeFilter();
      if (!filter) { say("Select some rows first (or apply to everything matching).", true); return; }
      const action = document.getElementById("bulk-action").value;
      const tag = document.getElementById("bulk-tag").value.trim();
      const body = {filter};
      let what = "";
      if (action === "status") { body.status = document.getElementById("bulk-status").value; what = "set status to " + body.status; }
      else if (action === "add_tag" || action === "remove_tag") {
        if (!tag) { say("Enter a tag.", true); return; }
        body[action === "add_tag" ? "add_tags" : "remove_tags"] = [tag];
        what = (action === "add_tag" ? "add tag " : "remove tag ") + tag;
      } else if (action === "assign") {
        const sel = document.getElementById("bulk-assignee");
        body.assignee_id = parseInt(sel.value, 10); what = "assign to " + sel.options[sel.selectedIndex].text;
      } else { body.unassign = true; what = "unassign"; }
      const dry = await A.api("POST", "/api/v1/projects/" + pid + "/samples-bulk", Object.assign({}, body, {dry_run: true}));
      if (!dry.ok) { say(errorText(dry), true); return; }
      if (!(await confirmDialog(what + " on " + dry.data.matching + " sample(s)?"))) { say("Cancelled."); return; }
      const res = await A.api("POST", "/api/v1/projects/" + pid + "/samples-bulk", body);
      if (!res.ok) { say(errorText(res), true); return; }
      if (res.status === 202) { if (await waitForJob(res.data, "Changed")) setTimeout(() => window.location.reload(), 600); return; }
      say("Changed " + res.data.changed + " of " + res.data.matching + " sample(s).");
      setTimeout(() => window.location.reload(), 600);
    });
    document.getElementById("assign-go").addEventListener("click", async () => {
      const filter = scopeFilter();
      if (!filter) { say("Select some rows first (or apply to everything matching).", true); return; }
      const boxes = Array.from(document.querySelectorAll(".assign-to:checked"));
      if (!boxes.length) { say("Choose at least one annotator.", true); return; }
      const names = {};
      boxes.forEach((b) => { names[b.value] = b.parentElement.textContent.trim(); });
      const count = parseInt(document.getElementById("assign-count").value, 10);
      const body = {filter, annotator_ids: boxes.map((b) => parseInt(b.value, 10)),
        mode: document.getElementById("assign-mode").value, count: count > 0 ? count : null};
      const dry = await A.api("POST", "/api/v1/projects/" + pid + "/review/assign", Object.assign({}, body, {dry_run: true}));
      if (!dry.ok) { say(errorText(dry), true); return; }
      const per = Object.entries(dry.data.per_annotator).map(([id, n]) => (names[id] || id) + ": " + n).join(", ");
      if (!(await confirmDialog("Assign " + dry.data.matching + " sample(s) — " + per + "?"))) { say("Cancelled."); return; }
      const res = await A.api("POST", "/api/v1/projects/" + pid + "/review/assign", body);
      if (!res.ok) { say(errorText(res), true); return; }
      if (res.status === 202) { if (await waitForJob(res.data, "Assigned")) setTimeout(() => window.location.reload(), 600); return; }
      say("Assigned " + res.data.changed + " sample(s).");
      setTimeout(() => window.location.reload(), 600);
    });
  }

  // ---------------------------------------------------------------- adjudication
  function initAdjudicate(data) {
    const root = document.getElementById("adjudicate");
    const pid = data.project_id;
    const s = data.sample;
    const choices = [{label: "Current sample (v" + s.version + ")", messages: s.messages}]
      .concat(data.decisions.map((d) => ({label: d.reviewer + ": " + d.decision.replace("_", " ") + (d.reason ? " — " + d.reason : ""), messages: d.messages || s.messages})));
    const cards = choices.map((c, i) => el("div", {className: "card"}, [
      el("label", {className: "inline"}, [el("input", {type: "radio", name: "pick", value: String(i), checked: i === 0}), " use this version"]),
      el("h3", {text: c.label}), turnView(c.messages, i ? s.messages : null)]));
    const decision = el("select", {"aria-label": "final decision"}, ["accepted", "rejected", "needs_changes"].map((d) => el("option", {value: d, text: d.replace("_", " ")})));
    const reason = el("input", {type: "text", placeholder: "reason (required to reject)", "aria-label": "reason"});
    const submit = el("button", {type: "button", text: "Decide", onclick: async () => {
      const pick = parseInt(document.querySelector("input[name=pick]:checked").value, 10);
      const res = await A.api("POST", "/api/v1/projects/" + pid + "/review/samples/" + s.id + "/adjudicate",
        {decision: decision.value, version: s.version, reason: reason.value || null, messages: choices[pick].messages});
      if (res.ok) { window.location.href = "/projects/" + pid + "/review/adjudicate"; return; }
      say(res.status === 409 ? "The sample changed meanwhile; reload the page." : errorText(res), true);
    }});
    root.replaceChildren(el("div", {className: "decisions"}, cards), el("div", {className: "card"}, [decision, reason, submit]));
  }

  const review = readJSON("review-data");
  if (review) initReview(review);
  if (document.querySelector("table.samples")) initSamples();
  const adj = readJSON("adjudicate-data");
  if (adj) initAdjudicate(adj);
})();
