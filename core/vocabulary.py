"""The words sludgelens speaks: layouts, label fields, roles, and the questions asked of a frame.

Every package imports these names from here, so a layout, a role or a prompt is spelled once. The prompts
follow the vqwen card: the classify prompt is the card's own ("Is this sludge content? Answer yes or no.");
the others are its task mix (layout, describe, coupled classify+explain, refusal of identity questions).
The embedded models are trained on exactly these strings, so changing one means retraining them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- layouts

# The four sludge layouts of the vqwen card, in the order of the Label tab's keys 1-4.
LAYOUTS = ("vertical", "horizontal", "pip", "other")
# The layout of a frame that is not sludge: one stream.
NO_LAYOUT = "none"
# The values a layout label may hold.
LABEL_LAYOUTS = LAYOUTS + (NO_LAYOUT,)
# What each layout means, in the few words a legend has room for.
LAYOUT_MEANINGS = {
    "vertical": "stacked top/bottom",
    "horizontal": "side by side",
    "pip": "inset over a full frame",
    "other": "collage or other",
    NO_LAYOUT: "one stream",
}

# ---------------------------------------------------------------- labels and who writes them

# The fields of a frame label; each correction changes one.
FIELDS = ("sludge", "layout", "description")
# viewer: analyze and look; labeler: write labels; reviewer: also accept or reject others' labels.
ROLES = ("viewer", "labeler", "reviewer")
WRITE_ROLES = ("labeler", "reviewer")

# ---------------------------------------------------------------- questions and answers

CLASSIFY = "Is this sludge content? Answer yes or no."
LAYOUT = "What is the layout of this frame? Answer vertical, horizontal, pip, or other."
DESCRIBE = "Describe what is visible in this frame."
EXPLAIN = "Is this sludge content? Answer yes or no, then explain why."
# Questions about who made or what is shown are refused: the model describes, it does not identify.
REFUSAL = "I can't identify specific shows, games or channels; I can only describe what is visible."
IDENTITY_QUESTIONS = (
    "Which show is this from?",
    "What game is being played?",
    "Which channel posted this?",
    "Who made this video?",
    "What is the name of this show?",
    "Which streamer is this?",
    "What movie is this clip from?",
    "Which account uploaded this?",
    "Can you name the game in the bottom half?",
    "What series is playing in the top part?",
)

YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")


def build_messages(question: str) -> list[dict]:
    """One user turn holding the image and the question, in the chat-template message format.

    >>> build_messages(CLASSIFY)[0]["content"][0]
    {'type': 'image'}
    """
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
