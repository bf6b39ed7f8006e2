"""How much a checkpoint leans on two habits of the training renderer instead of on the seam between streams.

    python -m bench.bench_habits [--model models/tiny-vqwen-qformer] [--frames 96] [--pool real-train]

The renderer puts a game under 40 % of its stacks (as short-form sludge does) and grades every stream's colours
on its own, so every seam is also a colour break (``training.synthetic.StreamStyle``). A model that learned
"a game at the bottom" or "a colour break" instead of "two streams meet here" names the layout of two photos or
two videos pasted plainly one above the other wrongly. This draws composites from the same seeds four ways: as
the renderer draws them, with every stream ungraded (the same composites, their grading left off), with no game
placed last (drawn alike up to where a game would have gone) and with neither, half portrait and half
landscape, and scores them through the app's scorer.
Per layout and way it prints the share of frames called sludge and the share whose layout is named right; the
last line is ``stack_layout_drop_pp: X``, the vertical stacks' layout accuracy as the renderer draws them minus
with neither habit, in percentage points (0 or less: the model reads the seam).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

WAYS = {
    "renderer": (1.0, 0.0),
    "no game last": (0.0, 0.0),
    "ungraded": (1.0, 1.0),
    "neither": (0.0, 1.0),
}


def draw_composites(layout: str, n: int, pool: str, game_last_scale: float, ungraded_share: float,
                    seed: int = 123) -> tuple[list[np.ndarray], list[str]]:
    """n rendered composites of one layout, half portrait (384 x 216) and half landscape, drawn one way."""
    from training import synthetic

    style = synthetic.StreamStyle(game_last_scale=game_last_scale, ungraded_share=ungraded_share)
    rng = np.random.default_rng(seed)
    frames, layouts = [], []
    for i in range(n):
        size = (384, 216) if i % 2 else (216, 384)
        spec = synthetic.draw_frame_spec(rng, layout, size, pool, style=style)
        frames.append(synthetic.render_frame(spec, size))
        layouts.append(spec.truth.layout)
    return frames, layouts


def measure_habits(lm, layouts: tuple[str, ...], n: int, pool: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per layout and way: the share of frames called sludge and the share whose layout is named right."""
    from core.engine import score_frames

    out: dict[str, dict[str, dict[str, float]]] = {}
    for layout in layouts:
        out[layout] = {}
        for way, (game_last_scale, ungraded_share) in WAYS.items():
            frames, truths = draw_composites(layout, n, pool, game_last_scale, ungraded_share)
            scores = score_frames(lm, frames, batch_size=16)
            named = collections.Counter(max(s.layout_scores, key=s.layout_scores.get) for s in scores)
            out[layout][way] = {"found": float(np.mean([s.label for s in scores])),
                                "layout": named[layout] / len(scores)}
    return out


def main(argv: list[str] | None = None) -> float:
    from core.engine import load_model
    from training.synthetic import REAL_POOLS

    parser = argparse.ArgumentParser(prog="python -m bench.bench_habits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/tiny-vqwen-qformer", help="model folder or id")
    parser.add_argument("--frames", type=int, default=96, help="composites per layout and way (default 96)")
    parser.add_argument("--pool", default="real-train", choices=REAL_POOLS,
                        help="packages the streams come from (default the training pool's)")
    args = parser.parse_args(argv)
    lm = load_model(args.model)
    figures = measure_habits(lm, ("vertical", "horizontal", "pip"), args.frames, args.pool)
    print(f"model: {lm.identity.id}, {args.frames} composites per layout and way from the {args.pool} pool")
    print(f"{'layout':11s} {'drawn':13s} {'called sludge':>13s} {'layout right':>13s}")
    for layout, ways in figures.items():
        for way, row in ways.items():
            print(f"{layout:11s} {way:13s} {row['found']:13.1%} {row['layout']:13.1%}")
    vertical = figures["vertical"]
    drop = 100 * (vertical["renderer"]["layout"] - vertical["neither"]["layout"])
    print(f"stack_layout_drop_pp: {drop:.1f}")
    return drop


if __name__ == "__main__":
    main()
