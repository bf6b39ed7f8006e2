"""The Blocks app as built for each way of signing in, and the named API endpoints it exposes."""

from __future__ import annotations

import gradio as gr
import pytest

from core.config import load_settings
from ui import TABS, build_demo
from ui.services import build_services


def build(tmp_path, **env):
    settings = load_settings({"SLUDGELENS_DB": str(tmp_path / "s.db"), "SLUDGELENS_MEDIA": str(tmp_path / "media"),
                              **env})
    services = build_services(settings)
    return services, build_demo(services)


def elem_ids(demo) -> set[str]:
    return {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}


@pytest.mark.parametrize("env, login_button, password_form", [
    ({"SPACE_ID": "me/sludgelens", "OAUTH_CLIENT_ID": "abc"}, True, False),
    ({"SLUDGELENS_USERS": "alice:pw:labeler"}, False, True),
    ({"SLUDGELENS_DEV_USER": "dev:labeler"}, False, False),
])
def test_the_label_tab_signs_in_the_configured_way(tmp_path, monkeypatch, env, login_button, password_form):
    if login_button:
        # Gradio itself reads these: on a Space (SYSTEM=spaces) the login button needs no local HF token.
        monkeypatch.setenv("SYSTEM", "spaces")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # gradio.oauth reads the Space's OAuth variables once, when it is imported.
        for name, value in (("OAUTH_CLIENT_ID", "abc"), ("OAUTH_CLIENT_SECRET", "secret"),
                            ("OAUTH_SCOPES", "openid profile"), ("OPENID_PROVIDER_URL", "https://huggingface.co")):
            monkeypatch.setattr(f"gradio.oauth.{name}", value)
    services, demo = build(tmp_path, **env)
    assert any(isinstance(b, gr.LoginButton) for b in demo.blocks.values()) == login_button
    assert ("login-user" in elem_ids(demo)) == password_form
    assert [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)] == list(TABS)
    # Every key of the Label tab has its button.
    keys = {"key-yes", "key-no", "key-accept", "key-undo", "key-range", "key-prev", "key-next"}
    assert keys | {f"key-layout-{i}" for i in range(1, 5)} <= elem_ids(demo)
    # The configured accounts are labelers in the store from the start.
    names = {r["name"]: r["role"] for r in services.db["labelers"].rows if r["kind"] == "human"}
    assert names == {"SLUDGELENS_USERS": {"alice": "labeler"}, "SLUDGELENS_DEV_USER": {"dev": "labeler"}}.get(
        next(iter(env)), {})


def test_only_the_documented_endpoints_are_public(tmp_path):
    _, demo = build(tmp_path)
    public = {d.api_name for d in demo.fns.values() if d.api_visibility == "public"}
    assert public == {"analyze", "correct_label", "metrics"}


@pytest.mark.parametrize("p_drop_top, p_drop_random, expected", [
    (0.40, 0.85, "5.5×"),                # a ratio where both removals move P
    (0.06, 0.106, "moves P by **0.046**"),  # random moves nothing: the two moves, not "307×"
    (0.104, 0.106, "does not hinge"),     # neither moves P
])
def test_faithfulness_text_states_a_ratio_only_where_it_means_something(p_drop_top, p_drop_random, expected):
    import numpy as np

    from core.explain import Faithfulness, Selection
    from ui.analyze import format_faithfulness

    class Explained:  # the two fields of a FrameExplanation that the text reads
        selection = Selection(mask=np.arange(256) < 23, rho=0.09, auto=True, kept=23)
        faithfulness = Faithfulness(p_full=0.106 if p_drop_random != 0.85 else 0.95, p_keep_top=0.085,
                                    p_drop_top=p_drop_top, p_drop_random=p_drop_random, p_keep_random=0.1)

    text = format_faithfulness(Explained())
    assert "keeps **23** of 256 tokens" in text
    assert expected in text


def test_the_label_tab_has_its_workspace_and_keys_name_the_frame_on_screen(tmp_path):
    from core.vocabulary import LAYOUT_MEANINGS
    from ui.label import KEY_HELP

    _, demo = build(tmp_path, SLUDGELENS_USERS="alice:pw:labeler")
    ids = elem_ids(demo)
    assert {"label-workspace", "label-stage", "label-context", "label-explain", "label-message", "label-legend",
            "label-on-screen"} <= ids
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    on_screen = by_id["label-on-screen"]._id
    for key in ("key-yes", "key-no", "key-accept", "key-undo", "key-range", "key-next"):
        (event,) = [d for d in demo.fns.values() if any(t[0] == by_id[key]._id for t in d.targets)]
        # Every key carries the frame that was on screen when it was pressed.
        assert on_screen in [c._id for c in event.inputs]
    for name in ("vertical", "horizontal", "pip", "other"):
        assert f"<b>{name}</b> = {LAYOUT_MEANINGS[name]}" in KEY_HELP
    assert "stacked top/bottom" in KEY_HELP and "side by side" in KEY_HELP


def test_the_analyze_and_export_tabs_explain_their_controls(tmp_path):
    _, demo = build(tmp_path)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["frame-gallery"].object_fit == "contain"
    assert "ρ" in by_id["rho"].info and "fast tier" in next(
        b.info for b in demo.blocks.values() if isinstance(b, gr.Slider) and "Frames to sample" in (b.label or ""))
    assert "question-aware" in by_id["heatmap-view"].info
    assert "linear-gradient" in by_id["heatmap-scale"].value
    # Pseudo-labels only when asked for.
    assert by_id["export-pseudo"].value is False
