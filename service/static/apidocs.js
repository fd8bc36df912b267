// Start Swagger UI or ReDoc on /docs and /redoc (assets served by the app, nothing from a CDN).
(function () {
  "use strict";
  const box = document.getElementById("apidocs");
  if (!box) return;
  const url = box.dataset.openapiUrl;
  if (box.dataset.ui === "swagger") {
    window.ui = window.SwaggerUIBundle({
      url, domNode: box, deepLinking: true, validatorUrl: null, showExtensions: true,
      presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
      layout: "BaseLayout",
    });
  } else {
    window.Redoc.init(url, {}, box);
  }
})();
