// Small helpers shared by pages. No framework, no CDN.
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.annotune = {
    csrf: meta ? meta.content : "",
    async api(method, url, body, headers) {
      const h = Object.assign({"X-CSRF-Token": this.csrf, "Accept": "application/json"}, headers || {});
      let payload = body;
      if (body !== undefined && !(body instanceof FormData)) { h["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
      const res = await fetch(url, {method, headers: h, body: payload, credentials: "same-origin"});
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      return {status: res.status, ok: res.ok, data, headers: res.headers};
    },
    // "body.max_chars" -> "Max chars": the field of a validation error, as a form labels it
    fieldLabel(field) {
      const parts = String(field || "").split(".").filter((p) => !["body", "query", "path", "form"].includes(p));
      const text = parts.filter((p) => !/^\d+$/.test(p)).join(" › ").replace(/_/g, " ");
      return text ? text.charAt(0).toUpperCase() + text.slice(1) : "Request";
    },
    // the message of an error response, naming the field in words
    errorText(res) {
      const e = res.data && res.data.error;
      if (!e) return "request failed (" + res.status + ")";
      const d = (e.details || [])[0];
      if (e.code === "validation_error" && d && d.field) return this.fieldLabel(d.field) + ": " + d.message;
      return e.message;
    },
  };
})();
