"""Per-request sampling and constraints inside transformers' continuous batching.

Continuous batching applies one logits-processor list to every row of a step and samples all rows
with one global generator, so on its own it cannot honour a request's ``seed``, its
``temperature``/``top_p`` (they must be fixed when the manager starts) or a grammar. We plug one
processor, :class:`RequestRows`, into the manager. Each request carries an integer slot in its
``logit_processor_kwargs``; the processor looks the slot up in a table of :class:`RowControl`
objects, and a control picks the row's next token itself (constraint mask, temperature, top-p,
its own seeded ``torch.Generator``) and returns a row whose only finite score is that token. The
manager runs greedy (``do_sample=False``), so its argmax takes exactly the token we picked.
Rows without a control (greedy, unconstrained) pass through untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

try:  # the processor base class moved between transformers releases; fail where it is used
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
        ContinuousBatchingLogitsProcessorList,
    )
except ImportError as e:  # pragma: no cover - exercised only on an incompatible transformers
    raise ImportError("serve needs a transformers whose continuous batching takes per-request logits "
                      "processors (served with 5.17 on the GPU machine and 5.25 here)") from e
from transformers.generation.logits_process import LogitsProcessorList

from pipeline.sampling import MIN_TEMPERATURE, RowControl  # noqa: F401 - re-exported: one sampler for every backend

SLOT_KWARG = "rewoo_slot"
NO_SLOT = -1


class RequestRows(ContinuousBatchingLogitsProcessor):
    """The one processor we give the continuous-batching manager; see the module docstring."""

    supported_kwargs = {SLOT_KWARG: int}
    ignored_kwargs = ()

    def __init__(self, width: int = 1):
        # The manager writes our tensor over the first len(tensor) entries of its argument row and
        # resets the rest only on a full reset; padding rows would then carry stale slots (a live
        # request picking twice per step from garbage logits). So we always write ``width``
        # entries: max_requests_per_batch + 1, every row a step can have.
        self.width = width
        self.controls: dict[int, RowControl] = {}
        self._next = 0
        self._lock = threading.Lock()

    def new_slot(self) -> int:
        with self._lock:
            self._next = (self._next + 1) % (2**31 - 1)  # int32 storage in the manager
            return self._next

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(NO_SLOT)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        # Row i of the step's scores belongs to requests_with_new_token[i].
        slots = [r.state.logit_processor_kwargs.get(SLOT_KWARG, NO_SLOT) for r in requests_with_new_token]
        slots += [NO_SLOT] * (self.width - len(slots))
        return torch.tensor(slots, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        # scores: (rows, V); tensor_arg: (>= rows,) slot per row, NO_SLOT for padding rows.
        slots = tensor_arg[: scores.size(0)].tolist()
        for row, slot in enumerate(slots):
            control = self.controls.get(slot)
            if control is None:
                continue
            try:
                token = control.pick(scores[row])
            except Exception as e:  # one request's failure must not stop the batch: end that request
                control.error = e
                token = control.eos_token_id if control.eos_token_id is not None else 0
            scores[row].fill_(float("-inf"))
            scores[row, token] = 0.0
        return scores


def install(manager, rows: RequestRows, max_requests_per_batch: int) -> None:
    """Make ``rows`` the manager's only logits processor (before ``manager.start()``)."""
    rows.width = max_requests_per_batch + 1
    processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([rows]))
    # The list counts tensor rows only for processors it converted itself; ours needs one row.
    processors.tensors_required = 1
    processors.do_processing = True
    manager.logit_processor = processors
