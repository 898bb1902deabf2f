// The inbox list: new voicemails appear without a reload. The first page polls
// /inbox/rows for rows newer than its newest one while the tab is visible, prepends them and
// announces them to screen readers. (No inline scripts: the CSP forbids them.)
(function () {
  "use strict";
  var table = document.getElementById("voicemail-list");
  if (!table || !table.dataset.rowsUrl) return;
  var body = table.tBodies[0];
  var status = document.getElementById("live-status");
  var seconds = parseFloat(table.dataset.pollSeconds) || 5;
  var after = table.dataset.after || "";
  var timer = null;
  var busy = false;

  function url() {
    var base = table.dataset.rowsUrl;
    return base + (base.indexOf("?") === -1 ? "?" : "&") + "after=" + encodeURIComponent(after);
  }

  function announce(count) {
    if (status) status.textContent = count === 1 ? "1 new voicemail" : count + " new voicemails";
  }

  function prepend(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    var rows = template.content.querySelectorAll("tr.voicemail-row");
    var empty = body.querySelector("tr.empty");
    if (empty && rows.length) empty.remove();
    var first = body.firstChild;
    var added = 0;
    Array.prototype.forEach.call(rows, function (row) {
      // A row may already be shown (e.g. a retried poll): never twice.
      if (body.querySelector('tr[data-id="' + row.dataset.id + '"]')) return;
      row.classList.add("fresh");
      body.insertBefore(row, first);
      added += 1;
    });
    return added;
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { stop(); window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        if (data.more) { window.location.reload(); return; }
        if (data.count > 0) {
          var added = prepend(data.html);
          after = data.newest;
          if (added) announce(added);
        }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { busy = false; });
  }

  function start() { if (timer === null) timer = window.setInterval(poll, seconds * 1000); }
  function stop() { if (timer !== null) { window.clearInterval(timer); timer = null; } }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { stop(); } else { poll(); start(); }
  });
  if (!document.hidden) start();
})();
