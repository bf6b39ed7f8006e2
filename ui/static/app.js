// sludgelens browser glue: keyboard labeling, timeline and gallery clicks. Loaded once through launch(head=...).
(function () {
  "use strict";

  // Label tab keys -> the id of the button they press (the buttons carry the same key in their text).
  const KEYS = {
    y: "key-yes", n: "key-no",
    "1": "key-layout-1", "2": "key-layout-2", "3": "key-layout-3", "4": "key-layout-4",
    Enter: "key-accept", u: "key-undo", r: "key-range",
    ArrowLeft: "key-prev", ArrowRight: "key-next",
  };
  const KEY_BUTTONS = new Set(Object.values(KEYS));
  // A key whose answer has not come back after this long frees the keys again (the server may have failed).
  const GIVE_UP_MS = 20000;

  function typing(target) {
    if (!target || !target.matches) return false;
    return target.matches("input, textarea, select") || target.isContentEditable;
  }

  // ------------------------------------------------------------ the Label tab: one key per frame on screen
  // After a key, the next key waits until the answer is on screen: the stage's data-tick changed and its
  // frame image has loaded. Keys pressed in between are ignored (the frame dims and says so), so a key
  // always acts on the frame the labeler sees. The server checks the same thing (LabelSession.press).
  let waiting = null; // {tick, since}

  function stage() { return document.querySelector("#label-stage .sl-stage"); }
  function workspace() { return document.getElementById("label-workspace"); }

  function setBusy(on) {
    const w = workspace();
    if (w) w.classList.toggle("sl-busy", on);
  }

  function flashIgnored() {
    const w = workspace();
    if (!w) return;
    w.classList.remove("sl-ignored");
    void w.offsetWidth; // restart the animation
    w.classList.add("sl-ignored");
    clearTimeout(w.__slIgnored);
    w.__slIgnored = setTimeout(function () { w.classList.remove("sl-ignored"); }, 700);
  }

  function answered() {
    const s = stage();
    if (!s || s.dataset.tick === waiting.tick) return false;
    const img = s.querySelector("img.sl-frame");
    return !img || (img.complete && img.naturalWidth > 0) || img.dataset.failed === "1";
  }

  function watch() {
    if (!waiting) return;
    if (answered() || performance.now() - waiting.since > GIVE_UP_MS) {
      waiting = null;
      setBusy(false);
      return;
    }
    requestAnimationFrame(watch);
  }

  function startWaiting() {
    const s = stage();
    waiting = { tick: s ? s.dataset.tick : "", since: performance.now() };
    setBusy(true);
    requestAnimationFrame(watch);
  }

  // A frame image that fails to load must not hold the keys.
  document.addEventListener("error", function (ev) {
    if (ev.target && ev.target.classList && ev.target.classList.contains("sl-frame")) ev.target.dataset.failed = "1";
  }, true);

  document.addEventListener("keydown", function (ev) {
    const target = ev.target;
    if (ev.key === "Escape" && typing(target)) {
      target.blur();
      ev.preventDefault();
      return;
    }
    // A slider's number box applies its value on Enter (gradio applies it on blur only).
    if (ev.key === "Enter" && target && target.tagName === "INPUT" && target.type === "number") {
      target.blur();
      ev.preventDefault();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(target)) return;
    const id = KEYS[ev.key];
    if (!id) return;
    const button = document.getElementById(id);
    // Only while the Label tab is on screen: a hidden tab's buttons have no layout box.
    if (!button || button.offsetParent === null || button.disabled) return;
    ev.preventDefault();
    if (ev.repeat || waiting) {
      flashIgnored();
      return;
    }
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    startWaiting();
    button.click();
  }, true);

  // A click on a key's button counts as that key: ignored while an answer is awaited, else awaited itself.
  document.addEventListener("click", function (ev) {
    if (!ev.isTrusted) return; // the key handler's own click
    const button = ev.target && ev.target.closest && ev.target.closest("button");
    if (!button) return;
    if (button.id === "load-queue") {
      // The first frame of a new queue brings the workspace to the top of the screen.
      const s = stage();
      const tick = s ? s.dataset.tick : "";
      const since = performance.now();
      const timer = setInterval(function () {
        const now = stage();
        if ((now && now.dataset.tick !== tick) || performance.now() - since > GIVE_UP_MS) {
          clearInterval(timer);
          const w = workspace();
          if (now && now.dataset.frame && w) w.scrollIntoView({ block: "start" });
        }
      }, 50);
      return;
    }
    if (!KEY_BUTTONS.has(button.id)) return;
    if (waiting) {
      ev.preventDefault();
      ev.stopPropagation();
      flashIgnored();
      return;
    }
    startWaiting();
  }, true);

  // ------------------------------------------------------------ the Analyze tab
  // Timeline: a click on a point writes "position:time" into a hidden textbox, whose change event runs
  // the inspector (a textbox fires Gradio's "input" only on key presses). Plotly keeps the same element
  // across re-renders (Plotly.react), so each plot is bound once; a re-mounted plot is bound anew.
  // A click on a point or a gallery frame brings the inspector into view.
  function showInspector() {
    const heading = document.getElementById("inspector-heading");
    if (heading) heading.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function pick(position) {
    const box = document.querySelector("#timeline-pick textarea, #timeline-pick input");
    if (!box) return;
    box.value = position + ":" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    showInspector();
  }

  function bindPlots() {
    document.querySelectorAll("#timeline .js-plotly-plot").forEach(function (plot) {
      if (plot.__sludgelensBound || typeof plot.on !== "function") return;
      plot.__sludgelensBound = true;
      plot.on("plotly_click", function (data) {
        const point = data && data.points && data.points.find(function (p) { return p.customdata !== undefined; });
        if (point) pick(Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
      });
    });
  }

  document.addEventListener("click", function (ev) {
    const thumb = ev.target && ev.target.closest && ev.target.closest("#frame-gallery button.thumbnail-item");
    if (thumb) setTimeout(showInspector, 0);
  });

  setInterval(bindPlots, 250);
})();
