"""A labeler in Chromium: sign in, load a queue and label by keyboard, timing each key's answer on screen.

Shared by the browser tests and `python -m bench.bench_sitting`.
"""

from __future__ import annotations

import shutil
import sqlite3

from app_process import USERS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags Chromium needs headless on a machine without a GPU or a network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
STAGE = "document.querySelector('#label-stage .sl-stage')"
KEYS = ("y", "n", "1", "2", "3", "4", "Enter", "u", "r", "ArrowLeft", "ArrowRight")
LAYOUT_KEYS = {"1": "vertical", "2": "horizontal", "3": "pip", "4": "other"}

# Installed in the page: for every key the page takes, the time until the answer's frame is on screen (new
# stage tick, image loaded) and until that frame's heatmap and mask are (both images loaded).
MEASURE = """
(keys) => {
  window.__sl = {pending: null, results: []};
  window.addEventListener('keydown', (ev) => {
    if (!keys.includes(ev.key) || window.__sl.pending) return;
    const stage = document.querySelector('#label-stage .sl-stage');
    const p = {key: ev.key, t0: performance.now(), tick: stage.dataset.tick, from: stage.dataset.frame,
               frameAt: null, heatAt: null, frame: null};
    window.__sl.pending = p;
    const loaded = (img) => img.complete && img.naturalWidth > 0;
    const loop = () => {
      const s = document.querySelector('#label-stage .sl-stage');
      const now = performance.now();
      if (p.frameAt === null && s.dataset.tick !== p.tick) {
        const img = s.querySelector('img.sl-frame');
        if (!img || loaded(img)) { p.frameAt = now; p.frame = s.dataset.frame; }
      }
      if (p.frameAt !== null && p.heatAt === null) {
        const e = document.querySelector('#label-explain .sl-explain');
        const pics = e ? Array.from(e.querySelectorAll('img')) : [];
        if (!p.frame || (e.dataset.frame === p.frame && pics.length === 2 && pics.every(loaded))) p.heatAt = now;
      }
      if ((p.frameAt !== null && p.heatAt !== null) || now - p.t0 > 60000) {
        window.__sl.results.push(p);
        window.__sl.pending = null;
        return;
      }
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }, true);
}
"""


def sign_in_and_load(page, url: str, strategy: str = "unlabeled", collection: str | None = None) -> None:
    """Open the app, sign in as the labeler alice and load the Label tab's queue (a strategy, a collection)."""
    page.goto(url)
    page.wait_for_selector("#upload")
    page.get_by_role("tab", name="Label").click()
    page.fill("#login-user :is(input, textarea)", "alice")
    page.fill("#login-password :is(input, textarea)", USERS["alice"][0])
    page.click("#login-button")
    page.wait_for_function("document.querySelector('#identity').innerText.includes('alice (labeler)')")
    page.locator("#strategy input").click()
    page.get_by_role("option", name=strategy).click()
    if collection:
        page.locator("#label-collection input").click()
        page.get_by_role("option", name=collection).click()
    page.click("#load-queue")
    page.wait_for_function(f"{STAGE} && {STAGE}.dataset.frame")


class Labeler:
    """Presses keys as a labeler does: one at a time, each once the previous answer and its heatmap are on
    screen; keeps the measurements and the label each frame is meant to end with."""

    def __init__(self, page):
        self.page = page
        self.intended: dict[int, tuple[bool, str | None]] = {}
        self.timings: list[dict] = []

    def on_screen(self) -> int:
        return int(self.page.evaluate(f"{STAGE}.dataset.frame"))

    def model_answer(self) -> tuple[bool, str | None]:
        """The model's answer as the facts beside the frame show it ("sludge · P 0.62 · pip")."""
        row = self.page.locator("[data-testid=label-facts] tr", has_text="model")
        sludge = "not sludge" not in " ".join(row.inner_text().split())
        layout = row.locator(".sl-chip").inner_text().strip()
        return sludge, (layout if sludge else None)

    def key(self, key: str) -> dict:
        count = self.page.evaluate("window.__sl.results.length")
        self.page.keyboard.press(key)
        self.page.wait_for_function("n => window.__sl.results.length > n && window.__sl.pending === null", arg=count,
                                    polling=50, timeout=90_000)
        result = self.page.evaluate("window.__sl.results[window.__sl.results.length - 1]")
        assert "timedOut" not in result
        self.timings.append(result)
        # The keys are free again before the next one.
        self.page.wait_for_function("!document.querySelector('#label-workspace').classList.contains('sl-busy')")
        return result

    def label(self, key: str) -> int:
        """Label the frame on screen with one key (or "y2": y, then 2) and record what it should end with."""
        frame = self.on_screen()
        if key == "Enter":
            self.intended[frame] = self.model_answer()
        elif key == "n":
            self.intended[frame] = (False, None)
        elif key == "y2":
            self.key("y")
            assert self.on_screen() == frame  # y waits for a layout
            key = "2"
            self.intended[frame] = (True, "horizontal")
        else:
            self.intended[frame] = (True, LAYOUT_KEYS[key])
        self.key(key)
        return frame


def read_keyed_labels(db_path, labeler: str = "alice") -> tuple[set[int], dict[int, tuple[bool | None, str | None]]]:
    """From the store file: the frames the labeler's events touched, and each such frame's current (sludge,
    layout) label, to set beside what the labeler keyed."""
    with sqlite3.connect(db_path) as db:
        touched = {r[0] for r in db.execute("SELECT DISTINCT frame_id FROM label_events WHERE labeler = ?",
                                            [labeler])}
        current = {r[0]: (None if r[1] is None else bool(r[1]), r[2]) for r in db.execute(
            "SELECT frame_id, sludge, layout FROM current_labels WHERE frame_id IN (SELECT frame_id FROM label_events"
            " WHERE labeler = ?)", [labeler])}
    return touched, current
