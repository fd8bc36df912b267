// Documents: drag-and-drop upload with per-file progress; chunk preview / re-chunk / delete.
(function () {
  const up = document.getElementById("upload");
  if (up) {
    const pid = up.dataset.project;
    const list = document.getElementById("upload-list");
    const zone = document.getElementById("dropzone");
    const input = document.getElementById("file-input");
    const send = (file) => {
      const li = document.createElement("li");
      const name = document.createElement("span"); name.textContent = file.name + " ";
      const bar = document.createElement("progress"); bar.max = 100; bar.value = 0;
      const msg = document.createElement("span"); msg.className = "muted";
      li.append(name, bar, msg); list.append(li);
      const form = new FormData(); form.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/v1/projects/${pid}/documents`);
      xhr.setRequestHeader("X-CSRF-Token", window.annotune.csrf);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
      xhr.onload = () => {
        let data = null; try { data = JSON.parse(xhr.responseText); } catch (e) {}
        bar.value = 100;
        if (xhr.status === 201 && data) {
          const r = data.results[0];
          msg.textContent = r.duplicate ? " already uploaded (same content)" : " uploaded, parsing…";
          if (r.document_id) li.dataset.doc = String(r.document_id);
          document.dispatchEvent(new CustomEvent("annotune:uploaded", {detail: r}));
        } else {
          const err = data && data.error ? data.error.message : xhr.statusText;
          msg.textContent = ` refused (${xhr.status}): ${err}`; msg.className = "danger";
        }
      };
      xhr.onerror = () => { msg.textContent = " network error"; msg.className = "danger"; };
      xhr.send(form);
    };
    const sendAll = (files) => { for (const f of files) send(f); };
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); sendAll(e.dataTransfer.files); });
    input.addEventListener("change", () => sendAll(input.files));
  }
  const ch = document.getElementById("chunking");
  if (ch) {
    const base = `/api/v1/projects/${ch.dataset.project}/documents/${ch.dataset.document}`;
    const msg = document.getElementById("chunk-msg");
    const settings = () => {
      const out = {};
      for (const el of ch.querySelectorAll("select, input")) { if (el.value !== "") out[el.name] = el.type === "number" ? Number(el.value) : el.value; }
      return out;
    };
    document.getElementById("preview-btn").onclick = async () => {
      const res = await window.annotune.api("POST", base + "/chunk-preview", settings());
      const ol = document.getElementById("preview"); ol.replaceChildren();
      if (!res.ok) { msg.textContent = window.annotune.errorText(res); return; }
      msg.textContent = `${res.data.count} chunks with these settings (showing up to 200)`;
      for (const c of res.data.chunks) {
        const li = document.createElement("li");
        const meta = document.createElement("div"); meta.className = "muted";
        meta.textContent = `${c.heading_path.join(" › ")} · ${c.token_count} tokens`;
        const body = document.createElement("div"); body.className = "raw"; body.textContent = c.text;
        li.append(meta, body); ol.append(li);
      }
    };
    document.getElementById("rechunk-btn").onclick = async () => {
      const res = await window.annotune.api("POST", base + "/rechunk", settings());
      if (res.ok) location.reload(); else msg.textContent = window.annotune.errorText(res);
    };
    document.getElementById("delete-btn").onclick = async () => {
      if (!confirm("Delete this document and its chunks?")) return;
      const res = await window.annotune.api("DELETE", base);
      if (res.status === 204) location.href = `/projects/${ch.dataset.project}/documents`;
      else msg.textContent = window.annotune.errorText(res);
    };
  }
})();
