"""The app in a child process, driven through its named API endpoints with gradio_client, checked in its store."""

from __future__ import annotations

import ast
import re
import sqlite3

import pytest
from app_process import REPO, USERS, running_app
from core import vocabulary
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def analyzed(app, client):
    """One analysis of the vertical-split example clip, shared by the tests that read the store."""
    return client.predict(handle_file(str(app.examples_dir / "vertical_split.mp4")), 8, "", api_name="/analyze")


def query(app, sql, params=()):
    with sqlite3.connect(app.db_path) as db:
        return db.execute(sql, params).fetchall()


def test_named_endpoints_are_the_documented_ones(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/analyze", "/correct_label", "/metrics"}
    params = [p["parameter_name"] for p in endpoints["/correct_label"]["parameters"]]
    assert params == ["frame_id", "field", "value", "seen_revision", "note", "user", "password"]


def test_analyze_returns_the_cli_json_and_stores_predictions(app, analyzed):
    assert set(analyzed) == {"video", "model", "frames", "verdict", "timings_s", "store"}
    verdict = analyzed["verdict"]
    assert verdict["frames"] == len(analyzed["frames"]) == 8
    votes = sum(f["label"] for f in analyzed["frames"])
    assert verdict["majority"] == pytest.approx(votes / 8) and verdict["label"] == (votes / 8 >= 0.5)
    assert verdict["mean_p"] == pytest.approx(sum(f["p_sludge"] for f in analyzed["frames"]) / 8, abs=1e-4)
    # The embedded model sees the vertical-split example as sludge: in all sampled frames but at most the first
    # (the clip's opening frame scores 0.48) and in the verdict. It names the stack's layout wrongly (below).
    assert sum(f["label"] for f in analyzed["frames"]) >= 7 and verdict["label"] is True
    assert verdict["layout"] == max(vocabulary.LAYOUTS, key=[f["layout"] for f in analyzed["frames"]].count)
    times = [f["time_s"] for f in analyzed["frames"]]
    assert times == sorted(times) and times[-1] <= analyzed["video"]["duration_s"]
    # Every frame is in the store with this model version's prediction, exactly as returned.
    model_id = analyzed["store"]["model_id"]
    stored = dict(query(app, "SELECT frame_id, p_sludge FROM predictions WHERE model_id = ?", [model_id]))
    for frame in analyzed["frames"]:
        assert stored[frame["frame_id"]] == pytest.approx(frame["p_sludge"])
        assert frame["revision"] == 0
    video_id = analyzed["store"]["video_id"]
    assert query(app, "SELECT name FROM videos WHERE id = ?", [video_id]) == [("vertical_split.mp4",)]


def test_the_embedded_default_names_the_vertical_example_a_vertical_split(analyzed):
    # Steps 9-16 of its card named this stack picture-in-picture; step 17 names it vertical again.
    assert analyzed["verdict"]["layout"] == "vertical"


@pytest.mark.parametrize("content, message", [
    (b"these are notes, not a video\n" * 20, "not a video"),
    (b"", "empty"),
])
def test_a_bad_file_gets_a_clear_error_and_nothing_is_stored(app, client, tmp_path, content, message):
    videos_before = query(app, "SELECT count(*) FROM videos")
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(AppError, match=re.compile(message, re.IGNORECASE)):
        client.predict(handle_file(str(bad)), 8, "", api_name="/analyze")
    assert query(app, "SELECT count(*) FROM videos") == videos_before


def test_an_unreachable_hub_model_is_refused_with_a_reason(app, client):
    with pytest.raises(AppError, match="Cannot load alpharomercoma/vqwen3-4b"):
        client.predict(handle_file(str(app.examples_dir / "single_stream.mp4")), 4, "alpharomercoma/vqwen3-4b",
                       api_name="/analyze")


def test_a_correction_lands_in_the_store(app, client, analyzed):
    frame = analyzed["frames"][1]
    password, _ = USERS["alice"]
    event = client.predict(frame["frame_id"], "layout", "pip", frame["revision"], "small inset",
                           "alice", password, api_name="/correct_label")
    assert event["labeler"] == "alice" and event["new_value"] == "pip" and event["revision"] == 1
    rows = query(app, "SELECT field, new_value, labeler, note, revision, kind FROM label_events WHERE frame_id = ?",
                 [frame["frame_id"]])
    assert rows == [("layout", "pip", "alice", "small inset", 1, "set")]
    assert query(app, "SELECT layout, revision FROM current_labels WHERE frame_id = ?",
                 [frame["frame_id"]]) == [("pip", 1)]
    metrics = client.predict("", "current", api_name="/metrics")
    assert metrics["model_id"] == analyzed["store"]["model_id"] and metrics["predictions"] == 8
    # A layout correction alone gives the frame no sludge label, and no other test has labelled one yet:
    # nothing counts as labelled, so there is nothing to score.
    assert metrics["labelled"] == 0 and metrics["frames"]["n"] == 0 and metrics["confusion_layout"]["n"] == 0


@pytest.mark.parametrize("user, password, message", [
    ("", "", "Sign in first"),
    ("alice", "not-her-password", "Wrong user name or password"),
    ("mallory", "alice-pw", "Wrong user name or password"),
    ("vic", USERS["vic"][0], "viewer"),
])
def test_an_unauthenticated_or_viewer_write_is_refused_and_changes_nothing(app, client, analyzed, user, password,
                                                                          message):
    frame = analyzed["frames"][2]
    events_before = query(app, "SELECT count(*) FROM label_events")
    with pytest.raises(AppError, match=message):
        client.predict(frame["frame_id"], "sludge", "yes", 0, "", user, password, api_name="/correct_label")
    assert query(app, "SELECT count(*) FROM label_events") == events_before
    assert query(app, "SELECT revision FROM frames WHERE id = ?", [frame["frame_id"]]) == [(0,)]


def test_a_stale_revision_is_refused_and_the_first_write_stands(app, client, analyzed):
    frame = analyzed["frames"][3]
    client.predict(frame["frame_id"], "sludge", "yes", 0, "", "rita", USERS["rita"][0], api_name="/correct_label")
    with pytest.raises(AppError, match="StaleRevisionError.*revision 1.*revision 0"):
        client.predict(frame["frame_id"], "sludge", "no", 0, "", "alice", USERS["alice"][0],
                       api_name="/correct_label")
    assert query(app, "SELECT sludge, sludge_labeler FROM current_labels WHERE frame_id = ?",
                 [frame["frame_id"]]) == [(1, "rita")]


def test_the_readme_api_example_runs_as_written(app):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    code = (code.replace("http://127.0.0.1:7860/", app.url)
                .replace('"examples/', '"' + str(app.examples_dir) + "/")
                .replace('"alice-password"', repr(USERS["alice"][0])))
    assert str(REPO / "examples" / "vertical_split.mp4") in code and app.url in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["event"]["labeler"] == "alice" and scope["event"]["new_value"] == "vertical"
    # What the README says the call prints is what it returns (P(sludge) to two decimals).
    printed = re.search(r'print\(result\["verdict"\]\)  # (\{.*\})', code).group(1)
    expected = ast.literal_eval(printed)
    assert scope["result"]["verdict"] == {**expected, "mean_p": pytest.approx(expected["mean_p"], abs=0.01)}
