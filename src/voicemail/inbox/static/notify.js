// New voicemails, on every inbox page: their count in the tab title ("(3) Inbox · ..."),
// and, when the agent turns them on, a sound and a desktop notification for each new one
// in their queues. The page listens to /inbox/notify/events (server-sent events: unlike
// timers, they are not throttled in a background tab); a tab refused a stream (too many
// open) or a browser without EventSource polls /inbox/notify/count instead. Each change
// is also told to the rest of the page ("inbox:changed", which the list uses to fetch its
// rows while in the background). The choices are kept in localStorage; the browser's
// permission is asked only when the agent ticks the box. (No inline scripts: the CSP.)
(function () {
  "use strict";
  var box = document.getElementById("notify-settings");
  if (!box) return; // signed out
  var soundBox = document.getElementById("notify-sound");
  var desktopBox = document.getElementById("notify-desktop");
  var status = document.getElementById("notify-status");
  var KEYS = { sound: "voicemail.notify.sound", desktop: "voicemail.notify.desktop",
    told: "voicemail.notify.told" };
  var TOLD_KEPT = 200;
  var LOCK_HELD_MS = 10000;
  var baseTitle = document.title;
  var told = {}; // ids this tab has told about (others' are in localStorage)
  var since = ""; // the time of the last look, for polling
  var source = null;
  var timer = null;
  var audio = null;

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }
  function store(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) { /* private mode: the choice lasts for this page */ }
  }
  function say(text) { if (status) status.textContent = text; }

  function setCount(count) {
    var shown = count > 99 ? "99+" : String(count);
    document.title = count > 0 ? "(" + shown + ") " + baseTitle : baseTitle;
    box.dataset.count = String(count);
  }

  // Told already, by this tab or another one of this browser (the last TOLD_KEPT ids).
  function toldBefore(id) {
    if (told[id]) return true;
    var list = (stored(KEYS.told) || "").split(",");
    return list.indexOf(id) !== -1;
  }
  function markTold(id) {
    told[id] = true;
    var list = (stored(KEYS.told) || "").split(",").filter(function (x) { return x; });
    list.push(id);
    store(KEYS.told, list.slice(-TOLD_KEPT).join(","));
  }

  function soundOn() { return stored(KEYS.sound) === "1"; }
  function desktopOn() {
    return stored(KEYS.desktop) === "1" && "Notification" in window &&
      window.Notification.permission === "granted";
  }

  // A short two-tone chime made here (no file to fetch). Browsers let a page make sound
  // only after the user has interacted with it, so the context is made or resumed on a
  // click (the box itself, or anywhere on the page).
  function audioContext() {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    if (!audio) audio = new Context();
    if (audio.state === "suspended") audio.resume();
    return audio;
  }
  function chime() {
    var context = audioContext();
    if (!context) return;
    var start = context.currentTime;
    [880, 1320].forEach(function (frequency, i) {
      var oscillator = context.createOscillator();
      var gain = context.createGain();
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.2, start + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.18 + 0.3);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(start + i * 0.18);
      oscillator.stop(start + i * 0.18 + 0.32);
    });
  }

  function showNotification(item) {
    var body = "From " + (item.caller || "an unknown caller") +
      (item.queue ? " · " + item.queue : "");
    try {
      var shown = new window.Notification("New voicemail", { body: body, tag: "voicemail-" + item.id });
      shown.onclick = function () {
        window.focus();
        window.location.href = item.url;
        shown.close();
      };
    } catch (e) { /* a browser that shows notifications only from a service worker */ }
  }

  // Each voicemail is told by one tab of this browser: the first to take its lock (Web
  // Locks are shared by the site's tabs at once, where localStorage reaches the others a
  // moment later) holds it a while, and marks it told for tabs that hear of it later.
  function claim(id) {
    if (toldBefore(id)) return Promise.resolve(false);
    if (!navigator.locks) { markTold(id); return Promise.resolve(true); }
    return new Promise(function (resolve) {
      navigator.locks.request("voicemail-notify-" + id, { ifAvailable: true }, function (lock) {
        if (!lock || toldBefore(id)) { resolve(false); return null; }
        markTold(id);
        resolve(true);
        return new Promise(function (done) { window.setTimeout(done, LOCK_HELD_MS); });
      });
    });
  }

  function tell(items) {
    items = items || [];
    Promise.all(items.map(function (item) { return claim(item.id); })).then(function (won) {
      var fresh = items.filter(function (item, i) { return won[i]; });
      if (!fresh.length) return;
      if (soundOn()) chime();
      if (desktopOn()) fresh.slice().reverse().forEach(showNotification);
    });
  }

  function changed() { document.dispatchEvent(new CustomEvent("inbox:changed")); }

  function received(data) {
    if (typeof data.count === "number") setCount(data.count);
    if (data.since) since = data.since;
    if (data.new && data.new.length) tell(data.new);
  }

  // Polling, when there is no stream: on a timer, so throttled in a background tab.
  function poll() {
    var url = box.dataset.countUrl + (since ? "?since=" + encodeURIComponent(since) : "");
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { stopPolling(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        var before = box.dataset.count;
        received(data);
        if ((data.new && data.new.length) || before !== box.dataset.count) changed();
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }
  function startPolling() {
    if (timer !== null) return;
    var seconds = parseFloat(box.dataset.pollSeconds) || 5;
    poll();
    timer = window.setInterval(poll, seconds * 1000);
  }
  function stopPolling() {
    if (timer !== null) { window.clearInterval(timer); timer = null; }
  }

  function listen() {
    if (!window.EventSource) { startPolling(); return; }
    source = new window.EventSource(box.dataset.eventsUrl);
    function on(name, handler) {
      source.addEventListener(name, function (event) {
        var data = {};
        try { data = JSON.parse(event.data); } catch (e) { return; }
        handler(data);
      });
    }
    on("count", received);
    on("new", function (data) { received(data); changed(); });
    on("changed", changed);
    on("signedout", function () { source.close(); source = null; });
    source.onerror = function () {
      // A dropped connection is retried by the browser (readyState CONNECTING); a refusal
      // (429/503: too many open tabs) or a sign-in gone closes it: poll instead.
      if (source && source.readyState === window.EventSource.CLOSED) {
        source = null;
        startPolling();
      }
    };
  }

  // The boxes: ticked from what was chosen before; the permission asked on the click.
  soundBox.checked = soundOn();
  desktopBox.checked = desktopOn();
  if (!("Notification" in window)) desktopBox.disabled = true;
  soundBox.addEventListener("change", function () {
    store(KEYS.sound, soundBox.checked ? "1" : null);
    if (soundBox.checked) { audioContext(); say("A sound will play for new voicemails"); }
  });
  desktopBox.addEventListener("change", function () {
    if (!desktopBox.checked) { store(KEYS.desktop, null); return; }
    var asked = window.Notification.requestPermission(function () {});
    Promise.resolve(asked).then(function () {
      var granted = window.Notification.permission === "granted";
      desktopBox.checked = granted;
      store(KEYS.desktop, granted ? "1" : null);
      say(granted ? "New voicemails will show a notification"
        : "The browser blocks notifications for this site");
    });
  });
  // Any click or key on the page lets a chime play later, even from a background tab.
  ["pointerdown", "keydown"].forEach(function (type) {
    document.addEventListener(type, function () { if (soundOn()) audioContext(); },
      { once: true, capture: true });
  });

  box.hidden = false;
  listen();
})();
