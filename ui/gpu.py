"""ZeroGPU: on a Space with `spaces` installed, model calls run under ``spaces.GPU``; elsewhere it is a no-op."""

from __future__ import annotations

import importlib.util

# Every event that runs the model joins one queue of width one: there is one model in memory, torch already
# uses every core for one call, and the explanation hooks on the LM layers must see only their own forward.
MODEL_QUEUE = {"concurrency_id": "model", "concurrency_limit": 1}


def on_gpu(fn):
    """Decorate a function that runs the model: it gets a GPU for its duration on a ZeroGPU Space.

    >>> on_gpu(len)([1, 2])
    2
    """
    if importlib.util.find_spec("spaces") is None:
        return fn
    import spaces

    return spaces.GPU(fn)
