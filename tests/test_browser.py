"""The app in headless Chromium: upload, verdict, timeline and gallery clicks, heatmaps, keyboard labeling.

Screenshots of every tab go to test-artifacts/ (each tab at 1440x900 and 390x844 as well), and the
200-frame keyboard labeling run writes its key-to-screen figures to test-artifacts/labeling.txt. Without
Chromium (Debian's `chromium`) or Playwright the tests skip, unless SLUDGELENS_REQUIRE_BROWSER=1 (as in CI),
where they fail.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from app_process import REPO, USERS, running_app
from labeler import CHROMIUM, CHROMIUM_ARGS, KEYS, MEASURE, STAGE, Labeler, read_keyed_labels, sign_in_and_load

import annotations as store

pytestmark = pytest.mark.browser

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
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    # The captions are set in capitals by the style sheet, which innerText follows.
    assert f"majority vote · {round(expected.majority * expected.frames)} of {expected.frames} frames" in card.lower()
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
    # The click brings the inspector into view.
    page.wait_for_function("(() => { const r = document.querySelector('#inspector-heading').getBoundingClientRect();"
                           " return r.top >= 0 && r.top < window.innerHeight / 2; })()")
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
    """Press a key and wait until its answer is on screen (a new tick on the stage, the keys free again);
    returns the Label tab's status line (each key's result says what it did)."""
    before = page.evaluate(f"{STAGE}.dataset.tick")
    page.keyboard.press(key)
    page.wait_for_function(f"before => {STAGE}.dataset.tick !== before"
                           " && !document.querySelector('#label-workspace').classList.contains('sl-busy')", arg=before)
    return page.evaluate("() => { const m = document.querySelector('#label-message .sl-msg');"
                         " return m ? m.innerText : ''; }")


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
    page.wait_for_selector("#label-explain img")
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

    # r: the last label (sludge yes, layout other, set on queue[1]) on every frame from there to the current one.
    press(page, "ArrowRight")
    press(page, "ArrowRight")
    assert f"#{queue[3]} " in page.locator("[data-testid=label-facts]").inner_text()
    assert "sludge = yes, layout = other on 3 frames" in press(page, "r")
    assert events(app)[-6:] == ([(f, "sludge", "1", "alice", "range") for f in queue[1:4]]
                                + [(f, "layout", "other", "alice", "range") for f in queue[1:4]])


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


# ---------------------------------------------------------------- a labeler's day, 200 frames of it

LABEL_RUN = 200
# Clips of 16 sampled frames each: enough frames for the run, its undos and its range.
LABEL_CLIPS, CLIP_FRAMES = 13, 16
# One landscape clip stored last, in a collection of its own: the wide workspace and the collection filter.
LANDSCAPE = "landscape-footage"


def prefill_store(root: Path, clips: int, frames: int) -> None:
    """Synthetic clips (training.synthetic), each analyzed and stored by annotations.analyses.record_analysis."""
    from annotations.analyses import record_analysis
    from core.config import load_settings
    from core.engine import load_model
    from training import synthetic

    db = store.open_store(root / "store.db", root / "media")
    lm = load_model(load_settings({}).model)
    for k in range(clips):
        video, _ = synthetic.make_clip(7000 + k, num_frames=frames)
        path = synthetic.write_clip(root / "clips" / f"clip_{k:02d}.mp4", video)
        record_analysis(lm, db, path, num_frames=frames)
    video, _ = synthetic.make_clip(7900, num_frames=frames, size=(252, 448))
    path = synthetic.write_clip(root / "clips" / "landscape.mp4", video)
    record_analysis(lm, db, path, num_frames=frames, collection=LANDSCAPE)
    db.close()


@pytest.fixture(scope="module")
def labeling_app(tmp_path_factory):
    _need_browser()
    root = tmp_path_factory.mktemp("labeling-app")
    prefill_store(root, LABEL_CLIPS, CLIP_FRAMES)
    with running_app(root) as running:
        yield running


def test_a_landscape_collection_gets_the_wide_workspace(labeling_app, browser):
    """Filtered to one collection, the queue keeps to its video; its landscape frames get the wide workspace:
    the frame's column takes about half the row and the stage keeps the frame's shape, where the portrait
    stage would show the frame a third as wide as the row."""
    with sqlite3.connect(labeling_app.db_path) as db:
        landscape = {r[0] for r in db.execute("SELECT f.id FROM frames f JOIN videos v ON v.id = f.video_id"
                                               " WHERE v.collection = ?", [LANDSCAPE])}
    assert len(landscape) == CLIP_FRAMES
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    sign_in_and_load(page, labeling_app.url, strategy="random", collection=LANDSCAPE)
    shown = []
    for _ in range(3):
        shown.append(int(page.evaluate(f"{STAGE}.dataset.frame")))
        tick = page.evaluate(f"{STAGE}.dataset.tick")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"{STAGE}.dataset.tick !== {tick!r}")
    assert set(shown) <= landscape and len(set(shown)) == 3
    page.wait_for_function(f"{STAGE}.querySelector('img.sl-frame').naturalWidth > 0")
    stage = page.locator(f"#label-stage .sl-stage").bounding_box()
    row = page.locator("#label-main").bounding_box()
    assert "sl-wide" in page.evaluate(f"{STAGE}.className")
    assert stage["width"] > 0.45 * row["width"]  # a portrait stage's column: a third of the row
    assert stage["width"] / stage["height"] == pytest.approx(448 / 252, rel=0.03)
    page.wait_for_function(f"document.querySelector('#label-explain .sl-explain').dataset.frame"
                           f" === {STAGE}.dataset.frame"
                           " && document.querySelectorAll('#label-explain img').length === 2", timeout=SLOW_S)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#label-workspace").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "label-landscape-1440x900.png"))
    context.close()


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), 95))


def test_a_labeler_labels_200_frames_by_keyboard_alone(labeling_app, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    sign_in_and_load(page, labeling_app.url)
    page.evaluate(MEASURE, list(KEYS))
    page.wait_for_function("document.querySelector('#label-explain .sl-explain').dataset.frame !== ''",
                           timeout=120_000)
    # The workspace fills the screen: the frame, its heatmaps, the legend and the message box in view.
    for selector in ("#label-stage img.sl-frame", "#label-explain", "[data-testid=key-legend]", "#label-message",
                     "#key-range"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900, (selector, box)
    legend = page.locator("[data-testid=key-legend]").inner_text()
    assert "vertical = stacked top/bottom" in legend and "horizontal = side by side" in legend

    labeler = Labeler(page)
    plain = ("n", "1", "2", "3", "4", "Enter", "y2", "n")
    burst_done = undo_done = double_undo_done = range_done = note_done = False
    i = 0
    while len(labeler.intended) < LABEL_RUN:
        i += 1
        frame = labeler.on_screen()
        if not burst_done and i >= 10:
            # Three Enters at once: only the first acts, on the frame on screen; the page ignores the others.
            labeler.intended[frame] = labeler.model_answer()
            count = page.evaluate("window.__sl.results.length")
            page.evaluate("() => { for (let k = 0; k < 3; k++) document.dispatchEvent("
                          "new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})); }")
            page.wait_for_function("n => window.__sl.results.length > n && window.__sl.pending === null", arg=count)
            page.wait_for_function("!document.querySelector('#label-workspace').classList.contains('sl-busy')")
            labeler.timings.append(page.evaluate("window.__sl.results[window.__sl.results.length - 1]"))
            assert labeler.on_screen() != frame
            burst_done = True
            continue
        if not undo_done and i >= 20:
            # A wrong key, noticed on the next frame: u brings the frame back, then the right key.
            labeler.key("4")
            labeler.key("u")
            assert labeler.on_screen() == frame
            assert "Undone on frame" in page.locator("#label-message").inner_text()
            labeler.label("n")
            undo_done = True
            continue
        if not double_undo_done and i >= 30:
            # y then a layout, then u twice: both of your own writes on the frame are taken back, in order.
            labeler.key("y")
            labeler.key("3")
            labeler.key("u")
            assert labeler.on_screen() == frame
            labeler.key("u")
            assert labeler.on_screen() == frame and "sludge back to" in page.locator("#label-message").inner_text()
            labeler.label("1")
            double_undo_done = True
            continue
        if not note_done and i >= 50:
            # A note, then Esc: the keys work again at once, and the note is saved with the next label.
            page.click("#label-note textarea")
            page.keyboard.type("two feeds, one muted")
            page.keyboard.press("Escape")
            assert page.evaluate("document.activeElement === document.body")
            noted = labeler.label("n")
            note_done = True
            continue
        after = page.evaluate("() => { const t = Array.from("
                              "document.querySelectorAll('[data-testid=neighbours] figure'));"
                              " const c = t.findIndex(f => f.classList.contains('sl-current'));"
                              " return t.slice(c + 1).map(f => Number(f.dataset.frame)); }")
        if not range_done and i >= 40 and len(after) >= 3 and len(labeler.intended) <= LABEL_RUN - 4:
            # 2 on this frame, skip two frames, r on the third: the whole label (sludge and layout) on all four.
            labeler.label("2")
            labeler.key("ArrowRight")
            labeler.key("ArrowRight")
            assert labeler.on_screen() == after[2]
            labeler.key("r")
            assert "sludge = yes, layout = horizontal on 4 frames" in page.locator("#label-message").inner_text()
            for f in after[:3]:
                labeler.intended[f] = (True, "horizontal")
            labeler.key("ArrowRight")
            range_done = True
            continue
        labeler.label(plain[i % len(plain)])
    assert burst_done and undo_done and double_undo_done and range_done and note_done
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "label-after-200.png"))
    context.close()

    # The store holds exactly the intended labels: alice's events touch these frames and no other, and each
    # frame's current label is the one meant for it.
    touched, current = read_keyed_labels(labeling_app.db_path)
    with sqlite3.connect(labeling_app.db_path) as db:
        human = db.execute("SELECT count(DISTINCT frame_id) FROM label_events WHERE source = 'human'").fetchone()[0]
        notes = db.execute("SELECT frame_id, note FROM label_events WHERE note = 'two feeds, one muted'").fetchall()
    assert len(labeler.intended) == LABEL_RUN
    assert touched == set(labeler.intended) and human == LABEL_RUN
    assert current == labeler.intended
    assert notes == [(noted, "two feeds, one muted")]

    moved = [t for t in labeler.timings if t["frame"] and t["frame"] != t["from"]]
    to_frame = [t["frameAt"] - t["t0"] for t in moved]
    to_heatmap = [t["heatAt"] - t["t0"] for t in moved]
    lines = [
        f"keys: {len(labeler.timings)} ({len(moved)} brought a new frame), frames labelled: {LABEL_RUN}",
        f"median_key_to_next_frame_ms: {np.median(to_frame):.0f}",
        f"median_key_to_heatmap_ms: {np.median(to_heatmap):.0f}",
        f"p95_key_to_next_frame_ms: {p95(to_frame):.0f}",
        f"p95_key_to_heatmap_ms: {p95(to_heatmap):.0f}",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "labeling.txt").write_text("\n".join(lines) + "\n")


VIEWPORTS = ((1440, 900), (390, 844))


def test_screenshots_of_every_tab_at_desktop_and_phone_sizes(labeling_app, browser):
    """Each tab as a labeler sees it at 1440x900 and on a 390x844 phone (the screen, not the whole page)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(labeling_app.url)
    page.wait_for_selector("#upload")

    def both(name: str, prepare=None) -> None:
        for width, height in VIEWPORTS:
            page.set_viewport_size({"width": width, "height": height})
            if prepare:
                prepare()
            page.wait_for_timeout(700)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}x{height}.png"))
        page.set_viewport_size({"width": 1440, "height": 900})

    ARTIFACTS.mkdir(exist_ok=True)
    both("analyze-empty")
    upload_and_wait(page, labeling_app.examples_dir / "picture_in_picture.mp4", timeout_ms=SLOW_S)
    page.wait_for_function("document.querySelector('#heatmap img') && document.querySelector('#mask img')",
                           timeout=SLOW_S)
    page.wait_for_function("document.querySelector('#explanation').innerText.toLowerCase().includes('verdict')",
                           timeout=SLOW_S)
    # Gallery frames keep their shape: a portrait frame is not cropped to a square.
    fit = page.evaluate("getComputedStyle(document.querySelector('#frame-gallery .thumbnail-item img')).objectFit")
    assert fit == "contain"
    both("analyze", lambda: page.locator("#verdict-card").scroll_into_view_if_needed())
    both("analyze-inspector", lambda: page.locator("#inspector-heading").scroll_into_view_if_needed())
    # A budget typed into the ρ box applies on Enter.
    page.locator("#rho input[type=number]").fill("0.2")
    page.locator("#rho input[type=number]").press("Enter")
    page.wait_for_function("document.querySelector('#faithfulness').innerText.includes('set by you')",
                           timeout=SLOW_S)
    # An ordinary question gets an answer, or a plain word that the small model cannot answer it: never the
    # refusal meant for questions about who made what is shown.
    from core.vocabulary import REFUSAL

    page.locator("#ask-box textarea, #ask-box input").first.fill("What is in the top half?")
    page.locator("#ask-box textarea, #ask-box input").first.press("Enter")
    page.wait_for_function("document.querySelector('#answer').innerText.includes('A:')", timeout=SLOW_S)
    assert REFUSAL not in page.locator("#answer").inner_text()

    page.get_by_role("tab", name="Label").click()
    page.fill("#login-user :is(input, textarea)", "alice")
    page.fill("#login-password :is(input, textarea)", USERS["alice"][0])
    page.click("#login-button")
    page.wait_for_function("document.querySelector('#identity').innerText.includes('alice (labeler)')")
    page.click("#load-queue")
    page.wait_for_function(f"{STAGE} && {STAGE}.dataset.frame")
    page.wait_for_function("document.querySelector('#label-explain .sl-explain').dataset.frame !== ''",
                           timeout=SLOW_S)
    both("label", lambda: page.locator("#label-workspace").scroll_into_view_if_needed())
    # On a phone the key buttons sit in rows without overlapping.
    page.set_viewport_size({"width": 390, "height": 844})
    boxes = [page.locator(f"#{i}").bounding_box() for i in ("key-yes", "key-no", "key-layout-1", "key-layout-2",
                                                            "key-layout-3", "key-layout-4", "key-accept")]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            x, y = boxes[a], boxes[b]
            assert (x["x"] + x["width"] <= y["x"] + 0.5 or y["x"] + y["width"] <= x["x"] + 0.5
                    or x["y"] + x["height"] <= y["y"] + 0.5 or y["y"] + y["height"] <= x["y"] + 0.5), (a, b)
    page.set_viewport_size({"width": 1440, "height": 900})

    page.get_by_role("tab", name="Review").click()
    page.wait_for_function("document.querySelector('#metrics-table').innerText.includes('accuracy')")
    both("review", lambda: page.locator("#metrics-table").scroll_into_view_if_needed())
    page.get_by_role("tab", name="Export").click()
    page.click("#export-button")
    page.wait_for_selector("#export-zip a")
    both("export", lambda: page.locator("#export-summary").scroll_into_view_if_needed())
    context.close()
