"""Plotly figures of the app: the confidence timeline, confusion matrices, per-layout errors, token maps.

Pure functions from plain data to ``plotly.graph_objects.Figure``; the tabs put them in ``gr.Plot``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# One colour per layout, the same in every plot and in the verdict card (colour-blind safe, Okabe-Ito).
LAYOUT_COLOURS = {
    "vertical": "#D55E00",
    "horizontal": "#0072B2",
    "pip": "#CC79A7",
    "other": "#E69F00",
    "none": "#7f8c8d",
}
FONT = dict(family="Inter, ui-sans-serif, system-ui, sans-serif", size=12)


def _base(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=48, r=16, t=28, b=40), font=FONT, plot_bgcolor="white",
                      paper_bgcolor="rgba(0,0,0,0)", hoverlabel=dict(font=FONT))
    fig.update_xaxes(showgrid=True, gridcolor="#eceff1", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eceff1", zeroline=False)
    return fig


def plot_timeline(result: dict, threshold: float = 0.5, selected: int | None = None) -> go.Figure:
    """P(sludge) per sampled frame over time, coloured by layout, with the threshold line.

    Each point's customdata is the frame's position in the analysis, which a click hands to the inspector.

    >>> fig = plot_timeline({"frames": [{"index": 0, "time_s": 0.5, "p_sludge": 0.9, "layout": "pip"}]})
    >>> fig.data[1].customdata.tolist()
    [[0]]
    """
    frames = result.get("frames", [])
    t = [f["time_s"] for f in frames]
    p = [f["p_sludge"] for f in frames]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=p, mode="lines", line=dict(color="#b0bec5", width=2), hoverinfo="skip",
                             showlegend=False))
    layouts = [f["layout"] for f in frames]
    fig.add_trace(go.Scatter(
        x=t, y=p, mode="markers", showlegend=False,
        marker=dict(size=[16 if f["index"] == selected else 11 for f in frames],
                    color=[LAYOUT_COLOURS.get(x, "#7f8c8d") for x in layouts],
                    line=dict(width=[3 if f["index"] == selected else 1 for f in frames], color="#263238")),
        customdata=np.array([[f["index"]] for f in frames]),
        text=[f"frame {f['index'] + 1} · {f['time_s']:.2f} s<br>P(sludge) {f['p_sludge']:.2f} · {f['layout']}"
              for f in frames],
        hovertemplate="%{text}<extra>click to inspect</extra>",
    ))
    # A legend of the layouts that occur, drawn as empty traces so the markers stay one clickable trace.
    for name in dict.fromkeys(layouts):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(size=10, color=LAYOUT_COLOURS.get(name, "#7f8c8d"))))
    fig.add_hline(y=threshold, line=dict(color="#c62828", dash="dash", width=1),
                  annotation_text=f"threshold {threshold:g}", annotation_position="top left",
                  annotation_font=dict(color="#c62828", size=11))
    fig.update_yaxes(range=[-0.03, 1.03], title_text="P(sludge)")
    fig.update_xaxes(title_text="time (s)")
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      clickmode="event", hovermode="closest", dragmode=False)
    return _base(fig, 280)


def plot_confusion(confusion: dict, title: str) -> go.Figure:
    """A confusion matrix (rows truth, columns predicted) as an annotated heatmap.

    >>> plot_confusion({"labels": ["no", "yes"], "matrix": [[3, 1], [0, 4]]}, "sludge").data[0].z.tolist()
    [[3, 1], [0, 4]]
    """
    labels, matrix = confusion["labels"], np.array(confusion["matrix"])
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, colorscale="Blues", showscale=False, text=matrix, texttemplate="%{text}",
        hovertemplate="truth %{y}<br>predicted %{x}<br>%{z} frames<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title_text="truth", showgrid=False)
    fig.update_xaxes(title_text="predicted", side="bottom", showgrid=False)
    fig.update_layout(title=dict(text=title, x=0.02, font=dict(size=13)))
    fig = _base(fig, 300)
    fig.update_layout(margin=dict(l=80, r=16, t=40, b=48))
    return fig


def plot_layout_errors(per_layout: dict) -> go.Figure:
    """Sludge and layout error rate per true layout, as grouped bars with each bar's frame count.

    >>> plot_layout_errors({"pip": {"n": 4, "sludge_error_rate": 0.25, "layout_error_rate": 0.5}}).data[0].y
    (0.25,)
    """
    names = [f"{name} (n={values['n']})" for name, values in per_layout.items()]
    fig = go.Figure()
    for key, label, colour in (("sludge_error_rate", "sludge error", "#0072B2"),
                               ("layout_error_rate", "layout error", "#D55E00")):
        fig.add_trace(go.Bar(
            x=names, y=[values[key] for values in per_layout.values()], name=label, marker_color=colour,
            hovertemplate="%{x}: %{y:.0%}<extra>" + label + "</extra>",
        ))
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", title_text="error rate")
    fig.update_layout(barmode="group", title=dict(text="Errors per true layout", x=0.02, font=dict(size=13)),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    fig = _base(fig, 300)
    fig.update_layout(margin=dict(l=56, r=16, t=48, b=40))
    return fig


def plot_token_map(relevance: np.ndarray, kept: np.ndarray | None = None,
                   times: list[float] | None = None, rows: list[str] | None = None) -> go.Figure:
    """The clip-level token map: frames down, visual tokens across; kept tokens outlined when a mask is given.

    Each frame is one row, labelled by ``rows``, else by its number and time (two frames never share a row,
    even at the same rounded time).

    >>> plot_token_map(np.ones((2, 32)), np.ones((2, 32), bool)).data[0].z.shape
    (2, 32)
    >>> list(plot_token_map(np.ones((2, 4)), times=[0.24, 0.24]).data[0].y)
    ['#1 · 0.24 s', '#2 · 0.24 s']
    """
    relevance = np.asarray(relevance, dtype=float)
    if rows is None:
        rows = ([f"#{i + 1} · {t:.2f} s" for i, t in enumerate(times)] if times is not None
                else [f"frame {i + 1}" for i in range(len(relevance))])
    fig = go.Figure(go.Heatmap(
        z=relevance, y=rows, colorscale="Inferno", colorbar=dict(title="relevance", thickness=10),
        hovertemplate="%{y} · token %{x}<br>relevance %{z:.3f}<extra></extra>",
    ))
    if kept is not None:
        ys, xs = np.nonzero(np.asarray(kept, dtype=bool))
        fig.add_trace(go.Scatter(
            x=xs, y=[rows[y] for y in ys], mode="markers", name="kept",
            marker=dict(symbol="square-open", size=7, color="#00e5ff", line=dict(width=1)),
            hovertemplate="kept: %{y} · token %{x}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", title_text="frame", type="category", showgrid=False)
    fig.update_xaxes(title_text="visual token", showgrid=False)
    fig.update_layout(legend=dict(orientation="h", y=1.08, x=1, xanchor="right"))
    return _base(fig, max(220, 26 * len(relevance) + 90))


def plot_comparison(comparison: dict) -> go.Figure:
    """Two model versions' holdout scores side by side as grouped bars.

    >>> plot_comparison({"models": [{"model_id": "a", "accuracy": 0.9, "precision": 0.8, "recall": 1.0,
    ...                                "f1": 0.89, "layout_accuracy": None}]}).data[0].name
    'a'
    """
    metrics = ("accuracy", "precision", "recall", "f1", "layout_accuracy")
    fig = go.Figure()
    for model, colour in zip(comparison["models"], ("#0072B2", "#D55E00")):
        fig.add_trace(go.Bar(
            x=[m.replace("_", " ") for m in metrics], y=[model[m] for m in metrics], name=model["model_id"],
            marker_color=colour, text=["–" if model[m] is None else f"{model[m]:.0%}" for m in metrics],
            textposition="outside",
        ))
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return _base(fig, 300)
