// The backlog page refreshes itself: every data-refresh-seconds (the setting
// VOICEMAIL_BACKLOG_REFRESH_SECONDS, 30 s by default), while the tab is visible, it fetches
// the page again and swaps in the new figures (the "as of" line, the backlog table and the
// per-agent table). A part holding the keyboard focus waits for the next round, so nobody
// loses their place. No navigation, nothing announced (a screen reader would hear every
// round). (A static file: the Content-Security-Policy forbids inline scripts.)
(function () {
  "use strict";
  var line = document.getElementById("refreshed");
  if (!line || !window.DOMParser) return;
  var seconds = parseFloat(line.dataset.refreshSeconds) || 30;
  var PARTS = ["refreshed", "backlog", "agents"];
  var timer = null;
  var busy = false;

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    PARTS.forEach(function (id) {
      var shown = document.getElementById(id);
      var next = fresh.getElementById(id);
      if (!shown || !next) return;
      if (shown.contains(document.activeElement)) return;
      shown.replaceWith(document.importNode(next, true));
    });
    document.documentElement.dataset.refreshedAt = String(Date.now());
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        // Signed out (or the session ended): the page itself then goes to the sign-in form.
        if (response.redirected || response.status === 401) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html) swap(html); })
      .catch(function () { /* offline for a moment: the next round tries again */ })
      .then(function () { busy = false; });
  }

  function start() { if (timer === null) timer = window.setInterval(refresh, seconds * 1000); }
  function stop() { if (timer !== null) { window.clearInterval(timer); timer = null; } }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { stop(); } else { refresh(); start(); }
  });
  if (!document.hidden) start();
})();
