// Live refresh: each element with data-live is refetched every few seconds and its rows
// replaced by the server's escaped HTML fragment. Pages read the same without it.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh"), 10) || 5000;
  function refresh(el) {
    var url = new URL(el.getAttribute("data-live"), window.location.href);
    if (url.origin !== window.location.origin) return;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) el.innerHTML = html; })
      .catch(function () {});
  }
  function tick() {
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(refresh);
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, every);
  });
})();
