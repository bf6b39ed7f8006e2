"""The questions we ask a frame and the answer words we read back.

The classify prompt is the vqwen card's own ("Is this sludge content? Answer yes or no."); the others follow
the card's task mix (layout, describe, coupled classify+explain, refusal). The embedded models are trained
on exactly these strings, so changing one means retraining them.
"""

from __future__ import annotations

CLASSIFY = "Is this sludge content? Answer yes or no."
LAYOUT = "What is the layout of this frame? Answer vertical, horizontal, pip, or other."
DESCRIBE = "Describe what is visible in this frame."
EXPLAIN = "Is this sludge content? Answer yes or no, then explain why."

YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")

# The four sludge layouts of the vqwen card; a frame that is not sludge has layout "none".
LAYOUT_CLASSES = ("vertical", "horizontal", "pip", "other")
NO_LAYOUT = "none"


def build_messages(question: str) -> list[dict]:
    """One user turn holding the image and the question, in the chat-template message format.

    >>> build_messages(CLASSIFY)[0]["content"][0]
    {'type': 'image'}
    """
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
