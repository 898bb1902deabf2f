// Keyboard shortcuts of the inbox list and of a voicemail's page, listed in the "?" dialog
// (_shortcuts.html), and the list's checkboxes for bulk actions. Keys do nothing while the
// user types in a field, or with Ctrl, Alt or Meta held (the browser's own shortcuts).
//
// The list's rows can be replaced at any time by the live updates (inbox.js): the keyboard
// cursor, the checked boxes and the focus are kept by voicemail id, not by element, and put
// back on the new row. (No inline scripts: the CSP forbids them.)
(function () {
  "use strict";
  var dialog = document.getElementById("shortcuts-help");
  var opener = document.getElementById("shortcuts-open");
  var table = document.getElementById("voicemail-list");
  var player = document.getElementById("player");

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable) return true;
    if (tag !== "input") return false;
    var type = (target.getAttribute("type") || "text").toLowerCase();
    return ["checkbox", "radio", "button", "submit", "reset"].indexOf(type) === -1;
  }

  function go(url) { window.location.assign(url); }

  function submit(form) {
    if (!form) return false;
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
    return true;
  }

  // The "?" dialog: a native modal <dialog> (focus kept inside it, Esc closes it, focus
  // goes back to where it was).
  var before = null;
  function openHelp() {
    if (!dialog || dialog.open) return;
    before = document.activeElement;
    dialog.showModal();
    var close = document.getElementById("shortcuts-close");
    if (close) close.focus();
  }
  if (opener) opener.addEventListener("click", openHelp);
  if (dialog) {
    dialog.addEventListener("close", function () {
      if (before && before.focus && document.contains(before)) before.focus();
    });
  }

  // The list: a cursor row (aria-current), moved with j/k --------------------------------
  var cursorId = null;
  var cursorIndex = -1;
  var checked = {};

  function rows() {
    return table ? Array.prototype.slice.call(table.tBodies[0].querySelectorAll("tr.voicemail-row")) : [];
  }

  function rowOf(id) {
    return table ? table.tBodies[0].querySelector('tr.voicemail-row[data-id="' + id + '"]') : null;
  }

  function currentRow() {
    var row = cursorId ? rowOf(cursorId) : null;
    if (row) return row;
    // The cursor's row has left the list: its neighbour takes the cursor.
    var all = rows();
    if (!all.length || cursorIndex < 0) return null;
    row = all[Math.min(cursorIndex, all.length - 1)];
    setCursor(row, false);
    return row;
  }

  function setCursor(row, focus) {
    rows().forEach(function (other) {
      if (other !== row) { other.classList.remove("cursor"); other.removeAttribute("aria-current"); }
    });
    if (!row) return;
    row.classList.add("cursor");
    row.setAttribute("aria-current", "true");
    cursorId = row.dataset.id;
    cursorIndex = rows().indexOf(row);
    if (focus) {
      var link = row.querySelector("a.open");
      if (link) link.focus();
      row.scrollIntoView({ block: "nearest" });
    }
  }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var row = currentRow();
    var index = row ? all.indexOf(row) + step : (step > 0 ? 0 : all.length - 1);
    setCursor(all[Math.max(0, Math.min(all.length - 1, index))], true);
  }

  function countChecked() {
    var count = Object.keys(checked).length;
    var label = document.getElementById("bulk-count");
    if (label) label.textContent = count ? count + " checked" : "";
    var all = document.getElementById("select-all");
    if (all) {
      var boxes = rows().map(function (row) { return row.querySelector("input.select-row"); });
      var on = boxes.filter(function (box) { return box && box.checked; }).length;
      all.checked = on > 0 && on === boxes.length;
      all.indeterminate = on > 0 && on < boxes.length;
    }
  }

  function setChecked(box, on) {
    box.checked = on;
    if (on) checked[box.value] = true; else delete checked[box.value];
  }

  if (table) {
    var body = table.tBodies[0];
    // Where the user clicks or tabs to in a row, the cursor follows.
    body.addEventListener("focusin", function (event) {
      var row = event.target.closest ? event.target.closest("tr.voicemail-row") : null;
      if (row && row.dataset.id !== cursorId) setCursor(row, false);
    });
    body.addEventListener("change", function (event) {
      if (event.target.classList && event.target.classList.contains("select-row")) {
        setChecked(event.target, event.target.checked);
        countChecked();
      }
    });
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        rows().forEach(function (row) {
          var box = row.querySelector("input.select-row");
          if (box) setChecked(box, all.checked);
        });
        countChecked();
      });
    }
    // A row replaced by a live update: the same voicemail keeps its check, cursor and focus.
    var focusedClass = null;
    var focusedId = null;
    document.addEventListener("focusin", function (event) {
      var row = event.target.closest ? event.target.closest("tr.voicemail-row") : null;
      focusedId = row ? row.dataset.id : null;
      focusedClass = row && event.target.classList.length ? event.target.classList[0] : null;
    });
    new MutationObserver(function (records) {
      var touched = false;
      records.forEach(function (record) {
        Array.prototype.forEach.call(record.addedNodes, function (node) {
          if (!node.dataset || !node.dataset.id) return;
          touched = true;
          var box = node.querySelector("input.select-row");
          if (box && checked[node.dataset.id]) box.checked = true;
          if (node.dataset.id === cursorId) {
            node.classList.add("cursor");
            node.setAttribute("aria-current", "true");
          }
          var active = document.activeElement;
          if (node.dataset.id === focusedId && (!active || active === document.body)) {
            var again = focusedClass ? node.querySelector("." + focusedClass) : null;
            (again || node.querySelector("a.open")).focus();
          }
        });
        if (record.removedNodes.length) touched = true;
      });
      if (touched) {
        // Checks of rows that left the list are forgotten: the bulk form sends none of them.
        Object.keys(checked).forEach(function (id) { if (!rowOf(id)) delete checked[id]; });
        if (cursorId && rowOf(cursorId)) cursorIndex = rows().indexOf(rowOf(cursorId));
        countChecked();
      }
    }).observe(body, { childList: true });
    rows().forEach(function (row) {
      var box = row.querySelector("input.select-row");
      if (box && box.checked) checked[row.dataset.id] = true; // kept by the browser on back
    });
    countChecked();
  }

  // The bulk form shows the field its action needs.
  var bulkAction = document.getElementById("bulk-action");
  function showBulkFields() {
    document.querySelectorAll("#bulk-form [data-for]").forEach(function (field) {
      var shown = field.dataset.for === bulkAction.value;
      field.hidden = !shown;
      field.disabled = !shown;
    });
  }
  if (bulkAction) { bulkAction.addEventListener("change", showBulkFields); showBulkFields(); }

  function listKey(key) {
    var row;
    switch (key) {
      case "j": case "ArrowDown": move(1); return true;
      case "k": case "ArrowUp": move(-1); return true;
      case "o": case "Enter": case "h":
        row = currentRow();
        if (!row) return false;
        go(row.querySelector("a.open").getAttribute("href") + (key === "h" ? "#handle-form" : ""));
        return true;
      case "x":
        row = currentRow();
        if (!row) return false;
        var box = row.querySelector("input.select-row");
        setChecked(box, !box.checked);
        countChecked();
        return true;
      case "t":
        row = currentRow();
        return row ? submit(row.querySelector("form.take-form")) : false;
      case "/":
        var search = document.getElementById("q");
        if (search) { search.focus(); search.select(); return true; }
        return false;
      default: return false;
    }
  }

  function pageKey(key) {
    switch (key) {
      case "p": // Space too: player.js has it
        if (!player) return false;
        if (player.paused) player.play(); else player.pause();
        return true;
      case "t": return submit(document.getElementById("take-form"));
      case "h":
        var field = document.getElementById("disposition");
        if (!field) return false;
        field.focus();
        field.scrollIntoView({ block: "center" });
        return true;
      case "u": go("/inbox"); return true;
      default: return false;
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey) return;
    if (dialog && dialog.open) return; // the dialog's own keys (Esc, Tab)
    if (typing(event.target)) return;
    var key = event.key;
    // Enter, Space and the arrows keep their usual meaning on links, buttons and widgets.
    var onControl = event.target !== document.body && event.target.tagName !== "MAIN" &&
      !(event.target.closest && event.target.closest("tr.voicemail-row a.open"));
    if ((key === "Enter" || key === " " || key.indexOf("Arrow") === 0) && onControl) return;
    var done = false;
    if (key === "?") { openHelp(); done = true; }
    else if (key === "n") { go("/inbox/next"); done = true; }
    else if (table) done = listKey(key);
    else if (document.querySelector("article.voicemail")) done = pageKey(key);
    if (done) event.preventDefault();
  });
})();
