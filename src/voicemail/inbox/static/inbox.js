// The inbox list: new voicemails appear without a reload. The first page polls
// /inbox/rows for rows changed since it last looked, while the tab is visible: a new
// voicemail goes in its place (newest first) and is announced to screen readers; a row shown
// already (now transcribed, taken or handled by someone) is replaced where it is. (No inline
// scripts: the CSP forbids them.)
(function () {
  "use strict";
  var table = document.getElementById("voicemail-list");
  if (!table || !table.dataset.rowsUrl) return;
  var body = table.tBodies[0];
  var status = document.getElementById("live-status");
  var seconds = parseFloat(table.dataset.pollSeconds) || 5;
  var pageSize = parseInt(table.dataset.pageSize, 10) || 50;
  var since = table.dataset.since || "";
  var ascending = table.dataset.order === "asc"; // the "oldest first" view
  var timer = null;
  var busy = false;

  function url() {
    var base = table.dataset.rowsUrl;
    return base + (base.indexOf("?") === -1 ? "?" : "&") + "since=" + encodeURIComponent(since);
  }

  function announce(count) {
    if (status) status.textContent = count === 1 ? "1 new voicemail" : count + " new voicemails";
  }

  function receivedAt(row) {
    var time = row.querySelector("time[datetime]");
    return time ? Date.parse(time.getAttribute("datetime")) : 0;
  }

  // Before the first shown row received earlier (later, oldest first); a row beyond the
  // whole page belongs to a later page and is left there.
  function place(row) {
    var at = receivedAt(row);
    var shown = body.querySelectorAll("tr.voicemail-row");
    for (var i = 0; i < shown.length; i += 1) {
      var other = receivedAt(shown[i]);
      if (ascending ? other > at : other < at) { body.insertBefore(row, shown[i]); return true; }
    }
    if (shown.length < pageSize) { body.appendChild(row); return true; }
    return false;
  }

  // Rows that changed and left the view (handled, in a view without handled ones).
  function drop(ids) {
    (ids || []).forEach(function (id) {
      var shown = body.querySelector('tr.voicemail-row[data-id="' + id + '"]');
      if (shown) shown.remove();
    });
  }

  function insert(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    var rows = template.content.querySelectorAll("tr.voicemail-row");
    var empty = body.querySelector("tr.empty");
    if (empty && rows.length) empty.remove();
    var added = 0;
    // In reverse order, so that each new one lands next to the ones it follows.
    Array.prototype.slice.call(rows).reverse().forEach(function (row) {
      var shown = body.querySelector('tr[data-id="' + row.dataset.id + '"]');
      if (shown) {
        // The poll looked back over it and nothing it shows changed: left alone, so that a
        // click or a focus on it is not lost to a row swapped underneath.
        if (shown.dataset.version && shown.dataset.version === row.dataset.version) return;
        // Shown already: its transcript, assignee or state changed. Replaced where it is,
        // keeping any highlight of a new row.
        if (shown.classList.contains("fresh")) row.classList.add("fresh");
        shown.replaceWith(row);
        return;
      }
      row.classList.add("fresh");
      if (place(row)) added += 1;
    });
    return added;
  }

  // force: notify.js's event stream said something changed, which it does in a background
  // tab too (its events are not throttled as timers are).
  function poll(force) {
    if (busy || (document.hidden && force !== true)) return;
    busy = true;
    fetch(url(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { stop(); window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        if (data.more) { window.location.reload(); return; }
        since = data.since;
        drop(data.left);
        if (data.count > 0) {
          var added = insert(data.html);
          if (added) announce(added);
        }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { busy = false; });
  }

  function start() { if (timer === null) timer = window.setInterval(poll, seconds * 1000); }
  function stop() { if (timer !== null) { window.clearInterval(timer); timer = null; } }

  document.addEventListener("inbox:changed", function () { poll(true); });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { stop(); } else { poll(); start(); }
  });
  if (!document.hidden) start();
})();
