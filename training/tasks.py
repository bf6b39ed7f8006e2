"""The vqwen card's task mix and the teacher-forced loss, shared by every training script.

A frame's labels (sludge, layout, description, explanation) become one chat turn per task: the user turn
is the image plus a question from ``core.vocabulary``, the assistant turn is the answer. Rows are
right-padded and carry labels only on the answer and its end token, so the loss never rewards predicting
the prompt. The vision side runs once per frame and its image tokens are scattered into every row that
asks about that frame.

    rng = np.random.default_rng(0)
    qa = [pick_task(rng, truth, CARD_TASK_MIX) for truth in truths]
    ids, att, labels = build_training_rows(lm, qa)
    visual = lm.family.encode(lm.model, pixels).embeds
    loss = answer_loss(lm, visual, torch.arange(len(qa)), ids, att, labels)
"""

from __future__ import annotations

import numpy as np
import torch

from core import vocabulary

# One random task per frame, in the proportions of the vqwen card (classify / layout / describe /
# coupled classify+explain / refusal of "which show" questions).
CARD_TASK_MIX = {"classify": 0.25, "layout": 0.15, "describe": 0.20, "explain": 0.35, "refuse": 0.05}
TASKS = tuple(CARD_TASK_MIX)


def explain_answer(truth) -> str:
    """The coupled classify+explain answer: the yes/no word first, then the one-sentence reason.

    >>> from training.synthetic import FrameTruth
    >>> explain_answer(FrameTruth(True, "pip", "", "Sludge: an inset."))
    'yes. Sludge: an inset.'
    """
    return f"{'yes' if truth.sludge else 'no'}. {truth.explanation}"


def usable_tasks(truth, mix: dict[str, float], exclude: str | None = None) -> list[str]:
    """The tasks of `mix` a frame can answer: layout needs a sludge frame, describe needs a description.

    >>> from training.synthetic import FrameTruth
    >>> usable_tasks(FrameTruth(False, "none", "", "Not sludge."), CARD_TASK_MIX)
    ['classify', 'explain', 'refuse']
    """
    unknown = set(mix) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)} in the task mix; expected some of {', '.join(TASKS)}")
    return [t for t in mix if mix[t] > 0 and t != exclude
            and not (t == "layout" and not truth.sludge)
            and not (t == "describe" and not truth.description)]


def pick_task(rng: np.random.Generator, truth, mix: dict[str, float], exclude: str | None = None) -> tuple[str, str]:
    """One (question, answer) pair for a frame, drawn from the task mix among the tasks it can answer.

    >>> from training.synthetic import FrameTruth
    >>> pick_task(np.random.default_rng(0), FrameTruth(True, "vertical", "", ""), {"layout": 1.0})
    ('What is the layout of this frame? Answer vertical, horizontal, pip, or other.', 'vertical')
    """
    names = usable_tasks(truth, mix, exclude)
    if not names:
        raise ValueError(f"no task of the mix {sorted(mix)} fits a frame with sludge={truth.sludge} and "
                         f"{'a' if truth.description else 'no'} description")
    weights = np.array([mix[t] for t in names], dtype=float)
    task = names[rng.choice(len(names), p=weights / weights.sum())]
    return answer_for(task, truth, rng)


def answer_for(task: str, truth, rng: np.random.Generator) -> tuple[str, str]:
    """The (question, answer) pair of one named task for a frame's labels.

    >>> from training.synthetic import FrameTruth
    >>> answer_for("classify", FrameTruth(False, "none", "", ""), np.random.default_rng(0))
    ('Is this sludge content? Answer yes or no.', 'no')
    """
    if task == "classify":
        return vocabulary.CLASSIFY, "yes" if truth.sludge else "no"
    if task == "layout":
        return vocabulary.LAYOUT, truth.layout
    if task == "describe":
        return vocabulary.DESCRIBE, truth.description
    if task == "explain":
        return vocabulary.EXPLAIN, explain_answer(truth)
    if task == "refuse":
        return vocabulary.IDENTITY_QUESTIONS[rng.integers(len(vocabulary.IDENTITY_QUESTIONS))], vocabulary.REFUSAL
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def task_of(qa: tuple[str, str]) -> str:
    """The task name a (question, answer) pair belongs to.

    >>> task_of((vocabulary.LAYOUT, "pip"))
    'layout'
    """
    return {vocabulary.CLASSIFY: "classify", vocabulary.LAYOUT: "layout", vocabulary.DESCRIBE: "describe",
            vocabulary.EXPLAIN: "explain"}.get(qa[0], "refuse")


def build_training_rows(lm, qa_pairs: list[tuple[str, str]]):
    """Right-padded ids, attention mask and labels (loss on the answer and its end token only).

    >>> ids, att, labels = build_training_rows(lm, [(vocabulary.CLASSIFY, "yes")])  # doctest: +SKIP
    >>> int((labels != -100).sum())  # "yes" + end token  # doctest: +SKIP
    2
    """
    tok = lm.tokenizer
    seqs, labels = [], []
    for question, answer in qa_pairs:
        prompt = lm.prompt_ids(question)
        target = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
        seqs.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (s, l) in enumerate(zip(seqs, labels)):
        ids[r, : len(s)] = torch.tensor(s)
        lab[r, : len(l)] = torch.tensor(l)
        att[r, : len(s)] = 1
    return ids, att, lab


def answer_loss(lm, visual: torch.Tensor, rows_to_frame: torch.Tensor, ids, att, labels) -> torch.Tensor:
    """Teacher-forced cross-entropy over the answers, given each frame's projected image tokens (B, T, H).

    >>> answer_loss(lm, visual, torch.tensor([0, 0, 1]), ids, att, labels).item()  # doctest: +SKIP
    0.41
    """
    embeds = lm.model.get_input_embeddings()(ids)
    slots = (ids == lm.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(slots, visual.index_select(0, rows_to_frame).to(embeds.dtype))
    positions = (att.cumsum(-1) - 1).clamp(min=0)
    logits = lm.family.run_lm(lm.model, embeds, att, positions, logits_to_keep=0).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
