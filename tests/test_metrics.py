"""Metrics of a model version against the labels, checked by hand and against scikit-learn on random data."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from store_helpers import build_store, make_frames

import annotations as store
from core.vocabulary import LABEL_LAYOUTS


def test_hand_computed_case(tmp_path):
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    store.add_labeler(db, "ana")
    store.register_model(db, "m@1", "m", "1")
    rng = np.random.default_rng(0)
    truth = {"a": [True, True, False, False], "b": [False, False, False, True]}
    probs = {"a": [0.9, 0.2, 0.7, 0.1], "b": [0.6, 0.4, 0.1, 0.8]}
    for name in truth:
        video = store.add_video(db, name.encode(), name)
        ids = store.add_frames(db, video, make_frames(rng, 4), [0, 1, 2, 3], [0, 1, 2, 3])
        store.record_predictions(db, "m@1", ids, probs[name], [{"pip": 1.0}] * 4)
        for frame, value in zip(ids, truth[name]):
            store.correct_label(db, frame, "sludge", value, "ana", 0)
    m = store.compute_metrics(db, "m@1")
    # a: TP 1, FN 1, FP 1, TN 1;  b: FP 1, TN 2, TP 1  ->  TP 2, FP 2, FN 1, TN 3
    assert m["frames"] == {"n": 8, "accuracy": 0.625, "precision": 0.5, "recall": pytest.approx(2 / 3, abs=1e-6),
                           "f1": pytest.approx(4 / 7, abs=1e-6), "tp": 2, "fp": 2, "fn": 1, "tn": 3}
    assert m["confusion_sludge"]["matrix"] == [[3, 2], [1, 2]]
    # a: truth 2/4 -> sludge (ties go to sludge), predicted 2/4 -> sludge: right.
    # b: truth 1/4 -> not sludge, predicted 2/4 -> sludge: wrong.
    assert m["videos"] == {"n": 2, "majority_accuracy": 0.5}
    # Layout: no layout labels, so only the not-sludge frames count (truth "none").
    layouts = m["confusion_layout"]
    assert layouts["n"] == 5
    none_row = layouts["matrix"][layouts["labels"].index("none")]
    assert none_row[layouts["labels"].index("pip")] == 2 and none_row[layouts["labels"].index("none")] == 3
    assert m["per_layout"]["none"] == {"n": 5, "sludge_error_rate": 0.4, "layout_error_rate": 0.4}


def test_random_store_matches_scikit_learn(tmp_path):
    db, videos = build_store(tmp_path, videos=8, frames_per_video=10, seed=5)
    rnd = random.Random(11)
    p = dict(db.execute("SELECT frame_id, p_sludge FROM predictions").fetchall())
    model_layout = dict(db.execute("SELECT frame_id, layout FROM predictions").fetchall())
    truth, ana_layout, bob = {}, {}, {}
    for frames in videos.values():
        for f in frames:
            if rnd.random() < 0.85:
                value = rnd.random() < 0.5
                store.correct_label(db, f, "sludge", value, "ana", store.frame_revision(db, f))
                truth[f] = value
                if value and rnd.random() < 0.7:
                    layout = rnd.choice(LABEL_LAYOUTS[:4])
                    store.correct_label(db, f, "layout", layout, "ana", store.frame_revision(db, f))
                    ana_layout[f] = layout
                if rnd.random() < 0.5:
                    bob[f] = value if rnd.random() < 0.7 else not value
    ana = dict(truth)
    for f, value in bob.items():  # bob labels after ana, so his value becomes current
        store.correct_label(db, f, "sludge", value, "bob", store.frame_revision(db, f))
        truth[f] = value
    m = store.compute_metrics(db, "tiny@1", threshold=0.5)

    frames = sorted(truth)
    y_true = [truth[f] for f in frames]
    y_pred = [p[f] >= 0.5 for f in frames]
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    assert m["frames"]["n"] == len(frames)
    assert m["frames"]["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert (m["frames"]["precision"], m["frames"]["recall"], m["frames"]["f1"]) == pytest.approx(
        (precision, recall, f1), abs=1e-6)
    assert m["confusion_sludge"]["matrix"] == confusion_matrix(y_true, y_pred, labels=[False, True]).tolist()

    hits = []
    for frames_of_video in videos.values():
        labelled = [f for f in frames_of_video if f in truth]
        if labelled:
            t = sum(truth[f] for f in labelled) / len(labelled) >= 0.5
            q = sum(p[f] >= 0.5 for f in labelled) / len(labelled) >= 0.5
            hits.append(t == q)
    assert m["videos"] == {"n": len(hits), "majority_accuracy": pytest.approx(sum(hits) / len(hits), abs=1e-6)}

    # Layout truth: the labelled layout, else "none" for a frame labelled not sludge; unknown otherwise.
    lt = {f: ana_layout.get(f) or ("none" if not truth[f] else None) for f in frames}
    lt = {f: v for f, v in lt.items() if v is not None}
    lp = {f: (model_layout[f] if p[f] >= 0.5 else "none") for f in lt}
    expected = confusion_matrix([lt[f] for f in sorted(lt)], [lp[f] for f in sorted(lt)], labels=list(LABEL_LAYOUTS))
    assert m["confusion_layout"]["matrix"] == expected.tolist()

    shared = sorted(set(ana) & set(bob))
    kappa = {(k["a"], k["b"]): k for k in m["kappa"]["sludge"]}[("ana", "bob")]
    assert kappa["n"] == len(shared)
    assert kappa["kappa"] == pytest.approx(cohen_kappa_score([ana[f] for f in shared], [bob[f] for f in shared]),
                                           abs=1e-6)


def test_against_raw_ground_truth_and_labeler(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=4, seed=2)
    (va, fa), (vb, fb) = videos.items()
    truth = tmp_path / "truth.jsonl"
    truth.write_text(f'{{"video": "{va}", "sludge": true, "layout": "pip"}}\n'
                     f'{{"video": "{vb}", "sludge": "no"}}\n')
    store.import_ground_truth(db, truth)
    for f in fa:
        store.correct_label(db, f, "sludge", False, "ana", store.frame_revision(db, f))
    raw = store.compute_metrics(db, "tiny@1", against="raw-gt")
    current = store.compute_metrics(db, "tiny@1", against="current")
    p = dict(db.execute("SELECT frame_id, p_sludge FROM predictions").fetchall())
    expected_raw = sum((p[f] >= 0.5) == (f in fa) for f in fa + fb) / 8
    expected_current = sum((p[f] >= 0.5) is False for f in fa + fb) / 8
    assert raw["frames"]["accuracy"] == pytest.approx(expected_raw, abs=1e-6)
    assert current["frames"]["accuracy"] == pytest.approx(expected_current, abs=1e-6)
    assert store.compute_metrics(db, "tiny@1", against="ana")["frames"]["n"] == 4
    kappa = store.labeler_agreement(db)["sludge"]
    assert [(k["a"], k["b"], k["n"], k["agreement"]) for k in kappa] == [("ana", store.RAW_GT, 4, 0.0)]
    with pytest.raises(store.NotFoundError):
        store.compute_metrics(db, "tiny@1", against="nobody")
    with pytest.raises(store.NotFoundError):
        store.compute_metrics(db, "missing@0")


def test_table_shows_the_card_columns_and_escapes_names(tmp_path):
    db, videos = build_store(tmp_path, videos=2, frames_per_video=3,
                             labelers={"<b>x|y</b>": "labeler", "ana": "labeler"})
    for f in next(iter(videos.values())):
        store.correct_label(db, f, "sludge", True, "<b>x|y</b>", 0)
        store.correct_label(db, f, "sludge", True, "ana", 1)
    table = store.format_metrics_table(store.compute_metrics(db))
    for column in ("accuracy", "precision", "recall", "F1", "video accuracy"):
        assert column in table
    assert "&lt;b&gt;x\\|y&lt;/b&gt;" in table and "<b>" not in table


def test_a_collection_counts_its_own_frames_only(tmp_path):
    db, videos = build_store(tmp_path, videos=3, frames_per_video=4, seed=4)
    rng = np.random.default_rng(9)
    crawl = store.add_video(db, b"crawled", "crawled.mp4", collection="crawl-2024")
    crawled = store.add_frames(db, crawl, make_frames(rng, 5), [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    store.record_predictions(db, "tiny@1", crawled, [0.9, 0.8, 0.2, 0.1, 0.6], [{"pip": 1.0}] * 5)
    for f, value in zip(crawled, [True, False, False, True, True]):
        store.correct_label(db, f, "sludge", value, "ana", 0)
        store.correct_label(db, f, "sludge", not value, "bob", 1)
        store.correct_label(db, f, "sludge", value, "ana", 2)
    uploads = [f for fs in videos.values() for f in fs]
    for f in uploads:
        store.correct_label(db, f, "sludge", True, "ana", 0)

    crawl_only = store.compute_metrics(db, "tiny@1", collection="crawl-2024")
    # TP 0.9, 0.6; FP 0.8; TN 0.2; FN 0.1
    assert crawl_only["collection"] == "crawl-2024"
    assert crawl_only["frames"] == {"n": 5, "accuracy": 0.6, "precision": pytest.approx(2 / 3, abs=1e-6),
                                    "recall": pytest.approx(2 / 3, abs=1e-6), "f1": pytest.approx(2 / 3, abs=1e-6),
                                    "tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert crawl_only["predictions"] == 5 and crawl_only["labelled"] == 5 and crawl_only["videos"]["n"] == 1
    assert [(k["a"], k["b"], k["n"]) for k in crawl_only["kappa"]["sludge"]] == [("ana", "bob", 5)]
    everything = store.compute_metrics(db, "tiny@1")
    assert everything["frames"]["n"] == 5 + len(uploads) and everything["collection"] is None
    assert store.compute_metrics(db, "tiny@1", collection=store.UPLOADS)["frames"]["n"] == len(uploads)
    assert set(store.truth_labels(db, "bob", "crawl-2024")) == set(crawled)
    assert store.truth_labels(db, "bob", store.UPLOADS) == {}
    with pytest.raises(store.NotFoundError, match="no collection named 'crawl-2025'"):
        store.compute_metrics(db, "tiny@1", collection="crawl-2025")
