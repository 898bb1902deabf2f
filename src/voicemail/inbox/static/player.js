// The voicemail page's player: speed, waveform (seekable), words highlighted as spoken.
// A static file because the page's Content-Security-Policy forbids inline scripts.
(function () {
  "use strict";
  const audio = document.getElementById("player");
  if (!audio) return;
  const canvas = document.getElementById("waveform");
  const speed = document.getElementById("speed");
  let words = [];
  let starts = [];
  let ends = [];
  let peaks = [];
  let current = null;

  function duration() {
    return isFinite(audio.duration) && audio.duration > 0
      ? audio.duration
      : parseFloat(canvas ? canvas.getAttribute("aria-valuemax") : "0") || 0;
  }

  function seek(seconds) {
    audio.currentTime = Math.max(0, Math.min(seconds, duration()));
    update();
  }

  // Speed
  if (speed) {
    speed.addEventListener("change", () => {
      audio.playbackRate = parseFloat(speed.value) || 1;
    });
  }

  // Waveform: peaks from the server, played part in the accent colour.
  function draw() {
    if (!canvas) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const total = duration();
    const played = total ? (audio.currentTime / total) * width : 0;
    const bar = peaks.length ? width / peaks.length : width;
    const middle = height / 2;
    peaks.forEach((peak, i) => {
      const x = i * bar;
      const h = Math.max(1, peak * height * 0.95);
      ctx.fillStyle = x < played ? "#0a58ca" : "#8c959f";
      ctx.fillRect(x, middle - h / 2, Math.max(1, bar - ratio), h);
    });
    ctx.fillStyle = "#1b1f24";
    ctx.fillRect(played, 0, ratio, height);
    canvas.setAttribute("aria-valuenow", audio.currentTime.toFixed(1));
    canvas.setAttribute("aria-valuetext", Math.round(audio.currentTime) + " seconds");
  }

  if (canvas) {
    fetch(canvas.dataset.peaks, { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : { peaks: [] }))
      .then((data) => {
        peaks = data.peaks || [];
        draw();
      })
      .catch(() => draw());
    canvas.addEventListener("click", (event) => {
      const box = canvas.getBoundingClientRect();
      seek(((event.clientX - box.left) / box.width) * duration());
    });
    canvas.addEventListener("keydown", (event) => {
      const step = event.shiftKey ? 10 : 2;
      if (event.key === "ArrowRight") seek(audio.currentTime + step);
      else if (event.key === "ArrowLeft") seek(audio.currentTime - step);
      else if (event.key === "Home") seek(0);
      else if (event.key === "End") seek(duration());
      else return;
      event.preventDefault();
    });
    window.addEventListener("resize", draw);
  }

  // The word whose [start, end) holds t: the last word starting at or before t.
  function wordAt(t) {
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= t) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found >= 0 && t < ends[found] ? found : -1;
  }

  function highlight() {
    const index = wordAt(audio.currentTime);
    const next = index >= 0 ? words[index] : null;
    if (next === current) return;
    if (current) {
      current.classList.remove("current");
      current.removeAttribute("aria-current");
    }
    current = next;
    if (current) {
      // Tab into the transcript lands on the word being played (unless a word has focus).
      if (transcript && !transcript.contains(document.activeElement)) rove(index, false);
      current.classList.add("current");
      current.setAttribute("aria-current", "true");
      const box = current.getBoundingClientRect();
      if (box.top < 0 || box.bottom > window.innerHeight) {
        current.scrollIntoView({ block: "nearest", behavior: "smooth" });
      }
    }
  }

  function update() {
    highlight();
    draw();
  }

  // timeupdate fires only a few times a second: follow each frame while playing.
  function frame() {
    update();
    if (!audio.paused && !audio.ended) window.requestAnimationFrame(frame);
  }
  audio.addEventListener("timeupdate", update);
  audio.addEventListener("seeked", update);
  audio.addEventListener("loadedmetadata", update);
  audio.addEventListener("play", () => window.requestAnimationFrame(frame));

  // The transcript: one composite widget (a listbox of words, one tab stop). The focused
  // word has tabindex 0 and the others -1 (a roving tabindex); the arrow keys, Home and End
  // move it; Enter or Space plays from it, as a click does.
  let transcript = null;
  let focusIndex = 0;

  function rove(index, focus) {
    if (!words.length) return;
    const next = Math.max(0, Math.min(index, words.length - 1));
    if (next !== focusIndex) {
      words[focusIndex].setAttribute("tabindex", "-1");
      words[focusIndex].setAttribute("aria-selected", "false");
      focusIndex = next;
    }
    words[focusIndex].setAttribute("tabindex", "0");
    words[focusIndex].setAttribute("aria-selected", "true");
    if (focus) words[focusIndex].focus();
  }

  function playFrom(i) {
    seek(starts[i]);
    audio.play().catch(() => {});
  }

  function onTranscriptKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const i = words.indexOf(event.target);
    if (i < 0) return;
    if (event.key === "ArrowRight" || event.key === "ArrowDown") rove(i + 1, true);
    else if (event.key === "ArrowLeft" || event.key === "ArrowUp") rove(i - 1, true);
    else if (event.key === "Home") rove(0, true);
    else if (event.key === "End") rove(words.length - 1, true);
    else if (event.key === "Enter" || event.key === " ") {
      rove(i, false);
      playFrom(i);
    } else return;
    event.preventDefault();
    event.stopPropagation(); // Space here plays from the word, not toggles the player
  }

  function bindWords() {
    words = Array.from(document.querySelectorAll("#transcript .word"));
    starts = words.map((w) => parseFloat(w.dataset.start));
    ends = words.map((w) => parseFloat(w.dataset.end));
    current = null;
    focusIndex = Math.max(0, words.findIndex((w) => w.getAttribute("tabindex") === "0"));
    words.forEach((word, i) => {
      word.addEventListener("click", () => {
        rove(i, false);
        playFrom(i);
      });
      word.addEventListener("focus", () => rove(i, false));
    });
    const box = document.getElementById("transcript");
    if (box && box !== transcript && words.length) {
      transcript = box;
      box.addEventListener("keydown", onTranscriptKey);
    }
  }
  bindWords();
  // A page opened while transcribing: voicemail_live.js puts the transcript in once ready.
  document.addEventListener("voicemail:transcript", bindWords);

  // Space toggles play, except while typing in a form field or on a control.
  document.addEventListener("keydown", (event) => {
    if (event.key !== " " || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, button, a, audio")) return;
    event.preventDefault();
    if (audio.paused) audio.play().catch(() => {});
    else audio.pause();
  });
})();
