// sludgelens browser glue: keyboard labeling and timeline clicks. Loaded once through launch(head=...).
(function () {
  "use strict";

  // Label tab keys -> the id of the button they press (the buttons carry the same key in their text).
  const KEYS = {
    y: "key-yes", n: "key-no",
    "1": "key-layout-1", "2": "key-layout-2", "3": "key-layout-3", "4": "key-layout-4",
    Enter: "key-accept", u: "key-undo", r: "key-range",
    ArrowLeft: "key-prev", ArrowRight: "key-next",
  };

  function typing(target) {
    if (!target) return false;
    const tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    const id = KEYS[ev.key];
    if (!id) return;
    const button = document.getElementById(id);
    // Only while the Label tab is on screen: a hidden tab's buttons have no layout box.
    if (!button || button.offsetParent === null || button.disabled) return;
    ev.preventDefault();
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    button.click();
  }, true);

  // Timeline: a click on a point writes "position:time" into a hidden textbox, whose change event runs
  // the inspector (a textbox fires Gradio's "input" only on key presses). Plotly keeps the same element
  // across re-renders (Plotly.react), so each plot is bound once; a re-mounted plot is bound anew.
  function pick(position) {
    const box = document.querySelector("#timeline-pick textarea, #timeline-pick input");
    if (!box) return;
    box.value = position + ":" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
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

  setInterval(bindPlots, 250);
})();
