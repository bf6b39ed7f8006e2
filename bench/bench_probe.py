"""Which part of a checkpoint limits it: linear probes on its vision tower and on the image tokens its LM reads.

    python -m bench.bench_probe [--model models/tiny-vqwen-qformer] [--train-frames 4000] [--test-frames 600]

Frames are drawn as training draws them (``training.train_tiny.draw_batch``: balanced, degraded, portrait and
landscape), from the training pool's packages for the probes to learn on and from the held-out packages to test
them. Per frame it keeps the vision tower's patch features (averaged over a 4 x 4 grid of the frame), the image
tokens the LM reads (the Q-Former's 32 slots through the projection, flattened; for LLaVA the projected patches,
which are also what its tower row reads, so the two rows agree) and the model's own answers from the same vision
pass, read as the app's scorer reads them. A logistic regression (scikit-learn) on each set of features then
predicts sludge (all frames) and layout (sludge frames); its accuracy on the held-out frames is what that part
of the model can tell, read linearly, beside what the model's answer tells. A probe well above the model points
at the layers above those features; a probe no better points at the features themselves. The last line is
``tower_layout_probe: X``, the tower probe's held-out layout accuracy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def collect_features(lm, pool: str, seed: int, n: int, batch: int = 24) -> dict[str, np.ndarray]:
    """Tower features, LM-facing image tokens, truths and the model's answers for n frames of `pool`."""
    from core import vocabulary
    from core.engine import answer_logits, encode_frames, summarise_logits
    from training.train_tiny import TrainTinyConfig, draw_batch

    cfg = TrainTinyConfig(pool=pool, batch_size=batch)
    rng = np.random.default_rng(seed)
    tower, tokens, sludge, layout, said, said_layout = [], [], [], [], [], []
    while len(sludge) < n:
        specs, frames = draw_batch(rng, batch, cfg)
        visual = encode_frames(lm, frames)  # one vision pass: the probes' features and the model's answers
        tower.append(pool_grid(lm.family.patch_states(visual)))
        embeds = visual.embeds  # BLIP-2: the Q-Former's 32 slots, kept apart; LLaVA: a patch grid, pooled
        tokens.append(pool_grid(embeds) if embeds.shape[1] > 64 else embeds.flatten(1).float().numpy())
        scores = summarise_logits(lm, answer_logits(lm, visual, [vocabulary.CLASSIFY, vocabulary.LAYOUT]))
        for spec, score in zip(specs, scores):
            sludge.append(spec.truth.sludge)
            layout.append(spec.truth.layout)
            said.append(score.label)
            said_layout.append(max(score.layout_scores, key=score.layout_scores.get))
    return {"tower": np.concatenate(tower)[:n], "tokens": np.concatenate(tokens)[:n],
            "sludge": np.array(sludge[:n]), "layout": np.array(layout[:n]),
            "said": np.array(said[:n]), "said_layout": np.array(said_layout[:n])}


def pool_grid(patches, side: int = 4) -> np.ndarray:
    """(B, P, H) features of a square patch grid -> (B, side * side * H): averaged over side x side cells."""
    import torch

    grid = int(round(patches.shape[1] ** 0.5))
    cells = patches.reshape(len(patches), grid, grid, -1).permute(0, 3, 1, 2)
    return torch.nn.functional.adaptive_avg_pool2d(cells, side).flatten(1).float().numpy()


def fit_probe(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    """Held-out accuracy of a standardised, strongly regularised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    probe.fit(train, train_y)
    return float(probe.score(test, test_y))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model folder or id (default: the embedded default)")
    parser.add_argument("--train-frames", type=int, default=4000, help="training-pool frames the probes learn on")
    parser.add_argument("--test-frames", type=int, default=600, help="held-out-pool frames they are tested on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from core.config import ModelSpec, load_settings
    from core.engine import load_model
    from training import synthetic

    try:
        for pool in ("real-train", "real-holdout"):
            synthetic.pool_sources(pool)  # a pool with a package missing would be another data set
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    settings = load_settings()
    lm = load_model(ModelSpec(args.model) if args.model else settings.model, settings.engine)
    started = time.perf_counter()
    train = collect_features(lm, "real-train", 1, args.train_frames)
    test = collect_features(lm, "real-holdout", 2, args.test_frames)
    print(f"model {lm.version}: {args.train_frames} training-pool frames, {args.test_frames} held-out frames "
          f"({int(test['sludge'].sum())} sludge), features in {time.perf_counter() - started:.0f} s")
    figures: dict[str, float] = {}
    on_sludge = train["sludge"], test["sludge"]
    print(f"{'held-out accuracy':34s} {'sludge':>7s} {'layout':>7s}")
    for part, label in (("tower", "tower patches (4x4 grid), probe"), ("tokens", "image tokens the LM reads, probe")):
        figures[f"{part}_sludge"] = fit_probe(train[part], train["sludge"], test[part], test["sludge"])
        figures[f"{part}_layout"] = fit_probe(train[part][on_sludge[0]], train["layout"][on_sludge[0]],
                                              test[part][on_sludge[1]], test["layout"][on_sludge[1]])
        print(f"{label:34s} {figures[f'{part}_sludge']:7.3f} {figures[f'{part}_layout']:7.3f}")
    figures["model_sludge"] = float(np.mean(test["said"] == test["sludge"]))
    figures["model_layout"] = float(np.mean(test["said_layout"][on_sludge[1]] == test["layout"][on_sludge[1]]))
    print(f"{'the model answers':34s} {figures['model_sludge']:7.3f} {figures['model_layout']:7.3f}")
    print(f"tower_layout_probe: {figures['tower_layout']:.3f}")
    return figures


if __name__ == "__main__":
    main()
