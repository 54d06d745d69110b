"""How one request picks its next token from its logits, on every in-process path.

The transformers server backend (inside continuous batching, :mod:`serve.backends.rows`), the
llama.cpp backend and the llama.cpp engine (:mod:`pipeline.llamacpp`) all call
:meth:`RowControl.pick`, so temperature, top-p, per-request seeds and llguidance constraints mean
the same thing whatever runs the model.

It works in numpy: the llama.cpp paths hand it numpy logits and then never import torch (about
2.5 s of a cold command's start on 2 cores); a torch row (the transformers backend) is read as a
numpy view on the CPU, copied from an accelerator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Below this, logits / temperature overflow float32 for ordinary logits; such a request is greedy.
MIN_TEMPERATURE = 1e-4


def as_numpy(scores) -> np.ndarray:
    """A (V,) logits row as float32 numpy: a numpy array as it is, a CPU float32 tensor as a view."""
    if isinstance(scores, np.ndarray):
        return scores
    return scores.detach().float().cpu().numpy()


class RowControl:
    """Chooses the next token of one request.

    ``constraint`` is a logits processor for this request alone (:mod:`pipeline.formats.constrain`'s
    or the server's); it is called with ``input_ids`` of shape (1, T) (prompt plus the tokens picked
    so far) and scores (1, V), numpy arrays, and returns the scores with forbidden tokens at -inf.
    """

    def __init__(self, prompt_ids: list[int], temperature: float, top_p: float, seed: int | None,
                 constraint: Callable | None = None, eos_token_id: int | None = None):
        self.history = list(prompt_ids)
        self.temperature = temperature
        self.top_p = top_p
        self.constraint = constraint
        self.eos_token_id = eos_token_id
        self.error: Exception | None = None  # set when picking failed; the request then ends in an error
        # seed None: fresh entropy; any other int as a 64-bit word, as torch.manual_seed takes it
        # (OpenAI's seed may be negative: numpy refuses those)
        self.rng = np.random.default_rng(None if seed is None else seed % 2**64)

    def pick(self, scores) -> int:
        """``scores``: (V,) logits of this row (numpy or torch). Returns the chosen token id."""
        scores = as_numpy(scores)
        if self.constraint is not None:
            ids = np.asarray([self.history], dtype=np.int64)  # (1, T)
            scores = self.constraint(ids, scores[None, :].copy())[0]  # (V,)
        if not np.isfinite(scores).any():  # the grammar (or the model) allows nothing: end the request
            token = self.eos_token_id if self.eos_token_id is not None else 0
        elif self.temperature < MIN_TEMPERATURE:
            token = int(scores.argmax())
        else:
            token = self._sample(scores.astype(np.float64) / self.temperature)
        self.history.append(token)
        return token

    def _sample(self, logits: np.ndarray) -> int:
        candidates = np.flatnonzero(np.isfinite(logits))
        logits = logits[candidates]
        if self.top_p < 1.0:
            order = np.argsort(-logits, kind="stable")
            probs = _softmax(logits[order])
            # drop a token once the ones before it already hold top_p of the mass (keep >= 1)
            drop = (np.cumsum(probs) - probs) >= self.top_p
            drop[0] = False  # a top_p below the smallest float (5e-324) would drop every token
            keep = order[~drop]
            candidates, logits = candidates[keep], logits[keep]
        cumulative = np.cumsum(_softmax(logits))
        index = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return int(candidates[min(index, len(candidates) - 1)])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()
