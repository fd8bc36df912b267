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
  };
})();
