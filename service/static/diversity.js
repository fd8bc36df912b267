// The domain tree's editor on the coverage page: add, rename, move, merge, delete, and the
// build / tag jobs. Plain JS over the REST API; names are only ever set as textContent.
(function () {
  "use strict";
  const A = window.annotune;
  const root = document.getElementById("tree-editor");
  if (!root) return;
  const base = "/api/v1/projects/" + root.dataset.project;
  const out = document.getElementById("tree-result");
  function say(text) { out.textContent = text; }
  async function call(method, url, body) {
    const res = await A.api(method, base + url, body);
    if (!res.ok) { say(A.errorText(res)); return null; }
    return res;
  }
  function nodeId(answer) {
    const n = parseInt(String(answer || "").trim(), 10);
    return Number.isNaN(n) ? null : n;
  }
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-act]");
    if (!button) return;
    const li = button.closest("li[data-node]");
    const id = li.dataset.node;
    const name = li.querySelector(".node-name").textContent;
    const act = button.dataset.act;
    let res = null;
    if (act === "rename") {
      const value = prompt("New name for " + name, name);
      if (value === null) return;
      res = await call("PATCH", "/domain-nodes/" + id, {name: value});
    } else if (act === "move") {
      const value = prompt("Move " + name + " under node # (empty: top level)", "");
      if (value === null) return;
      res = await call("PATCH", "/domain-nodes/" + id, {parent_id: nodeId(value)});
    } else if (act === "merge") {
      const into = nodeId(prompt("Merge " + name + " into node #", ""));
      if (into === null) return;
      res = await call("POST", "/domain-nodes/" + id + "/merge", {into_id: into});
    } else if (act === "delete") {
      if (!confirm("Delete " + name + " and everything under it? Its samples keep no leaf.")) return;
      res = await call("DELETE", "/domain-nodes/" + id);
    }
    if (res) location.reload();
  });
  document.getElementById("node-add").addEventListener("click", async () => {
    const parent = document.getElementById("node-parent").value;
    const res = await call("POST", "/domain-nodes", {name: document.getElementById("node-name").value,
      parent_id: parent ? parseInt(parent, 10) : null});
    if (res) location.reload();
  });
  async function job(url, extra) {
    const provider = parseInt(document.getElementById("job-provider").value, 10);
    const res = await call("POST", url, Object.assign({provider_id: provider,
      lang: document.getElementById("job-lang").value}, extra || {}));
    if (res) { say("job #" + res.data.id + " " + res.data.status); setTimeout(() => location.reload(), 1500); }
  }
  document.getElementById("tree-build").addEventListener("click", () => job("/domain-tree/build", {replace: true}));
  document.getElementById("tree-tag").addEventListener("click", () => job("/domain-tree/tag"));
  document.getElementById("distill-go").addEventListener("click", () => job("/distillations", {
    topic: document.getElementById("distill-topic").value,
    depth: parseInt(document.getElementById("distill-depth").value, 10),
    breadth: parseInt(document.getElementById("distill-breadth").value, 10),
    questions_per_leaf: parseInt(document.getElementById("distill-questions").value, 10)}));

  // genre–audience pairs
  const pairs = document.getElementById("ga-pairs");
  pairs.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-pair-act]");
    if (!button) return;
    const row = button.closest("tr[data-pair]");
    const url = "/ga-pairs/" + row.dataset.pair;
    const res = button.dataset.pairAct === "delete" ? await call("DELETE", url)
      : await call("PATCH", url, {genre: row.querySelector(".pair-genre").value,
                                  audience: row.querySelector(".pair-audience").value});
    if (res) location.reload();
  });
  document.getElementById("pair-add").addEventListener("click", async () => {
    const res = await call("POST", "/ga-pairs", {
      document_id: parseInt(document.getElementById("pair-document").value, 10),
      genre: document.getElementById("pair-genre").value,
      audience: document.getElementById("pair-audience").value});
    if (res) location.reload();
  });
  document.getElementById("pairs-propose").addEventListener("click", () => job("/ga-pairs/propose", {
    n: parseInt(document.getElementById("pairs-n").value, 10)}));
})();
