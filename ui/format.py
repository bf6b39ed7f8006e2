"""HTML and Markdown the tabs show: the verdict card, frame facts, messages. Every dynamic string is escaped."""

from __future__ import annotations

import html
import urllib.parse

import numpy as np
from PIL import Image

from core.render import colour_scale
from core.video import COMMON_FORMATS, OLDER_FORMATS
from ui.figures import LAYOUT_COLOURS


def esc(value) -> str:
    return html.escape(str(value))


def format_limits(limits) -> str:
    """What an upload may be, shown above the upload box.

    >>> from core.config import VideoLimits
    >>> format_limits(VideoLimits())
    'mp4 · mov · webm · mkv · avi (or ogv · mpg · wmv · flv · 3gp · mts) — up to 200 MB and 10 min'
    """
    minutes = limits.max_duration_s / 60
    length = f"{minutes:g} min" if minutes >= 1 else f"{limits.max_duration_s:g} s"
    return (f"{' · '.join(COMMON_FORMATS)} (or {' · '.join(OLDER_FORMATS)}) — up to "
            f"{limits.max_bytes / 2**20:g} MB and {length}")


def format_layout_chip(layout: str) -> str:
    colour = LAYOUT_COLOURS.get(layout, "#7f8c8d")
    return f'<span class="sl-chip" style="--chip:{colour}">{esc(layout)}</span>'


def format_verdict(card: dict | None) -> str:
    """The verdict card (``annotations.analyses.build_verdict_card``), or the empty state before any analysis."""
    if card is None:
        return ('<div class="sl-card sl-empty"><div class="sl-headline">No video yet</div>'
                "<div class=\"sl-sub\">Upload a clip or click an example below: the verdict appears here, "
                "with a timeline of every sampled frame.</div></div>")
    seconds = f" in {card['seconds']:.1f} s" if card.get("seconds") is not None else ""
    return (
        f'<div class="sl-card sl-{esc(card["tone"])}" data-testid="verdict">'
        f'<div class="sl-headline">{esc(card["headline"])}</div>'
        '<div class="sl-figures">'
        f'<div><span class="sl-num">{card["majority"]:.0%}</span><span class="sl-cap">majority vote · '
        f'{esc(card["votes"])}</span></div>'
        f'<div><span class="sl-num">{card["mean_p"]:.2f}</span><span class="sl-cap">mean P(sludge)</span></div>'
        f'<div><span class="sl-num">{format_layout_chip(card["layout"])}</span>'
        '<span class="sl-cap">dominant layout</span></div>'
        "</div>"
        f'<div class="sl-sub"><b>{esc(card["name"])}</b> · {card["duration_s"]:.1f} s video · model '
        f'<code>{esc(card["model"])}</code>{seconds}</div>'
        "</div>"
    )


def format_frame_heading(frame: dict, total: int) -> str:
    """"Frame 3 of 16 · 1.25 s · P(sludge) 0.91 · pip" for the inspector."""
    return (f"**Frame {frame['index'] + 1} of {total}** · {frame['time_s']:.2f} s · "
            f"P(sludge) **{frame['p_sludge']:.2f}** · layout **{frame['layout']}**")


def make_thumbnail(frame: np.ndarray, max_side: int = 320) -> Image.Image:
    """A small copy of a frame for the gallery (full frames stay in the store).

    >>> make_thumbnail(np.zeros((720, 1280, 3), np.uint8)).size
    (320, 180)
    """
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    return image


def format_message(text: str, kind: str = "info") -> str:
    """A status line: kind is info, ok, warn or error."""
    if not text:
        return ""
    return f'<div class="sl-msg sl-msg-{esc(kind)}">{esc(text)}</div>'


def format_label_facts(item: dict | None, threshold: float) -> str:
    """The facts beside the frame in the Label tab: why it is queued, the model's answer, the current labels."""
    if item is None:
        return ('<div class="sl-facts sl-empty">No frame loaded. Pick a strategy and press <b>Load queue</b>. '
                "The queue fills from stored videos: analyze one on the Analyze tab, or ingest a collection "
                "(<code>python -m annotations ingest FOLDER</code>), if it stays empty.</div>")
    p = item.get("p_sludge")
    if p is None:
        model = "no prediction"
    else:
        verdict = "sludge" if p >= threshold else "not sludge"
        layout = item.get("model_layout") if p >= threshold else "none"
        model = f"{verdict} · P {p:.2f} · {format_layout_chip(layout or 'none')}"

    def shown(value):
        if value is None:
            return '<span class="sl-unset">not set</span>'
        if isinstance(value, bool):
            return "yes" if value else "no"
        return format_layout_chip(value) if value in LAYOUT_COLOURS else esc(value)

    rows = [
        ("frame", f'#{esc(item["frame_id"])} · index {esc(item["frame_index"])} · {item["time_s"]:.2f} s · '
                  f'revision {esc(item["revision"])}'),
        ("queued because", esc(item.get("reason", ""))),
        ("model", model),
        ("sludge", shown(item.get("sludge"))),
        ("layout", shown(item.get("layout"))),
    ]
    body = "".join(f'<tr><th class="sl-cap">{name}</th><td>{value}</td></tr>' for name, value in rows)
    return f'<table class="sl-facts" data-testid="label-facts">{body}</table>'


def format_conflict(pending) -> str:
    """The stale-revision box: what was refused, why, and that it is kept for a retry."""
    if pending is None:
        return ""
    return (
        '<div class="sl-msg sl-msg-error" data-testid="conflict"><b>Conflict: not saved.</b> '
        f"Someone changed this frame after you loaded it (the labels above are theirs now), so "
        f"{esc(pending.describe())} was refused and nothing was written. Your change is kept: press "
        "<b>Retry my change</b> to apply it on top of theirs, or <b>Drop it</b> to keep theirs."
        f"<div class=\"sl-detail\">{esc(pending.reason)}</div></div>"
    )


def format_model_status(services, error: str | None = None) -> str:
    """One line under the model selector: what is loaded, or why the choice could not be loaded."""
    current = services.models.current
    if error:
        return f"⚠️ {error}"
    # Why the default is not the model a Space would serve (no GPU, no hub), while that default is in use.
    on_default = current is None or current.spec == services.models.settings.model
    note = f" · ⚠️ {services.models.note}" if services.models.note and on_default else ""
    if current is None:
        return f"Loads on first use (a few seconds for the embedded model).{note}"
    return f"Loaded: `{current.identity.short}` ({current.family.name} on {current.device.type}){note}"


def format_metrics(metrics: dict) -> str:
    """The vqwen card's headline table and the labelers' agreement (the confusion matrices are plotted)."""
    def pct(x):
        return "–" if x is None else f"{x:.1%}"

    f, v = metrics["frames"], metrics["videos"]
    lines = [
        f"**{esc(metrics['model_id'])}** against **{esc(metrics['against'])}** labels "
        f"(threshold {metrics['threshold']:g}; {metrics['labelled']} labelled frames, "
        f"{metrics['predictions']} predictions)", "",
        "| frames | accuracy | precision | recall | F1 | videos | video accuracy (majority) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {f['n']} | {pct(f['accuracy'])} | {pct(f['precision'])} | {pct(f['recall'])} | {pct(f['f1'])} "
        f"| {v['n']} | {pct(v['majority_accuracy'])} |",
    ]
    kappas = [(field, k) for field in ("sludge", "layout") for k in metrics.get("kappa", {}).get(field, [])]
    lines += ["", "**Agreement between labelers** (Cohen's κ on frames both labelled)", ""]
    if kappas:
        lines += ["| field | labeler | labeler | frames | agreement | κ |", "|---|---|---|---:|---:|---:|"]
        for field, k in kappas:
            kappa = "–" if k["kappa"] is None else f"{k['kappa']:.3f}"
            lines.append(f"| {field} | {esc(k['a'])} | {esc(k['b'])} | {k['n']} | {k['agreement']:.0%} | {kappa} |")
    else:
        lines.append("No frame has been labelled by two labelers (or a labeler and imported ground truth) yet.")
    return "\n".join(lines)


# ---------------------------------------------------------------- the Label tab's screen


def file_url(path) -> str:
    """The URL gradio serves a file of an allowed folder at, relative to the page (so a proxy prefix holds).

    >>> file_url("/data/media/ab/c d.png")
    'gradio_api/file=/data/media/ab/c%20d.png'
    """
    return "gradio_api/file=" + urllib.parse.quote(str(path))


# The layouts in the few letters a thumbnail's chip has room for.
SHORT_LAYOUTS = {"vertical": "vert", "horizontal": "horiz", "pip": "pip", "other": "other"}


def show_label_value(sludge, layout) -> str:
    """A frame's label in a word or two: "pip", "no", "yes" (sludge, no layout yet) or "–" (unlabelled).

    >>> show_label_value(True, "pip"), show_label_value(False, "none"), show_label_value(True, None)
    ('pip', 'no', 'yes')
    >>> show_label_value(None, None)
    '–'
    """
    if sludge is None:
        return "–"
    if not sludge:
        return "no"
    return layout if layout and layout != "none" else "yes"


def format_label_stage(item: dict | None, tick: int, upcoming: list[dict] = (), picture: str | None = None) -> str:
    """The frame on screen, as large as the screen allows, with the cue shown while the next one loads.

    ``data-frame`` names the frame on screen and ``data-tick`` grows with every key handled: the page's
    script waits for a new tick (and the image) before it takes the next key. ``picture`` is the frame as a
    data URL when one was prepared ahead (else the stored file is shown); the upcoming frames' files are
    fetched hidden, so the next frame shows without waiting for the network.

    >>> 'data-frame=""' in format_label_stage(None, 3)
    True
    >>> "sl-wide" in format_label_stage({"frame_id": 1, "image": "/m/a.png", "width": 1280, "height": 720}, 1)
    True
    """
    preload = "".join(f'<img class="sl-preload" alt="" src="{esc(file_url(u["image"]))}">' for u in upcoming)
    if item is None:
        return (f'<div class="sl-stage sl-stage-empty" data-frame="" data-tick="{tick}">'
                '<div class="sl-stage-note">No frame on screen. Pick a strategy and press <b>Load queue</b>.</div>'
                f"{preload}</div>")
    width, height = item.get("width"), item.get("height")
    # A landscape frame gets the wide workspace (app.css): in the portrait stage it would fill a third of it.
    wide = f' sl-wide" style="--sl-aspect: {int(width)} / {int(height)}' if width and height and width > height else ""
    return (
        f'<div class="sl-stage{wide}" data-frame="{esc(item["frame_id"])}" data-tick="{tick}">'
        f'<img class="sl-frame" alt="frame {esc(item["frame_id"])}" src="{esc(picture or file_url(item["image"]))}">'
        '<div class="sl-cue">loading the next frame… keys wait</div>'
        f"{preload}</div>"
    )


def format_label_context(video_name: str, neighbours: list[dict], item: dict | None) -> str:
    """The video's name and a strip of its sampled frames around the current one, each with its label.

    >>> "clip.mp4" in format_label_context("clip.mp4", [], {"frame_index": 3, "time_s": 0.5})
    True
    """
    if item is None:
        return '<div class="sl-context sl-empty"></div>'
    cells = []
    times = format_strip_times([f["time_s"] for f in neighbours])
    for f, time_text in zip(neighbours, times):
        value = show_label_value(f["sludge"], f["layout"])
        # A layout in its colour; "no" as a single stream; "yes" (no layout yet) dark grey; unlabelled light.
        colour = {"no": LAYOUT_COLOURS["none"], "yes": "#455a64"}.get(value, LAYOUT_COLOURS.get(value, "#9aa5ad"))
        unset = " sl-unset-chip" if value == "–" else ""
        cells.append(
            f'<figure class="sl-thumb{" sl-current" if f["current"] else ""}" data-frame="{esc(f["frame_id"])}"'
            f' data-label="{esc(value)}" title="frame {esc(f["frame_id"])}: {esc(value)}">'
            f'<img alt="" src="{esc(file_url(f["image"]))}">'
            f'<figcaption><span class="sl-chip{unset}" style="--chip:{colour}">{esc(SHORT_LAYOUTS.get(value, value))}'
            f'</span><span class="sl-t">{time_text}s</span></figcaption></figure>')
    return (
        '<div class="sl-context">'
        f'<div class="sl-video"><span class="sl-cap">video</span> <b>{esc(video_name)}</b> · frame index '
        f'{esc(item["frame_index"])} at {item["time_s"]:.2f} s</div>'
        f'<div class="sl-strip" data-testid="neighbours">{"".join(cells)}</div></div>'
    )


def format_strip_times(times: list[float]) -> list[str]:
    """Times for the neighbour strip: one decimal, or two or three where frames lie closer together than
    that (a clip of a second and a half has its samples under 0.1 s apart), so no two read alike.

    >>> format_strip_times([0.3, 0.4, 0.5])
    ['0.3', '0.4', '0.5']
    >>> format_strip_times([0.85, 0.95, 1.0, 1.05])
    ['0.85', '0.95', '1.00', '1.05']
    """
    distinct = sorted(set(times))
    gap = min((b - a for a, b in zip(distinct, distinct[1:])), default=1.0)
    decimals = 1 if gap >= 0.1 - 1e-9 else 2 if gap >= 0.01 - 1e-9 else 3
    return [f"{t:.{decimals}f}" for t in times]


def format_colour_scale(label: str = "attention, share of this frame's peak") -> str:
    """The heatmaps' colour key (``core.render.colour_scale``) as a CSS gradient bar with its ticks.

    >>> "linear-gradient" in format_colour_scale()
    True
    """
    scale = colour_scale()
    gradient = ", ".join(f"{colour} {position:.0%}" for position, colour in scale["stops"])
    ticks = "".join(f'<span style="left:{position:.0%}">{esc(text)}</span>' for position, text in scale["ticks"])
    return (f'<div class="sl-scale" data-testid="colour-scale"><div class="sl-scale-bar" '
            f'style="background: linear-gradient(90deg, {gradient})"></div><div class="sl-scale-ticks">{ticks}</div>'
            f'<div class="sl-scale-label">{esc(label)}</div></div>')


MASK_KEY = ('<div class="sl-mask-key">token mask: <span class="sl-swatch sl-kept"></span>kept tokens (as the frame) '
            '<span class="sl-swatch sl-dropped"></span>dropped <span class="sl-swatch sl-edge"></span>edge</div>')


def format_label_explain(frame_id: int | None, pictures: dict | None, note: str = "") -> str:
    """The current frame's question-aware heatmap and token mask side by side, with captions and the colour
    key below the pictures (nothing is drawn over them: picture-in-picture insets sit in the corners).

    ``pictures`` holds image URLs (``{"heatmap": ..., "mask": ...}``); None shows the computing state.
    ``data-frame`` names the frame the pictures belong to ("" while they are computed).

    >>> 'data-frame=""' in format_label_explain(7, None)
    True
    """
    ready = pictures is not None
    def panel(key: str, caption: str) -> str:
        body = (f'<img alt="{esc(caption)}" src="{esc(pictures[key])}">' if ready
                else f'<div class="sl-computing">{esc(note or "computing…")}</div>')
        return f'<figure class="sl-explain-pic">{body}<figcaption>{esc(caption)}</figcaption></figure>'

    marker = esc(frame_id) if ready and frame_id is not None else ""
    return (
        f'<div class="sl-explain" data-frame="{marker}">'
        '<div class="sl-explain-pics">'
        + panel("heatmap", "heatmap: where the model looks to answer “is this sludge?”")
        + panel("mask", "token mask (auto budget): what the answer keeps")
        + "</div>" + format_colour_scale() + MASK_KEY + "</div>"
    )


def format_label_progress(progress: dict, unlabeled: int | None, strategy: str) -> str:
    """The counter: frames you labelled (undone ones drop out), where you are, and what the store still holds.

    >>> format_label_progress({"done": 3, "queued": 20, "position": 4}, 97, "uncertain")
    '<div class="sl-progress"><b>3</b> labelled by you · frame 4 of 20 fetched by <i>uncertain</i> · 97 frames in the store without a label</div>'
    """
    text = (f"<b>{progress['done']}</b> labelled by you · frame {progress['position']} of {progress['queued']} "
            f"fetched by <i>{esc(strategy)}</i>")
    if unlabeled is not None:
        text += f" · {unlabeled} frames in the store without a label"
    return f'<div class="sl-progress">{text}</div>'


# ---------------------------------------------------------------- the Analyze tab's inspector


def format_time_label(position: int, time_s: float) -> str:
    """A sampled frame's label: its number in the clip and its time, so two frames never share one.

    >>> format_time_label(2, 0.25), format_time_label(3, 0.2499)
    ('#3 · 0.25 s', '#4 · 0.25 s')
    """
    return f"#{position + 1} · {time_s:.2f} s"


# Words the generated descriptions and explanations use for each layout; a single stream's words first, as
# a distractor's description ("... a corner inset showing a zoomed-in part of the same scene") has both.
LAYOUT_WORDS = (
    ("none", ("single stream", "single scene", "one full view", "filling the frame", "fills the frame alone",
              "same scene", "one stream", "not sludge")),
    ("vertical", ("stacked", "top and bottom", "on top", "split horizontally", "upper part")),
    ("horizontal", ("side by side", "side-by-side", "left and right", "on the left", "at left",
                    "split vertically")),
    ("pip", ("inset", "picture in picture")),
    ("other", ("collage", "tiled", "tiles")),
)


def read_layout_claim(text: str | None) -> str | None:
    """The layout a generated sentence speaks of ("none" for one stream), or None when it names none.

    >>> read_layout_claim("yes. Sludge: a second, unrelated stream is inset in the top right corner.")
    'pip'
    >>> read_layout_claim("A single stream showing a colour gradient."), read_layout_claim("a cat")
    ('none', None)
    """
    lowered = (text or "").lower()
    if lowered.startswith(("no.", "no,")):
        return "none"
    for layout, words in LAYOUT_WORDS:
        if any(word in lowered for word in words):
            return layout
    return None


def agrees_with_verdict(text: str | None, sludge: bool, layout: str) -> bool:
    """Whether a generated sentence says what the frame's scores say: sludge or not, and the same layout.

    A sentence that names no layout agrees when its yes/no does (an explanation's "yes." / "no."), or when
    it has none (it says nothing either way).

    >>> agrees_with_verdict("yes. Sludge: inset in the bottom right corner.", True, "pip")
    True
    >>> agrees_with_verdict("A single stream showing a colour gradient.", True, "pip")
    False
    >>> agrees_with_verdict("yes. Sludge: two streams stacked top and bottom.", False, "none")
    False
    """
    claim = read_layout_claim(text)
    lowered = (text or "").strip().lower()
    if claim is None:
        if lowered.startswith("yes"):
            return sludge
        if lowered.startswith("no"):
            return not sludge
        return True  # it says nothing either way
    if lowered.startswith("yes") and not sludge:
        return False
    return claim == ("none" if not sludge else layout)


def format_model_words(frame: dict, description: str | None, explanation: str | None,
                       sentences: dict[str, str]) -> tuple[str, str]:
    """The inspector's text for one frame, as (description HTML, explanation HTML), never contradicting itself.

    The verdict comes from the frame's scores (the fast tier): its sentence is derived from sludge + layout
    (``sentences``, e.g. annotations.exports.EXPLANATIONS). The model's generated description and
    explanation are shown, marked as generated, only where they say the same; otherwise the page says that
    the generated text disagreed and leaves it out.

    >>> frame = {"label": True, "layout": "pip", "p_sludge": 0.83}
    >>> d, e = format_model_words(frame, "A single stream of a cat.", "yes. Sludge: an inset.", {"pip": "Inset."})
    >>> "disagrees" in d, "an inset" in e
    (True, True)
    """
    sludge = bool(frame["label"])
    layout = frame["layout"] if sludge else "none"
    verdict = (f'<div class="sl-cap">verdict of the scores</div><b>{"Sludge" if sludge else "Not sludge"}</b>'
               f" · P(sludge) {frame['p_sludge']:.2f}"
               + (f" · {format_layout_chip(layout)}" if sludge else "")
               + f"<div>{esc(sentences.get(layout, ''))}</div>")

    def generated(text: str | None, what: str) -> str:
        if not text:
            return f'<div class="sl-cap">model\'s {what} (generated)</div><i>none</i>'
        if agrees_with_verdict(text, sludge, layout):
            return (f'<div class="sl-cap">model\'s {what} (generated text, may be wrong)</div>'
                    f'<div class="sl-generated">{esc(text)}</div>')
        return (f'<div class="sl-cap">model\'s {what} (generated text)</div><div class="sl-generated sl-unset">'
                f"The generated {what} disagrees with the scores for this frame, so it is not shown: the small "
                "model's text is less reliable than its scores.</div>")

    return (f'<div class="sl-text-block">{generated(description, "description")}</div>',
            f'<div class="sl-text-block">{verdict}{generated(explanation, "explanation")}</div>')
