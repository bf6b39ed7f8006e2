"""HTML and Markdown the tabs show: the verdict card, frame facts, messages. Every dynamic string is escaped."""

from __future__ import annotations

import html

import numpy as np
from PIL import Image

from ui.figures import LAYOUT_COLOURS


def esc(value) -> str:
    return html.escape(str(value))


def format_limits(limits) -> str:
    """What an upload may be, shown above the upload box.

    >>> from core.config import VideoLimits
    >>> format_limits(VideoLimits())
    'mp4 · mov · webm · mkv · avi — up to 200 MB and 10 min'
    """
    minutes = limits.max_duration_s / 60
    length = f"{minutes:g} min" if minutes >= 1 else f"{limits.max_duration_s:g} s"
    return f"mp4 · mov · webm · mkv · avi — up to {limits.max_bytes / 2**20:g} MB and {length}"


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
                "The queue fills from analyzed videos: analyze one on the Analyze tab first if it stays empty.</div>")
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


def format_progress(progress: dict, unlabeled: int | None = None) -> str:
    """The progress counter."""
    text = (f"**{progress['done']}** labelled this session · frame {progress['position']} of "
            f"{progress['queued']} queued")
    if unlabeled is not None:
        text += f" · {unlabeled} frames in the store without a label"
    return text


def format_model_status(services, error: str | None = None) -> str:
    """One line under the model selector: what is loaded, or why the choice could not be loaded."""
    current = services.models.current
    if error:
        return f"⚠️ {error}"
    if current is None:
        return "Loads on first use (a few seconds for the embedded model)."
    return f"Loaded: `{current.identity.short}` ({current.family.name} on {current.device.type})"


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
