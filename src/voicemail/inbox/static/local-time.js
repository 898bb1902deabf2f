// Times in the agent's time zone and language. The server writes every time as a <time>
// with its UTC instant in `datetime` and a readable UTC text ("2026-12-03 09:05 UTC") for
// when scripts do not run; this rewrites them with Intl in the browser's time zone:
// - time.local-time: the date and time ("Dec 3, 2026, 4:05 AM EST");
// - time.relative-time: how long ago ("3 minutes ago"), kept up to date every minute, with
//   the local date and time in its title.
// Rows added later (the list's live updates, a refreshed backlog) are formatted as they
// arrive. (A static file: the Content-Security-Policy forbids inline scripts.)
(function () {
  "use strict";
  if (typeof Intl === "undefined" || !Intl.DateTimeFormat) return;
  var absolute = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
  var zoned = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "numeric",
    minute: "2-digit",
    timeZoneName: "short",
  });
  var relative = Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
    : null;
  var UNITS = [
    ["year", 365 * 86400],
    ["month", 30 * 86400],
    ["week", 7 * 86400],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];

  function instant(el) {
    var at = Date.parse(el.getAttribute("datetime") || "");
    return isNaN(at) ? null : new Date(at);
  }

  function set(el, attribute, value) {
    // Only on a change: the MutationObserver below would otherwise see its own writes.
    if (attribute === null) {
      if (el.textContent !== value) el.textContent = value;
    } else if (el.getAttribute(attribute) !== value) {
      el.setAttribute(attribute, value);
    }
  }

  function ago(at, now) {
    var seconds = Math.round((at.getTime() - now) / 1000);
    if (!relative) return null;
    if (Math.abs(seconds) < 60) return relative.format(0, "second"); // "now"
    for (var i = 0; i < UNITS.length; i += 1) {
      var size = UNITS[i][1];
      if (Math.abs(seconds) >= size || UNITS[i][0] === "minute") {
        return relative.format(Math.trunc(seconds / size), UNITS[i][0]);
      }
    }
    return null;
  }

  function format(el, now) {
    var at = instant(el);
    if (!at) return;
    if (el.classList.contains("local-time")) {
      set(el, null, zoned.format(at));
      set(el, "title", absolute.format(at));
    } else if (el.classList.contains("relative-time")) {
      var text = ago(at, now);
      if (text) set(el, null, text);
      set(el, "title", zoned.format(at));
    }
  }

  function formatAll(root) {
    var now = Date.now();
    var found = root.querySelectorAll
      ? root.querySelectorAll("time.local-time, time.relative-time")
      : [];
    for (var i = 0; i < found.length; i += 1) format(found[i], now);
    if (root.matches && root.matches("time.local-time, time.relative-time")) format(root, now);
  }

  formatAll(document);
  // Relative times move on every minute (and at once when the tab is shown again).
  window.setInterval(function () { formatAll(document); }, 60 * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) formatAll(document);
  });
  if (window.MutationObserver) {
    new MutationObserver(function (mutations) {
      mutations.forEach(function (mutation) {
        mutation.addedNodes.forEach(function (node) {
          if (node.nodeType === 1) formatAll(node);
        });
      });
    }).observe(document.body, { childList: true, subtree: true });
  }
})();
