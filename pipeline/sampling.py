"""How one request picks its next token from its logits, on every in-process path.

The transformers server backend (inside continuous batching, :mod:`serve.backends.rows`), the
llama.cpp backend and the llama.cpp engine (:mod:`pipeline.llamacpp`) all call
:meth:`RowControl.pick`, so temperature, top-p, per-request seeds and llguidance constraints mean
the same thing whatever runs the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Below this, logits / temperature overflow float32 for ordinary logits; such a request is greedy.
MIN_TEMPERATURE = 1e-4


class RowControl:
    """Chooses the next token of one request.

    ``constraint`` is a transformers ``LogitsProcessor`` for this request alone; it is called with
    ``input_ids`` of shape (1, T) (prompt plus the tokens picked so far) and scores (1, V).
    """

    def __init__(self, prompt_ids: list[int], temperature: float, top_p: float, seed: int | None,
                 constraint: Callable | None = None, eos_token_id: int | None = None):
        self.history = list(prompt_ids)
        self.temperature = temperature
        self.top_p = top_p
        self.constraint = constraint
        self.eos_token_id = eos_token_id
        self.error: Exception | None = None  # set when picking failed; the request then ends in an error
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def pick(self, scores: torch.Tensor) -> int:
        """``scores``: (V,) float32 logits of this row. Returns the chosen token id."""
        if self.constraint is not None:
            ids = torch.tensor([self.history], dtype=torch.long)  # (1, T)
            scores = self.constraint(ids, scores.unsqueeze(0).clone())[0]  # (V,)
        if not torch.isfinite(scores).any():  # the grammar (or the model) allows nothing: end the request
            token = self.eos_token_id if self.eos_token_id is not None else 0
            self.history.append(token)
            return token
        if self.temperature < MIN_TEMPERATURE:
            token = int(scores.argmax())
        else:
            logits = scores / self.temperature
            if self.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                probs = sorted_logits.softmax(-1)
                # drop a token once the ones before it already hold top_p of the mass (keep >= 1)
                drop = (probs.cumsum(-1) - probs) >= self.top_p
                drop[0] = False  # a top_p below float32's smallest value (5e-324) would drop every token
                logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
            probs = logits.softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        self.history.append(token)
        return token
