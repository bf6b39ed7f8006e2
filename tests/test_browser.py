"""The app in headless Chromium: upload, verdict, timeline and gallery clicks, heatmaps, keyboard labeling.

Screenshots of every tab go to test-artifacts/. Without Chromium (Debian's `chromium`) or Playwright the
tests skip, unless SLUDGELENS_REQUIRE_BROWSER=1 (as in CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from app_process import REPO, USERS, running_app

import annotations as store

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
REQUIRED = os.environ.get("SLUDGELENS_REQUIRE_BROWSER") == "1"
# Analysis of the 60 s clip runs on a CPU shared with other tests: generous, it is not a benchmark.
SLOW_S = 120_000


def _need_browser():
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing:
        if REQUIRED:
            pytest.fail(f"SLUDGELENS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    _need_browser()
    with running_app(tmp_path_factory.mktemp("browser-app")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(app, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    page.wait_for_selector("#upload")
    yield page
    context.close()


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_timeout(600)  # let plots and images finish drawing
    page.screenshot(path=str(path), full_page=True)
    return path


def upload_and_wait(page, clip: Path, timeout_ms: int = 60_000) -> float:
    """Set the file on the upload box and wait for the verdict card of that file; returns the seconds taken."""
    started = time.perf_counter()
    page.locator("#upload input[type=file]").set_input_files(str(clip))
    page.wait_for_function(
        "name => { const c = document.querySelector('[data-testid=verdict]');"
        " return c && c.innerText.includes(name); }", arg=clip.name, timeout=timeout_ms)
    return time.perf_counter() - started


def select_in_gallery(page, position: int) -> None:
    """Click a gallery thumbnail once the page has settled: the timeline re-draws after each inspection,
    and a click aimed while the page below it moves lands elsewhere."""
    thumb = page.locator("#frame-gallery button.thumbnail-item").nth(position)
    thumb.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    thumb.click()
    page.wait_for_function("p => document.querySelectorAll('#frame-gallery button.thumbnail-item')[p]"
                           ".classList.contains('selected')", arg=position, timeout=10_000)


def heading(page) -> str:
    return page.locator("#inspector-heading").inner_text()


def image_src(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} img").first.get_attribute("src") or ""


def events(app) -> list[tuple]:
    with sqlite3.connect(app.db_path) as db:
        return db.execute("SELECT frame_id, field, new_value, labeler, kind FROM label_events ORDER BY id").fetchall()


def test_upload_verdict_timeline_gallery_and_heatmap(app, page):
    shoot(page, "analyze-empty")
    upload_and_wait(page, app.examples_dir / "picture_in_picture.mp4")
    card = page.locator("[data-testid=verdict]").inner_text()
    # The card says what the same model says of the same clip from the command line's path.
    from core.analyze import analyze_video
    from core.config import load_settings
    from core.engine import load_model

    settings = load_settings({})
    expected = analyze_video(load_model(settings.model), app.examples_dir / "picture_in_picture.mp4",
                             num_frames=settings.num_frames).verdict
    headline = card.strip().splitlines()[0]
    assert headline == ("Sludge" if expected.label else "Not sludge"), card
    assert f"{round(expected.majority * expected.frames)} of {expected.frames} frames" in card
    assert "majority vote" in card.lower()
    # The analysis opens the most sludge-like frame in the inspector, with its heatmap and mask.
    page.wait_for_function("document.querySelector('#inspector-heading').innerText.includes('Frame ')")
    page.wait_for_function("document.querySelector('#heatmap img') && document.querySelector('#mask img')")

    page.wait_for_function("(() => { const plots = Array.from(document.querySelectorAll('#timeline .js-plotly-plot'));"
                           " return plots.length > 0 && plots.every(p => p.__sludgelensBound)"
                           " && document.querySelectorAll('#timeline path.point').length >= 16; })()")
    points = page.locator("#timeline .scatterlayer .trace").nth(1).locator("path.point")
    assert points.count() == 16
    points.nth(3).click(force=True)
    page.wait_for_function("document.querySelector('#inspector-heading').innerText.includes('Frame 4 of 16')")
    first_map = image_src(page, "heatmap")
    assert first_map

    select_in_gallery(page, 9)
    page.wait_for_function("document.querySelector('#inspector-heading').innerText.includes('Frame 10 of 16')")
    page.wait_for_function("src => { const i = document.querySelector('#heatmap img');"
                           " return i && i.getAttribute('src') !== src; }", arg=first_map)
    assert "auto budget" in page.locator("#faithfulness").inner_text()

    page.locator("#heatmap-view").get_by_text("32-query grid").click()
    page.wait_for_timeout(800)
    assert page.locator("#heatmap img").count() == 1
    shoot(page, "analyze")


def press(page, key: str) -> str:
    """Press a key and wait until the Label tab's status line changes (each key's result says what it did)."""
    message = "() => { const m = document.querySelector('#label-message .sl-msg'); return m ? m.innerText : ''; }"
    before = page.evaluate(message)
    page.keyboard.press(key)
    page.wait_for_function(f"before => ({message})() !== before", arg=before)
    return page.evaluate(message)


def test_keyboard_labeling_writes_events_and_shows_conflicts(app, page):
    from gradio_client import Client, handle_file

    # Frames to label: one more analysis through the API, so this test does not depend on the one above.
    Client(app.url, verbose=False).predict(handle_file(str(app.examples_dir / "layout_change.mp4")), 8, "",
                                           api_name="/analyze")
    page.get_by_role("tab", name="Label").click()
    shoot(page, "label-signed-out")
    page.fill("#login-user :is(input, textarea)", "alice")
    page.fill("#login-password :is(input, textarea)", USERS["alice"][0])
    page.click("#login-button")
    page.wait_for_function("document.querySelector('#identity').innerText.includes('alice (labeler)')")
    page.locator("#strategy input").click()
    page.get_by_role("option", name="unlabeled").click()
    page.click("#load-queue")
    page.wait_for_selector("[data-testid=label-facts]")
    queue = _frame_ids_in_queue(app)
    assert f"#{queue[0]} " in page.locator("[data-testid=label-facts]").inner_text()
    before = len(events(app))

    assert "sludge = no" in press(page, "n")                 # not sludge, moves on
    assert events(app)[before:] == [(queue[0], "sludge", "0", "alice", "set")]
    press(page, "y")                                          # sludge, stays for a layout
    press(page, "2")                                          # horizontal, moves on
    assert events(app)[before + 1:] == [(queue[1], "sludge", "1", "alice", "set"),
                                        (queue[1], "layout", "horizontal", "alice", "set")]
    press(page, "Enter")                                      # accept the prediction, moves on
    accepted = events(app)[before + 3:]
    assert accepted and all(r[0] == queue[2] and r[3:] == ("alice", "set") for r in accepted)
    assert "Undone" in press(page, "u")                       # undo that key press, as new events
    assert [r[0] for r in events(app)[-len(accepted):]] == [queue[2]] * len(accepted)
    assert all(r[4] == "undo" for r in events(app)[-len(accepted):])
    press(page, "ArrowLeft")
    assert f"#{queue[1]} " in page.locator("[data-testid=label-facts]").inner_text()
    page.wait_for_selector("#label-heatmap img")
    shoot(page, "label")

    # Someone else corrects the frame on screen; alice's next key press is refused, and kept for a retry.
    db = store.open_store(app.db_path, app.media_dir)
    store.add_labeler(db, "bob", "labeler")
    store.correct_label(db, queue[1], "layout", "pip", "bob", seen_revision=store.frame_revision(db, queue[1]))
    db.close()
    count = len(events(app))
    page.keyboard.press("4")
    page.wait_for_selector("[data-testid=conflict]")
    assert "nothing was written" in page.locator("[data-testid=conflict]").inner_text()
    assert len(events(app)) == count
    shoot(page, "label-conflict")
    page.click("#retry-change")
    page.wait_for_function("!document.querySelector('[data-testid=conflict]')")
    assert events(app)[-1] == (queue[1], "layout", "other", "alice", "set")

    # r: the last label (layout other, set on queue[1]) on every frame from there to the current one.
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("id => document.querySelector('[data-testid=label-facts]')"
                           ".innerText.includes('#' + id + ' ')", arg=queue[3])
    assert "on 3 frames" in press(page, "r")
    assert events(app)[-3:] == [(f, "layout", "other", "alice", "range") for f in queue[1:4]]


def test_review_and_export_tabs(app, page):
    page.get_by_role("tab", name="Label").click()
    page.fill("#login-user :is(input, textarea)", "rita")
    page.fill("#login-password :is(input, textarea)", USERS["rita"][0])
    page.click("#login-button")
    page.wait_for_function("document.querySelector('#identity').innerText.includes('rita (reviewer)')")
    page.get_by_role("tab", name="Review").click()
    page.wait_for_function("document.querySelector('#metrics-table').innerText.includes('accuracy')")
    page.wait_for_selector("#confusion-sludge .js-plotly-plot")
    shoot(page, "review")

    # A reviewer rejects the newest pending change: a review row, and an event restoring the value before it.
    with sqlite3.connect(app.db_path) as db:
        newest, frame_id, field = db.execute(
            "SELECT id, frame_id, field FROM label_events WHERE source = 'human' AND kind IN ('set', 'range')"
            " ORDER BY id DESC LIMIT 1").fetchone()
    page.locator("#review-event input").fill(str(newest))
    page.click("#review-reject")
    page.wait_for_function("id => document.body.innerText.includes('Rejected event ' + id)", arg=newest)
    with sqlite3.connect(app.db_path) as db:
        assert db.execute("SELECT reviewer, accepted FROM reviews WHERE event_id = ?", [newest]).fetchall() == [
            ("rita", 0)]
        assert db.execute("SELECT labeler, kind, ref_event FROM label_events ORDER BY id DESC LIMIT 1").fetchone() == (
            "rita", "reject", newest)
    page.get_by_role("tab", name="Export").click()
    page.click("#export-button")
    page.wait_for_function("document.querySelector('#export-summary').innerText.includes('snapshot') ||"
                           " document.querySelector('#export-summary').innerText.includes('export')")
    page.wait_for_selector("#export-zip a")
    assert page.locator("#export-zip").inner_text().strip().endswith(".zip") or page.locator("#export-zip a").count()
    shoot(page, "export")


def test_upload_of_a_60s_720p_clip_to_verdict_on_screen(app, page, capsys):
    from bench.clips import ensure_clip

    clip = ensure_clip()  # data/bench/clip_60s_1280x720_30fps.mp4, shared with the video benchmark
    seconds = upload_and_wait(page, clip, timeout_ms=SLOW_S)
    card = page.locator("[data-testid=verdict]").inner_text()
    assert "60.0 s video" in card
    shoot(page, "analyze-60s-720p")
    line = ("end-to-end upload -> verdict on screen (60 s 1280x720 h264, 16 frames, embedded model, CPU): "
            f"{seconds:.2f} s")
    (ARTIFACTS / "end_to_end.txt").write_text(line + "\n")
    with capsys.disabled():
        print("\n" + line)


def _frame_ids_in_queue(app) -> list[int]:
    """The queue order of the 'unlabeled' strategy: frames without a sludge label, oldest first."""
    with sqlite3.connect(app.db_path) as db:
        return [r[0] for r in db.execute(
            "SELECT id FROM frames f WHERE NOT EXISTS (SELECT 1 FROM label_events e WHERE e.frame_id = f.id"
            " AND e.field = 'sludge') ORDER BY id")]
