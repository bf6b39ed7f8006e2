"""A model version's one identity: named without server paths, hashed once at load, new when weights change."""

from __future__ import annotations

import json
import shutil

from core.config import EMBEDDED_BLIP2, REPO_ROOT, ModelSpec
from core.identity import hash_weights, identify_model, name_folder


def test_a_folder_in_the_repo_is_named_relative_to_it_and_by_its_weights():
    identity = identify_model(ModelSpec(str(EMBEDDED_BLIP2)))
    assert identity.source == "models/tiny-vqwen-qformer"
    assert identity.id == f"models/tiny-vqwen-qformer@{identity.revision}" and len(identity.revision) == 12
    assert identity.name == "tiny-vqwen-qformer" and identity.short == f"tiny-vqwen-qformer@{identity.revision[:8]}"
    assert str(REPO_ROOT) not in identity.id


def test_a_folder_elsewhere_is_named_by_its_own_name_and_a_retrained_one_is_a_new_version(tmp_path):
    copy = tmp_path / "server" / "secret" / "lora-7"
    shutil.copytree(EMBEDDED_BLIP2, copy)
    identity = identify_model(ModelSpec(str(copy)))
    assert identity.source == "lora-7" == name_folder(copy)
    assert "/" not in identity.id and "secret" not in identity.id
    assert identity.revision == hash_weights(EMBEDDED_BLIP2)      # same weights, same revision
    config = json.loads((copy / "config.json").read_text())
    config["sludgelens_note"] = "retrained"
    (copy / "config.json").write_text(json.dumps(config))
    assert identify_model(ModelSpec(str(copy))).revision != identity.revision


def test_records_beside_the_weights_are_not_the_version_but_the_chat_template_is(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(EMBEDDED_BLIP2, copy)
    before = hash_weights(copy)
    (copy / "real_footage.json").write_text(json.dumps({"figures": {"video_accuracy": 0.5}}))
    (copy / "training.json").write_text("{}")
    (copy / "README.md").write_text("a regenerated card\n")
    assert hash_weights(copy) == before  # re-measuring a checkpoint keeps its predictions current
    (copy / "chat_template.jinja").write_text((copy / "chat_template.jinja").read_text() + " ")
    assert hash_weights(copy) != before  # the prompt the model reads is part of what it predicts


def test_a_hub_model_is_its_id_and_the_revision_asked_for():
    assert identify_model(ModelSpec("alpharomercoma/vqwen3-4b")).id == "alpharomercoma/vqwen3-4b"
    pinned = identify_model(ModelSpec("alpharomercoma/vqwen3-4b", "v1"))
    assert (pinned.id, pinned.source, pinned.revision, pinned.name) == (
        "alpharomercoma/vqwen3-4b@v1", "alpharomercoma/vqwen3-4b", "v1", "alpharomercoma/vqwen3-4b")
