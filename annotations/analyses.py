"""What the app does with an analysis besides showing it: store it, summarise it, score stored frames, export.

Each function is what one UI callback (or API endpoint) calls; they join the model library (core/) and the
annotation store. A model version is stored under its identity, computed once when it loads
(``lm.identity``: ``core.identity.ModelIdentity``).

    stored = record_analysis(lm, db, "clip.mp4", num_frames=16)
    stored.to_dict()["store"]        {'video_id': '9f86…', 'model_id': 'models/tiny-vqwen-qformer@3fa9…'}
    build_verdict_card(stored.to_dict())   {'headline': 'Sludge', 'tone': 'sludge', ...}
    open_stored_video(lm, db, stored.video_id)     the same analysis again, from the stored frames
    event = correct_as(db, settings.auth, "alice", "pw", frame_id=12, field="sludge", value=True, seen_revision=0)
    lm = pick_model(services.models, settings.auth, "data/checkpoints/other", "rita", "pw")  # a reviewer only
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import annotations as store
from annotations.accounts import AuthError, authenticate, register_identity, require_writer
from annotations.exports import ExportConfig
from core import vocabulary
from core.analyze import Analysis, analyze_video
from core.config import AuthConfig, VideoLimits, check_frame_count
from core.engine import FrameScore, LoadedModel, ask, decide_video, describe, explain_verdict, score_frames
from core.explain import ClipExplanation, FrameExplanation, explain_clip, explain_frames
from core.identity import ModelIdentity
from core.registry import ModelRegistry
from core.video import check_video_file
from core.video import SampledVideo, VideoMeta


@dataclass
class StoredAnalysis:
    """An analysis and where it lives in the store."""

    analysis: Analysis
    video_id: str
    frame_ids: list[int]
    model_id: str
    # Each frame's label revision when stored: what a correction names as the revision it saw.
    revisions: list[int]

    def to_dict(self) -> dict:
        """The CLI's JSON (``Analysis.to_dict``) plus each frame's store id and revision, and the video and
        model ids. The video's server-side ``path`` becomes its file ``name``: the path means nothing to a
        remote caller, and JSON clients such as gradio_client take any {"path": ...} object for a file."""
        data = self.analysis.to_dict()
        data["video"] = {"name": Path(data["video"].pop("path")).name, **data["video"]}
        for frame, frame_id, revision in zip(data["frames"], self.frame_ids, self.revisions):
            frame["frame_id"] = frame_id
            frame["revision"] = revision
        data["store"] = {"video_id": self.video_id, "model_id": self.model_id}
        return data


def require_identity(lm: LoadedModel) -> ModelIdentity:
    """The identity a loaded model's predictions are stored under; refuses a model without one.

    >>> require_identity(lm).id  # doctest: +SKIP
    'models/tiny-vqwen-qformer@3fa9c2d1e0b4'
    """
    if lm.identity is None:
        raise store.InvalidLabelError(
            f"model {lm.spec.label!r} has no identity (it was not loaded with core.engine.load_model), so its "
            "predictions cannot be stored")
    return lm.identity


def register_model_version(db, lm: LoadedModel, lineage: dict | None = None) -> str:
    """Register a loaded model under its identity (``lm.identity``); returns the model version id.

    >>> register_model_version(db, lm)  # doctest: +SKIP
    'models/tiny-vqwen-qformer@3fa9c2d1e0b4'
    """
    identity = require_identity(lm)
    return store.register_model(db, identity.id, identity.source, identity.revision, lineage)


def pick_model(models: ModelRegistry, auth: AuthConfig, key: str | None, user: str | None = None,
               password: str | None = None) -> LoadedModel:
    """The loaded model for a selector key, as the API's /analyze asks for it.

    Anyone may pick a key the registry lists (``models.choices()``; empty means the default). Any other
    folder or hub id loads only for a reviewer's account; for anyone else it is refused with AuthError
    before the key is looked up anywhere (no file is touched, nothing is fetched).

    >>> pick_model(services.models, auth, "models/tiny-vqwen-llava").identity.source  # doctest: +SKIP
    'models/tiny-vqwen-llava'
    """
    if models.offers(key):
        return models.get(key or None)
    shown = key if len(key) <= 80 else key[:80] + "…"
    if not user and not password:
        raise AuthError(f"{shown!r} is not one of the models this app offers ({', '.join(k for _, k in models.choices())}); "
                        "loading any other folder or hub id needs a reviewer's user and password.")
    identity = authenticate(auth, user, password)
    if not identity.can_review:
        raise AuthError(f"{identity.name} is a {identity.role}: loading a model that is not on the list "
                        f"({shown!r}) needs a reviewer.")
    return models.get(key, allow_unlisted=True)


def analyze_upload(models: ModelRegistry, db, auth: AuthConfig, path, num_frames, limits: VideoLimits = VideoLimits(),
                   model: str | None = None, user: str | None = None, password: str | None = None) -> StoredAnalysis:
    """An upload as the app takes it: the number of frames and the file are checked first (cheap, no model
    needed), then the model is picked (:func:`pick_model`: a key off the list needs a reviewer), then the
    analysis is recorded (:func:`record_analysis`).

    Raises ValueError (frames), core.video.VideoError (the file), AuthError or core.engine.ModelLoadError
    (the model); nothing is stored or loaded then.

    >>> analyze_upload(services.models, db, auth, "clip.mp4", 16).to_dict()["store"]["model_id"]  # doctest: +SKIP
    'models/tiny-vqwen-qformer@3fa9c2d1e0b4'
    """
    num_frames = check_frame_count(num_frames, limits)
    check_video_file(path, limits)
    lm = pick_model(models, auth, model, user, password)
    return record_analysis(lm, db, path, num_frames=num_frames, limits=limits)


def record_analysis(lm: LoadedModel, db, path, num_frames: int = 16, limits: VideoLimits = VideoLimits(),
                    name: str | None = None, collection: str = store.UPLOADS) -> StoredAnalysis:
    """Analyze a video and store its frames and this model version's predictions, all in one transaction.

    Raises core.video.VideoError (with a human message) for a file we cannot use, and ValueError for a
    number of frames outside 1..limits.max_sampled_frames; nothing is stored then.

    >>> record_analysis(lm, db, "clip.mp4", num_frames=8).to_dict()["verdict"]["label"]  # doctest: +SKIP
    True
    """
    num_frames = check_frame_count(num_frames, limits)
    analysis = analyze_video(lm, path, num_frames=num_frames, limits=limits)
    started = time.perf_counter()
    meta = analysis.video.meta
    identity = require_identity(lm)
    model_id = identity.id
    video_id, frame_ids = store.add_analyzed_video(
        db, path, name or Path(path).name,
        {"duration_s": meta.duration_s, "fps": meta.fps, "width": meta.width, "height": meta.height,
         "codec": meta.codec, "rotation": meta.rotation},
        analysis.video.frames, analysis.video.timestamps, analysis.video.indices,
        (identity.id, identity.source, identity.revision),
        [s.p_sludge for s in analysis.scores], [s.layout_scores for s in analysis.scores], collection=collection)
    revisions = {row["frame_id"]: row["revision"] for row in store.current_labels(db, frame_ids=frame_ids)}
    analysis.timings["store"] = time.perf_counter() - started
    return StoredAnalysis(analysis=analysis, video_id=video_id, frame_ids=frame_ids, model_id=model_id,
                          revisions=[revisions[f] for f in frame_ids])


def open_stored_video(lm: LoadedModel, db, video_id: str) -> StoredAnalysis:
    """A stored video's analysis, without uploading or decoding it again: its stored frames and this model
    version's stored predictions. Frames the version has not scored yet are scored from their stored pixels
    first, and those predictions are stored. The verdict is decided as for a fresh analysis, so a video
    analyzed and then opened again shows the same frames, scores and verdict.

    >>> open_stored_video(lm, db, "9f86d081884c7d65...").to_dict()["verdict"]["label"]  # doctest: +SKIP
    True
    """
    started = time.perf_counter()
    video = store.get_video(db, video_id)
    model_id = register_model_version(db, lm)
    rows = store.video_frames(db, video_id, model_id=model_id)
    if not rows:
        raise store.NotFoundError(f"video {video['name']!r} has no stored frames: analyze it to sample some")
    frames = np.stack([load_frame_image(db, row["frame_id"]) for row in rows])
    loaded = time.perf_counter()
    stored = {row["frame_id"]: row["prediction"] for row in rows}
    todo = [i for i, row in enumerate(rows) if stored.get(row["frame_id"]) is None]
    if todo:
        fresh = score_frames(lm, frames[todo])
        store.record_predictions(db, model_id, [rows[i]["frame_id"] for i in todo], [s.p_sludge for s in fresh],
                                 [s.layout_scores for s in fresh])
        for i, score in zip(todo, fresh):
            stored[rows[i]["frame_id"]] = {"p_sludge": score.p_sludge, "layout_scores": score.layout_scores}
    scored = time.perf_counter()
    threshold = lm.config.threshold
    scores = []
    for row in rows:
        prediction = stored[row["frame_id"]]
        p, layout_scores = prediction["p_sludge"], dict(prediction["layout_scores"])
        # As core.engine.summarise_logits decides a frame: ties go to the layout listed first.
        best = max(vocabulary.LAYOUTS, key=lambda name: layout_scores.get(name, 0.0))
        scores.append(FrameScore(p_sludge=p, label=p >= threshold, layout=best if p >= threshold else
                                 vocabulary.NO_LAYOUT, layout_scores=layout_scores))
    meta = video["meta"]
    duration, fps = video["duration_s"] or 0.0, video["fps"] or 0.0
    sampled = SampledVideo(
        frames=frames, timestamps=[row["time_s"] for row in rows], indices=[row["frame_index"] for row in rows],
        meta=VideoMeta(path=video["name"], size_bytes=video["size_bytes"] or 0, duration_s=duration, fps=fps,
                       width=video["width"] or frames.shape[2], height=video["height"] or frames.shape[1],
                       codec=str(meta.get("codec") or ""), rotation=int(meta.get("rotation") or 0),
                       frame_count=round(duration * fps), decoder="store"))
    timings = {"load": loaded - started, "score": scored - loaded, "total": time.perf_counter() - started}
    analysis = Analysis(video=sampled, scores=scores, verdict=decide_video(scores), model=lm.version, timings=timings)
    return StoredAnalysis(analysis=analysis, video_id=video_id, frame_ids=[row["frame_id"] for row in rows],
                          model_id=model_id, revisions=[row["revision"] for row in rows])


def build_verdict_card(result: dict) -> dict:
    """What the verdict card shows, from the analysis JSON: a headline, its tone and the figures under it.

    >>> card = build_verdict_card({"verdict": {"label": True, "majority": 0.75, "mean_p": 0.71, "frames": 16,
    ...                                  "layout": "vertical"}, "model": "tiny", "video": {"duration_s": 12.0},
    ...                      "timings_s": {"total": 1.5}})
    >>> card["headline"], card["votes"]
    ('Sludge', '12 of 16 frames')
    """
    v = result["verdict"]
    votes = round(v["majority"] * v["frames"])
    return {
        "headline": "Sludge" if v["label"] else "Not sludge",
        "tone": "sludge" if v["label"] else "clean",
        "votes": f"{votes} of {v['frames']} frames",
        "majority": v["majority"],
        "mean_p": v["mean_p"],
        "layout": v["layout"] if v["label"] else "none",
        "model": result.get("store", {}).get("model_id", result["model"]),
        "name": result["video"].get("name") or Path(result["video"].get("path", "")).name,
        "duration_s": result["video"]["duration_s"],
        "seconds": result.get("timings_s", {}).get("total"),
    }


def correct_as(db, auth: AuthConfig, user: str, password: str, frame_id: int, field: str, value, seen_revision: int,
               note: str = "") -> store.LabelEvent:
    """Correct one label as a local account, after checking its password and role (the API's write path).

    Raises annotations.accounts.AuthError before anything is written when the account or its role does not allow it,
    and the store's StaleRevisionError / InvalidLabelError / NotFoundError otherwise.

    >>> correct_as(db, auth, "alice", "pw", 12, "sludge", True, seen_revision=0).revision  # doctest: +SKIP
    1
    """
    identity = require_writer(authenticate(auth, user, password))
    register_identity(db, identity)
    return store.correct_label(db, frame_id, field, value, identity.name, seen_revision, note=note)


def load_frame_image(db, frame_id: int) -> np.ndarray:
    """A stored frame's pixels (H, W, 3) uint8.

    >>> load_frame_image(db, 12).shape  # doctest: +SKIP
    (720, 1280, 3)
    """
    from PIL import Image

    with Image.open(store.frame_image_path(db, int(frame_id))) as image:
        return np.asarray(image.convert("RGB"))


def score_stored_frames(lm: LoadedModel, db, frame_ids: list[int]) -> str:
    """Score stored frames with a model and record its predictions (e.g. a new checkpoint on the holdout).

    Frames this model version already scored are skipped. Returns the model version id.

    >>> score_stored_frames(lm, db, [1, 2, 3])  # doctest: +SKIP
    'data/checkpoints/lora-1@a1b2c3d4e5f6'
    """
    model_id = register_model_version(db, lm)
    have = store.frames_scored_by(db, model_id)
    todo = [int(f) for f in frame_ids if int(f) not in have]
    batch = lm.config.batch_size
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        frames = [load_frame_image(db, f) for f in chunk]
        scores = score_frames(lm, frames, batch_size=batch)
        store.record_predictions(db, model_id, chunk, [s.p_sludge for s in scores], [s.layout_scores for s in scores])
    return model_id


EXPORTERS = {
    "training": store.export_training_set,
    "imagefolder": store.export_imagefolder,
    "label-studio": store.export_label_studio,
}


def export_zip(db, kind: str, export_dir: str | Path, model_id: str | None = None,
               config: ExportConfig = ExportConfig()) -> tuple[dict, Path, Path]:
    """Export the labels in one of the store's formats and zip the folder; returns (manifest, folder, zip).

    ``config.threshold`` decides which model scores count as "sludge" where the export falls back on them.

    >>> manifest, folder, archive = export_zip(db, "training", "data/exports")  # doctest: +SKIP
    >>> archive.name  # doctest: +SKIP
    'training-ev12-0a1b2c3d4e5f6a7b.zip'
    """
    if kind not in EXPORTERS:
        raise store.InvalidLabelError(f"unknown export kind {kind!r}; expected one of {', '.join(EXPORTERS)}")
    export_dir = Path(export_dir)
    folder = export_dir / kind
    manifest = EXPORTERS[kind](db, folder, model_id=model_id, config=config)
    archive = shutil.make_archive(str(export_dir / f"{kind}-{manifest['snapshot_id']}"), "zip", root_dir=folder)
    return manifest, folder, Path(archive)


def explain_stored_frame(lm: LoadedModel, db, frame_id: int, question: str = vocabulary.CLASSIFY,
                         rho: float | None = None, method: str = "attention") -> tuple[np.ndarray, FrameExplanation]:
    """The slow tier on one stored frame: its pixels and its explanation (maps, mask, faithfulness).

    >>> frame, e = explain_stored_frame(lm, db, 12, rho=None)  # doctest: +SKIP
    >>> e.selection.auto, e.faithfulness.p_drop_top  # doctest: +SKIP
    (True, 0.41)
    """
    frame = load_frame_image(db, frame_id)
    [explanation] = explain_frames(lm, [frame], [0], question=question or vocabulary.CLASSIFY, method=method, rho=rho)
    return frame, explanation


def explain_stored_clip(lm: LoadedModel, db, frame_ids: list[int], rho: float | None = None,
                        question: str = vocabulary.CLASSIFY) -> ClipExplanation:
    """Clip-level token selection (frames x tokens) over stored frames, with per-frame faithfulness.

    >>> explain_stored_clip(lm, db, [1, 2, 3]).selection.frame_shares  # doctest: +SKIP
    array([0.5, 0.25, 0.25])
    """
    frames = [load_frame_image(db, f) for f in frame_ids]
    return explain_clip(lm, frames, question=question or vocabulary.CLASSIFY, rho=rho)


def describe_stored_frame(lm: LoadedModel, db, frame_id: int) -> dict:
    """The model's description of a stored frame and its coupled classify+explain answer.

    >>> describe_stored_frame(lm, db, 12)["explanation"]  # doctest: +SKIP
    'yes. Sludge: a game clip under a talking head.'
    """
    frame = load_frame_image(db, frame_id)
    return {"description": describe(lm, frame), "explanation": explain_verdict(lm, frame)}


def ask_stored_frame(lm: LoadedModel, db, frame_id: int, question: str) -> str:
    """The model's answer to a free question about a stored frame.

    >>> ask_stored_frame(lm, db, 12, "What is in the bottom half?")  # doctest: +SKIP
    'a runner game'
    """
    if not question or not question.strip():
        raise store.InvalidLabelError("Type a question about the frame first.")
    return ask(lm, load_frame_image(db, frame_id), question.strip())
