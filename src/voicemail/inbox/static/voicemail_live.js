// The voicemail page while it is open. It polls live.json while the tab is visible:
// - a page opened while the voicemail was transcribing shows the transcript once it is
//   ready, without a reload (the page is fetched again and its transcript put in; the
//   player too when the recording was held until then);
// - when someone else takes, assigns, handles or reopens the voicemail, it says who did
//   what and when, before the agent sends anything from a page that is out of date.
// A static file because the page's Content-Security-Policy forbids inline scripts.
(function () {
  "use strict";
  var article = document.querySelector("article.voicemail[data-live]");
  if (!article) return;
  var seconds = parseFloat(article.dataset.pollSeconds) || 5;
  var transcribed = article.dataset.transcribed === "true";
  var held = article.dataset.held === "true";
  var region = document.getElementById("live-changes");
  var timer = null;
  var busy = false;
  var shown = "";

  function url() {
    return article.dataset.live + "?since=" + encodeURIComponent(article.dataset.since);
  }

  // "2026-12-03T09:05:46.123+00:00" → "2026-12-03 09:05:46 UTC", as the page writes times.
  function utc(iso) {
    return iso.slice(0, 10) + " " + iso.slice(11, 19) + " UTC";
  }

  function showChanges(changes) {
    if (!region) return;
    var key = JSON.stringify(changes);
    if (key === shown) return;
    shown = key;
    region.textContent = "";
    region.hidden = changes.length === 0;
    if (!changes.length) return;
    var intro = document.createElement("p");
    intro.textContent = "Changed since you opened this page:";
    var list = document.createElement("ul");
    changes.forEach(function (change) {
      var item = document.createElement("li");
      item.appendChild(document.createTextNode(change.text + ", "));
      var time = document.createElement("time");
      time.setAttribute("datetime", change.at);
      time.textContent = utc(change.at);
      item.appendChild(time);
      list.appendChild(item);
    });
    var after = document.createElement("p");
    after.textContent =
      "What you send from this page is checked against these changes first; what you typed is kept.";
    region.appendChild(intro);
    region.appendChild(list);
    region.appendChild(after);
  }

  function swap(fresh, selector) {
    var now = document.querySelector(selector);
    var next = fresh.querySelector(selector);
    if (now && next) now.replaceWith(document.importNode(next, true));
    return Boolean(now && next);
  }

  function showTranscript() {
    return fetch(window.location.pathname, {
      headers: { Accept: "text/html", "X-Inbox-Refresh": "transcript" },
      credentials: "same-origin",
    })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error(r.status)); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var next = fresh.getElementById("transcript");
        if (!next || next.hasAttribute("data-pending")) return;
        var help = fresh.getElementById("transcript-help");
        if (help && !document.getElementById("transcript-help")) {
          var box = document.getElementById("transcript");
          if (box) box.parentNode.insertBefore(document.importNode(help, true), box);
        }
        swap(fresh, "#transcript");
        var status = document.getElementById("transcript-status");
        if (status) {
          status.textContent = next.hasAttribute("data-failed")
            ? "Transcription failed: no transcript will come."
            : "The transcript is ready.";
        }
        swap(fresh, "dl.facts"); // its language
        if (held && swap(fresh, "section.player")) {
          // The player was not there: player.js found nothing to drive; run it now.
          var script = document.createElement("script");
          script.src = "/inbox/static/player.js";
          document.body.appendChild(script);
          held = false;
        } else {
          var callback = fresh.getElementById("callback");
          var download = document.getElementById("download");
          if (callback && download && !document.getElementById("callback")) {
            download.parentNode.insertBefore(document.importNode(callback, true), download);
          }
          document.dispatchEvent(new CustomEvent("voicemail:transcript"));
        }
        transcribed = true;
        article.dataset.transcribed = "true";
      });
  }

  function poll() {
    if (busy) return;
    busy = true;
    fetch(url(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error(r.status)); })
      .then(function (data) {
        showChanges(data.changes || []);
        // Ready, or never coming (failed on every attempt): the page's text says which.
        if ((data.transcribed || data.transcriptionFailed) && !transcribed) return showTranscript();
        return null;
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () {
        busy = false;
        schedule();
      });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    if (document.visibilityState === "visible") timer = window.setTimeout(poll, seconds * 1000);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !busy) poll();
    else schedule();
  });
  schedule();
})();
