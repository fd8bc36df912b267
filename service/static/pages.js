// Behaviour that used to sit inline in page templates (the CSP allows no inline script or
// handlers): declared with data- attributes, wired here.
(function () {
  "use strict";
  function each(selector, fn) { document.querySelectorAll(selector).forEach(fn); }
  each("[data-width]", function (el) { el.style.width = parseFloat(el.dataset.width) + "%"; });
  each("[data-columns]", function (el) {
    el.style.gridTemplateColumns = "repeat(" + parseInt(el.dataset.columns, 10) + ", minmax(0, 1fr))";
  });
  each("select[data-autosubmit]", function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });
  each("form[data-diff-prefix]", function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      location.href = form.dataset.diffPrefix + encodeURIComponent(form.elements.a.value) + form.dataset.diffSuffix;
    });
  });
  var reload = document.querySelector("[data-reload-after]");
  if (reload) { setTimeout(function () { location.reload(); }, parseInt(reload.dataset.reloadAfter, 10)); }
})();
