"""Bad input at every door: the command line, the API and the store refuse it clearly and change nothing.

One app runs for the module (``tests/app_process.py``), with the upload limit of the bad-input corpus
(``tests/bad_inputs.py``) and SSR asked for by the environment, the way a Space asks for it.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_process import REPO, USERS, running_app
from bad_inputs import SIZE_LIMIT_MB, TOO_BIG, encode, write_corpus
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import annotations as store
from core.config import EMBEDDED_LLAVA, default_model_id, load_settings

APP_ENV = {"SLUDGELENS_MAX_MB": str(SIZE_LIMIT_MB), "GRADIO_SSR_MODE": "true"}
TABLES = ("videos", "frames", "predictions", "models", "label_events")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("app"), APP_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def analyzed(client):
    return client.predict(handle_file(str(REPO / "examples" / "vertical_split.mp4")), 4, "", api_name="/analyze")


def counts(app) -> dict[str, int]:
    with sqlite3.connect(app.db_path) as db:
        return {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}


def new_log(app, start: int) -> str:
    return app.log_path.read_text(encoding="utf-8", errors="replace")[start:]


def log_size(app) -> int:
    return len(app.log_path.read_text(encoding="utf-8", errors="replace"))


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------ the corpus, CLI and API


def upload_raw(app, path: Path):
    """Send a file to the app's upload route as any HTTP client can, without gradio_client's own checks."""
    import httpx

    with open(path, "rb") as fh:
        return httpx.post(app.url + "gradio_api/upload", files={"files": (path.name, fh)}, timeout=60)


def check_cli_answer(case, done: subprocess.CompletedProcess) -> str | None:
    """What is wrong with the command line's answer for a case, or None."""
    if "Traceback" in done.stderr or "Traceback" in done.stdout:
        return f"a traceback:\n{done.stderr[-2000:]}"
    if done.returncode == 0:
        if case.expect == "error":
            return f"accepted (exit 0), expected an error matching {case.words!r}"
        result = json.loads(done.stdout)
        if not (result["verdict"]["frames"] == len(result["frames"]) >= 1):
            return f"an incomplete verdict: {result['verdict']}"
        return None
    lines = done.stderr.strip().splitlines()
    if case.expect == "ok":
        return f"refused (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"not one `error: ...` line on stderr: {done.stderr[-1000:]!r}"
    if not re.search(case.words, lines[0], re.IGNORECASE):
        return f"the message does not say {case.words!r}: {lines[0]}"
    return None


def test_every_bad_input_gets_a_clear_error_from_the_command_line(corpus):
    env = {"SLUDGELENS_MAX_MB": str(SIZE_LIMIT_MB)}
    # Every refusal, and two of the files that must succeed: each success pays for importing torch and a model
    # load, and the API test below runs every success case through the same analysis.
    cases = [c for c in corpus if c.expect != "ok"] + [c for c in corpus if c.expect == "ok"][:2]
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda c: run_cli("analyze", str(c.path), "--json", "--frames", "2", env=env),
                                cases))
    corpus = cases
    wrong = {case.name: problem for case, done in zip(corpus, answers)
             if (problem := check_cli_answer(case, done)) is not None}
    assert wrong == {}, "\n".join(f"{name!r}: {problem}" for name, problem in wrong.items())


def test_every_bad_input_gets_a_clear_error_from_the_api_and_the_store_is_unchanged(app, client, corpus):
    wrong = {}
    refused = 0
    start = log_size(app)
    for case in [c for c in corpus if c.upload]:
        before = counts(app)
        try:
            result = client.predict(handle_file(str(case.path)), 2, "", api_name="/analyze")
        except AppError as err:
            after = counts(app)
            refused += 1
            if case.expect == "ok":
                wrong[case.name] = f"refused: {err}"
            elif not re.search(case.words, str(err), re.IGNORECASE):
                wrong[case.name] = f"the message does not say {case.words!r}: {err}"
            elif after != before:
                wrong[case.name] = f"the store changed on a refusal: {before} -> {after}"
            continue
        except ValueError as err:
            # gradio_client refuses a file over the app's upload limit before sending it; the server refuses
            # it too when a caller sends it anyway.
            if case.words != TOO_BIG or "exceeds the maximum file size" not in str(err):
                wrong[case.name] = f"{type(err).__name__}: {err}"
            elif (answer := upload_raw(app, case.path)).status_code != 413:
                wrong[case.name] = f"the server took an upload over its limit: {answer.status_code} {answer.text}"
            elif counts(app) != before:
                wrong[case.name] = "the store changed on a refusal"
            continue
        except Exception as err:  # anything but a clear refusal from the app (a dropped connection, ...)
            wrong[case.name] = f"{type(err).__name__}: {err}"
            continue
        after = counts(app)
        if case.expect == "error":
            wrong[case.name] = f"accepted, expected an error matching {case.words!r}"
        elif not (result["verdict"]["frames"] == len(result["frames"]) >= 1):
            wrong[case.name] = f"an incomplete verdict: {result['verdict']}"
        elif after["predictions"] < before["predictions"] + (len(result["frames"]) if after["videos"] > before["videos"]
                                                            else 0):
            wrong[case.name] = f"the analysis was not stored: {before} -> {after}"
    assert wrong == {}, "\n".join(f"{name!r}: {problem}" for name, problem in wrong.items())
    # Each refusal is one line in the app's log, and none is a traceback.
    log = new_log(app, start)
    assert "Traceback" not in log
    assert len(re.findall(r"refused analyze: ", log)) == refused


def test_one_bad_upload_is_one_log_line_without_a_traceback(app, client, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video\n" * 50)
    start = log_size(app)
    with pytest.raises(AppError, match="text file, not a video"):
        client.predict(handle_file(str(bad)), 4, "", api_name="/analyze")
    lines = [line for line in new_log(app, start).splitlines() if line.strip()]
    assert len(lines) == 1 and "refused analyze: This is a text file, not a video" in lines[0], lines
    assert "(NotMediaError)" in lines[0]


def test_the_app_runs_without_server_side_rendering_even_when_the_environment_asks(app):
    # GRADIO_SSR_MODE=true is set for this app, as a Space sets it; launch_options turns SSR off regardless.
    from ui.layout import launch_options
    from ui.services import Services

    log = app.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Running on local URL" in log and "SSR" not in log and "Node" not in log
    settings = load_settings({})
    assert launch_options(Services(settings, None, None, []))["ssr_mode"] is False


# ------------------------------------------------------------------------------ frames and ids


@pytest.mark.parametrize("frames", ["-5", "0", "65", "500", "2.5", "abc", ""])
def test_the_command_line_refuses_a_frame_count_out_of_bounds(frames):
    done = run_cli("analyze", str(REPO / "examples" / "single_stream.mp4"), "--frames", frames)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --frames: the number of frames must be a whole number from 1 to 64" in done.stderr


def test_the_command_line_checks_the_file_before_it_loads_a_model(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    # A model that cannot load: had it been loaded first, the answer would be about the model (exit 3).
    done = run_cli("analyze", str(empty), "--model", str(tmp_path / "no-such-model"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: The file is empty (0 bytes). The upload may have failed; "
                                        "please try again."]


@pytest.mark.parametrize("frames", [-5, 0, 65, 500, 2.5, 1e30])
def test_the_api_refuses_a_frame_count_out_of_bounds(app, client, frames):
    before = counts(app)
    with pytest.raises(AppError, match="num_frames: the number of frames must be a whole number from 1 to 64"):
        client.predict(handle_file(str(REPO / "examples" / "single_stream.mp4")), frames, "", api_name="/analyze")
    assert counts(app) == before


@pytest.mark.parametrize("frame_id, message", [
    (2**70, "frame_id must be a whole number from 1 to 9223372036854775807"),
    (2**63, "frame_id must be a whole number from 1 to 9223372036854775807"),
    (-3, "frame_id must be a whole number"),
    (0, "frame_id must be a whole number"),
    (1.5, "frame_id must be a whole number"),
])
def test_the_api_refuses_an_id_sqlite_cannot_hold(app, client, analyzed, frame_id, message):
    before = counts(app)
    with pytest.raises(AppError, match=message) as err:
        client.predict(frame_id, "sludge", "yes", 0, "", "alice", USERS["alice"][0], api_name="/correct_label")
    assert "OverflowError" not in str(err.value)
    assert counts(app) == before


@pytest.mark.parametrize("field, value, note, what", [
    ("sludge", "yes", "top\x00bottom", "note contains the control character U\\+0000"),
    ("description", "a split\x00screen", "", "description contains the control character U\\+0000"),
    ("description", "bell\x07", "", "description contains the control character U\\+0007"),
    ("sludge", "yes", "escape \x1b[31m", "note contains the control character U\\+001B"),
])
def test_the_api_refuses_control_characters_in_text(app, client, analyzed, field, value, note, what):
    frame = analyzed["frames"][0]
    before = counts(app)
    with pytest.raises(AppError, match=what):
        client.predict(frame["frame_id"], field, value, frame["revision"], note, "alice", USERS["alice"][0],
                       api_name="/correct_label")
    assert counts(app) == before


def test_text_with_tabs_and_line_breaks_is_kept(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    video = store.add_video(db, b"clip", "clip.mp4")
    (frame_id,) = store.add_frames(db, video, np.zeros((1, 16, 16, 3), np.uint8), [0.0], [0])
    store.add_labeler(db, "ana")
    text = "two streams:\n\ttop: a game\r\n\tbottom: a face"
    assert store.correct_label(db, frame_id, "description", text, "ana", 0, note="ok\tthen").new_value == text
    for bad in (2**63, 0, -1, True, "7", float("nan")):
        with pytest.raises(store.InvalidLabelError, match="frame_id must be a whole number"):
            store.correct_label(db, bad, "sludge", True, "ana", 1)
    with pytest.raises(store.InvalidLabelError, match="event_id must be a whole number"):
        store.review_event(db, 2**64, "ana", True)
    with pytest.raises(store.InvalidLabelError, match="labeler name contains the control character"):
        store.add_labeler(db, "mal\x00lory")
    assert db["label_events"].count == 1


# ------------------------------------------------------------------------------ who may load what


def test_a_model_off_the_list_is_refused_to_anyone_but_a_reviewer(app, client, analyzed, tmp_path):
    clip = handle_file(str(REPO / "examples" / "single_stream.mp4"))
    before = counts(app)
    messages = []
    for key in ("/etc", "/definitely/not/here", "../../etc", "someone/any-hub-model"):
        with pytest.raises(AppError, match="is not one of the models this app offers") as err:
            client.predict(clip, 2, key, api_name="/analyze")
        messages.append(str(err.value).replace(repr(key), "KEY"))
        assert "Unrecognized" not in str(err.value)
    # A folder that exists and one that does not get the same answer: it tells nothing about the server.
    assert len(set(messages)) == 1
    with pytest.raises(AppError, match="alice is a labeler: loading a model that is not on the list"):
        client.predict(clip, 2, "/etc", "alice", USERS["alice"][0], api_name="/analyze")
    with pytest.raises(AppError, match="Wrong user name or password"):
        client.predict(clip, 2, "/etc", "rita", "not-her-password", api_name="/analyze")
    assert counts(app) == before


def test_a_reviewer_may_load_another_model_and_it_never_becomes_the_default(app, client, analyzed, tmp_path):
    hidden = tmp_path / "hidden-model"
    shutil.copytree(EMBEDDED_LLAVA, hidden)
    clip = handle_file(str(REPO / "examples" / "side_by_side.mp4"))
    result = client.predict(clip, 2, str(hidden), "rita", USERS["rita"][0], api_name="/analyze")
    assert result["store"]["model_id"].startswith("hidden-model@")
    # Metrics, and the next plain analysis, are about the configured model, not the newest in the store.
    default = default_model_id(load_settings({}))
    assert client.predict("", "current", api_name="/metrics")["model_id"] == default == analyzed["store"]["model_id"]
    again = client.predict(clip, 2, "", api_name="/analyze")
    assert again["store"]["model_id"] == default


def test_on_a_space_without_a_gpu_the_status_line_says_so_and_the_embedded_model_loads(tmp_path):
    from ui.format import format_model_status
    from ui.services import build_services

    settings = load_settings({"SPACE_ID": "me/sludgelens", "HF_HUB_OFFLINE": "1",
                              "SLUDGELENS_DB": str(tmp_path / "s.db"), "SLUDGELENS_MEDIA": str(tmp_path / "m")})
    services = build_services(settings)
    assert "Running the embedded model: no GPU here." in format_model_status(services)
    lm = services.models.get()
    assert lm.identity.source == "models/tiny-vqwen-qformer"
    status = format_model_status(services)
    assert status.startswith("Loaded: `tiny-vqwen-qformer@") and status.endswith("no GPU here.")
    assert services.default_model_id == lm.identity.id


# ------------------------------------------------------------------------------ a killed analysis


# Loads the model and records an analysis of each clip named on its command line, printing "ready" once the
# model is loaded and "stored <path>" after each commit. One fresh process per round, started by the test and
# killed by it: no fork of a process that has imported torch, and every wait on it has a deadline.
RECORDER = r"""
import os, sys
sys.path.insert(0, os.getcwd())
import annotations as store
from annotations.analyses import record_analysis
from core.config import VideoLimits, load_settings
from core.engine import load_model

db_path, media, *clips = sys.argv[1:]
db = store.open_store(db_path, media)
lm = load_model(load_settings().model)
print("ready", flush=True)
for clip in clips:
    record_analysis(lm, db, clip, num_frames=4, limits=VideoLimits(decoder="pyav"))
    print("stored", clip, flush=True)
print("done", flush=True)
"""


def start_recorder(db_path: Path, media: Path, clips: list[Path]) -> tuple[subprocess.Popen, queue.Queue]:
    """A recorder process over `clips`, and a queue of its stdout lines ("" once its stdout closes)."""
    recorder = subprocess.Popen([sys.executable, "-c", RECORDER, str(db_path), str(media), *map(str, clips)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in recorder.stdout] + [lines.put("")],
                     daemon=True).start()
    return recorder, lines


def read_line(lines: queue.Queue, waiting_for: str, timeout_s: float = 120.0) -> str:
    """The recorder's next line; a failure that names what was awaited when none comes within `timeout_s`."""
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        pytest.fail(f"the recorder printed nothing for {timeout_s:.0f} s while the test waited for {waiting_for}")


def test_a_killed_analysis_leaves_no_video_without_its_frames(tmp_path):
    rounds, per_round = 6, 6
    clips = [[encode(tmp_path / f"clip-{r}-{i}.mp4", frames=12, painter=lambda k, w, h, s=r * per_round + i: np.full(
        (h, w, 3), (s * 7 + k * 11) % 256, np.uint8)) for i in range(per_round)] for r in range(rounds)]
    db_path, media = tmp_path / "store.db", tmp_path / "media"
    store.open_store(db_path, media).close()
    rng = random.Random(11)
    stored, cut_short = set(), 0
    for paths in clips:
        recorder, lines = start_recorder(db_path, media, paths)
        try:
            assert read_line(lines, "the model to load") == "ready"
            # Kill it after k of its analyses are reported stored, k < per_round - 1, and a random moment into
            # the next one: counted in analyses, not seconds, so a fast machine cannot finish the round first.
            k, before = rng.randrange(per_round - 1), len(stored)
            while len(stored) - before < k:
                line = read_line(lines, f"analysis {len(stored) - before + 1} of {k}")
                assert line.startswith("stored "), f"the recorder ended early: {line!r}"
                stored.add(Path(line.removeprefix("stored ")).name)
            time.sleep(rng.uniform(0.0, 0.05))
            recorder.kill()
            cut_short += recorder.wait(timeout=60) == -signal.SIGKILL
            # What it reported stored before it died counts too.
            while (line := read_line(lines, "the killed recorder's stdout to close", 60.0)) != "":
                if line.startswith("stored "):
                    stored.add(Path(line.removeprefix("stored ")).name)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(timeout=60)
    assert cut_short >= 1, "no analysis was killed half-way: the test tested nothing"
    db = store.open_store(db_path, media)  # as after a restart: the killed writers' journal is recovered
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    videos = {row["name"]: row for row in db.query("SELECT v.id, v.name, (SELECT count(*) FROM frames f WHERE "
                                                    "f.video_id = v.id) AS frames FROM videos v")}
    # Every analysis the recorder reported stored is there, whole; no other video is there in part.
    assert stored <= set(videos) and len(videos) < rounds * per_round
    for name, row in videos.items():
        assert row["frames"] == 4, f"{name} has {row['frames']} frames"
        frame_ids = [r[0] for r in db.execute("SELECT id FROM frames WHERE video_id = ?", [row["id"]])]
        scored = db.execute(f"SELECT count(DISTINCT frame_id) FROM predictions WHERE frame_id IN "
                            f"({','.join('?' * len(frame_ids))})", frame_ids).fetchone()[0]
        assert scored == 4, f"{name}: {scored} of its 4 frames have a prediction"
        for frame_id in frame_ids:
            assert store.frame_image_path(db, frame_id).is_file()
    orphans = db.execute("SELECT count(*) FROM predictions WHERE frame_id NOT IN (SELECT id FROM frames)")
    assert orphans.fetchone()[0] == 0
