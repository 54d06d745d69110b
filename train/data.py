"""Training data: read rows, render prompts, tokenize with the prompt-loss mask, pack or pad.

Rows come from JSONL, JSON or parquet files (or a folder of them), or from ``datasets`` by name.
A row is Alpaca (``instruction``, optional ``input``, ``output``), chat (``messages``: a list
of ``{"role", "content"}`` ending with the assistant's turn) or prompt-completion (``prompt``,
``completion``: text rendered already, as an engine renders it at run time). Other keys
(``meta``) are ignored.
A bad row is a :class:`DataError` naming ``file:line`` and what is missing.

Every row becomes an :class:`Example` ``(prompt, response)``:

- Alpaca: ``prompt = formats.alpaca(instruction [+ "\\n\\n" + input])``, ``response = output``;
- chat: the last assistant message is the response, everything before it the prompt (rendered
  by ``formats.messages_to_alpaca``, or the tokenizer's chat template with ``template=chat``);
- prompt-completion: ``prompt`` and ``completion`` as they are (no template).

Tokens (:func:`tokenize`): ``prompt_ids`` (with the tokenizer's BOS) then ``response_ids`` and
EOS. They are tokenized apart, as at inference time, where the prompt is encoded alone and the
model continues it. ``labels`` are ``-100`` on the prompt (no loss) unless ``train_on_prompt``.

Decision tokens (:class:`LossWeights`): a few tokens of a response decide it (a plan's first word
and tool name: the rest follows from them), yet the mean loss weighs them like any other. With a
``loss_weight_pattern``, response tokens that overlap a match (or its groups, when the pattern
has groups) get ``loss_weight``; rows then carry ``weights`` and the trainer sums weighted token
losses over the same token count (``train.sft``).

Packing (:class:`PackedCollator`): a batch's examples are laid end to end in one row
``(1, sum of lengths)`` with ``position_ids`` that restart at 0 for every example and no
``attention_mask``; transformers then builds a block-diagonal causal mask from the position ids
(``masking_utils.find_packed_sequence_indices``), so no example attends to another, and the
first label of every example is ``-100`` so no example predicts the next one's first token.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import formats

IGNORE = -100  # label value the loss skips
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and line (or row)."""


@dataclass(frozen=True)
class Example:
    """One training example: what the model reads and what it must write."""

    prompt: str
    response: str
    where: str = ""  # file:line, for messages


# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The file as UTF-8 text; bytes that are not UTF-8 are a :class:`DataError` naming file:line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start:e.start + 1]!r} at column {column}); "
                        "save the file as UTF-8") from e


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    text = _read_text(path)
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
        return
    # A JSON file: a list of rows. Decode element by element to know each row's line.
    decoder = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text[i:i + 1] == "[":
        raise DataError(f"{path}:1: a JSON dataset must be a list of rows")
    i += 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise DataError(f"{path}: the list is never closed with ']'")
        if text[i] == "]":
            return
        line = text.count("\n", 0, i) + 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
        yield f"{path}:{line}", obj


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # noqa: PLC0415  (only for parquet)

    for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"{path} row {i}", row


def _hub_rows(name: str) -> Iterator[tuple[str, Any]]:
    import datasets  # noqa: PLC0415

    parts = name.split(":")
    path, config, split = parts[0], (parts[1] if len(parts) == 3 else None), (parts[-1] if len(parts) > 1 else "train")
    try:
        ds = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # datasets raises many types (FileNotFound, ConnectionError, DatasetNotFound...)
        raise DataError(f"cannot load dataset {name!r}: not a local file or folder, and datasets says: {e}") from e
    for i, row in enumerate(ds, 1):
        yield f"{name} row {i}", row


def read_rows(source: str | Path) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for every row of a file, a folder of files, or a ``datasets`` name."""
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in FILE_SUFFIXES)
        if not files:
            raise DataError(f"{p} holds no {'/'.join(FILE_SUFFIXES)} files")
        for f in files:
            yield from read_rows(f)
    elif p.is_file():
        if p.suffix in (".jsonl", ".json"):
            yield from _json_rows(p)
        elif p.suffix == ".parquet":
            yield from _parquet_rows(p)
        else:
            raise DataError(f"{p}: unknown dataset format {p.suffix!r}; use {', '.join(FILE_SUFFIXES)}")
    elif p.suffix in FILE_SUFFIXES or str(source).startswith((".", "/", "~")):
        raise DataError(f"dataset {source} does not exist")
    else:
        yield from _hub_rows(str(source))


# --------------------------------------------------------------------------------------------
# Rows -> examples
# --------------------------------------------------------------------------------------------

def to_example(row: Any, where: str, template: str = "alpaca", tokenizer=None) -> Example:
    """An :class:`Example` from an Alpaca, chat or prompt-completion row (``prompt``: text already
    rendered, used as it is, whatever ``template``); :class:`DataError` naming ``where`` otherwise."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages)):
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's (the response to learn), "
                            f"got role {messages[-1]['role']!r}")
        context, response = list(messages[:-1]), str(messages[-1]["content"])
        if template == "chat":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise DataError(f"{where}: template=chat needs a tokenizer with a chat template")
            prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        else:
            try:
                prompt = formats.messages_to_alpaca(context)
            except ValueError as e:
                raise DataError(f"{where}: {e}") from e
        return Example(prompt, response, where)
    if "prompt" in row and "completion" in row:  # TRL's prompt-completion rows: the prompt as it is
        wrong = [f"{k!r} is {type(row[k]).__name__}" for k in ("prompt", "completion") if not isinstance(row[k], str)]
        if wrong:
            raise DataError(f"{where}: {' and '.join(wrong)}, not text; 'prompt' and 'completion' must be strings")
        return Example(row["prompt"], row["completion"], where)
    wrong = [f"{k!r} is {type(row[k]).__name__}" for k in ("instruction", "output", "input")
             if k in row and row[k] is not None and not isinstance(row[k], str)]
    if wrong:
        raise DataError(f"{where}: {' and '.join(wrong)}, not text; Alpaca fields 'instruction', 'output' "
                        f"and 'input' must be strings (quote the value)")
    missing = [k for k in ("instruction", "output") if not isinstance(row.get(k), str)]
    if missing:
        raise DataError(f"{where}: row lacks {' and '.join(repr(k) for k in missing)} (text); a row needs "
                        f"Alpaca fields 'instruction', 'output' (and optional 'input'), chat 'messages' or 'prompt' "
                        f"and 'completion'. "
                        f"Found keys: {sorted(row)}")
    instruction = row["instruction"]
    extra = row.get("input") or ""
    if extra:
        instruction = f"{instruction}\n\n{extra}"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{where}: template=chat needs a tokenizer with a chat template")
        prompt = tokenizer.apply_chat_template(formats.chat(instruction), tokenize=False, add_generation_prompt=True)
    else:
        prompt = formats.alpaca(instruction)
    return Example(prompt, row["output"], where)


def load_examples(source: str | Path, template: str = "alpaca", tokenizer=None, max_rows: int = 0) -> list[Example]:
    out = []
    for where, row in read_rows(source):
        out.append(to_example(row, where, template, tokenizer))
        if max_rows and len(out) >= max_rows:
            break
    if not out:
        raise DataError(f"dataset {source} has no rows")
    return out


# --------------------------------------------------------------------------------------------
# Tokens and the prompt-loss mask
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LossWeights:
    """``weight`` on the response tokens that overlap a match of ``pattern`` (of its groups, when
    it has groups); 1 elsewhere. E.g. ``(?m)^(?:Plan: (\\S+)|#E\\d+ = (\\w+))``: a plan's first
    word and tool name."""

    pattern: str
    weight: float

    def __post_init__(self):
        import re  # noqa: PLC0415

        try:
            object.__setattr__(self, "_re", re.compile(self.pattern))
        except re.error as e:
            raise DataError(f"loss_weight_pattern {self.pattern!r} is not a regular expression: {e}") from e

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self._re.finditer(text):
            groups = [i for i in range(1, (m.re.groups or 0) + 1) if m.start(i) >= 0]
            out += [m.span(i) for i in groups] if m.re.groups else [m.span()]
        return [(a, b) for a, b in out if b > a]

    def of(self, text: str, offsets: Sequence[tuple[int, int]]) -> list[float]:
        """One weight per token of ``text`` given the tokens' character ``offsets``."""
        spans = self.spans(text)
        return [self.weight if any(a < e and s < b for s, e in spans) else 1.0 for a, b in offsets]


def tokenize(example: Example, tokenizer, max_seq_len: int, train_on_prompt: bool = False,
             weights: LossWeights | None = None) -> dict | None:
    """``{"input_ids", "labels"}`` (lists of int, same length) for one example, or None when
    nothing of the response survives ``max_seq_len``; with ``weights`` also ``"weights"``
    (floats: 1 on the prompt and EOS, :class:`LossWeights` on the response).

    ``input_ids = prompt_ids + response_ids + [eos]``; ``labels`` copies them with the prompt set
    to ``-100`` (unless ``train_on_prompt``). Too long: the prompt loses tokens from its start
    (keeping BOS), then the response from its end.
    """
    prompt_ids = tokenizer(example.prompt, add_special_tokens=True)["input_ids"]
    if weights is not None:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("loss_weight_pattern needs a fast tokenizer (token offsets); this one is slow")
        enc = tokenizer(example.response, add_special_tokens=False, return_offsets_mapping=True)
        response_w = weights.of(example.response, enc["offset_mapping"]) + [1.0]
        response_ids = enc["input_ids"] + [tokenizer.eos_token_id]
    else:
        response_ids = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    overflow = len(prompt_ids) + len(response_ids) - max_seq_len
    if overflow > 0:
        keep_bos = 1 if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else 0
        cut = min(overflow, max(0, len(prompt_ids) - keep_bos - 1))
        prompt_ids = prompt_ids[:keep_bos] + prompt_ids[keep_bos + cut:]
        overflow -= cut
        if overflow > 0:
            response_ids = response_ids[: len(response_ids) - overflow]
    if not response_ids:
        return None
    prompt_labels = list(prompt_ids) if train_on_prompt else [IGNORE] * len(prompt_ids)
    row = {"input_ids": prompt_ids + response_ids, "labels": prompt_labels + response_ids}
    if weights is not None:
        row["weights"] = [1.0] * len(prompt_ids) + response_w[:len(response_ids)]
    return row


def tokenize_all(examples: Sequence[Example], tokenizer, max_seq_len: int, train_on_prompt: bool = False,
                 desc: str = "tokenizing", weights: LossWeights | None = None) -> tuple[list[dict], int]:
    """Tokenized rows and how many examples were dropped (no response token within max_seq_len)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    rows, dropped = [], 0
    for ex in tqdm(examples, desc=desc, leave=False, disable=len(examples) < 500):
        r = tokenize(ex, tokenizer, max_seq_len, train_on_prompt, weights)
        if r is None:
            dropped += 1
        else:
            rows.append(r)
    return rows, dropped


def split_eval(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """``(train, eval)``: a seeded random ``fraction`` of rows held out (at least one when > 0)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n = max(1, int(round(len(rows) * fraction)))
    held = set(idx[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

def prefix_groups(features: Sequence[Mapping], min_shared: int) -> tuple[list[int], list[int]]:
    """Which rows of a batch share a prompt prefix of at least ``min_shared`` tokens:
    ``(group, prefix_len)``, ``group[i]`` the group of row ``i`` (``-1``: none) and
    ``prefix_len[g]`` the tokens group ``g`` shares. A shared prefix ends before the token that
    precedes a row's first label, so every label is predicted from a position after the prefix
    (planner rows that list the same tools share all but the task and the response)."""
    limits = []
    for f in features:
        first = next((i for i, y in enumerate(f["labels"]) if y != IGNORE), len(f["input_ids"]))
        limits.append(max(0, first - 1))
    ids = [list(f["input_ids"]) for f in features]
    order = sorted(range(len(features)), key=lambda i: ids[i][:limits[i]])
    group, prefix_len = [-1] * len(features), []
    clusters: list[tuple[list[int], int]] = []
    for i in order:
        if clusters:
            rows, shared = clusters[-1]
            head = ids[rows[0]]
            n, cap = 0, min(shared, limits[i])
            while n < cap and head[n] == ids[i][n]:
                n += 1
            if n >= min_shared:
                clusters[-1] = (rows + [i], n)
                continue
        clusters.append(([i], limits[i]))
    for rows, shared in clusters:
        if len(rows) > 1 and shared >= min_shared:
            for i in rows:
                group[i] = len(prefix_len)
            prefix_len.append(shared)
    return group, prefix_len


class PaddedCollator:
    """Right-pads a batch: ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on padding),
    each ``(B, longest)``.

    With ``share_prefix=N`` (> 0) it also marks the rows that share at least N prompt tokens
    (:func:`prefix_groups`): ``prefix_group`` ``(B,)`` and ``prefix_len`` ``(G,)``. The trainer
    then runs each group's prefix once and its rows' remainders on that prefix's KV cache
    (``train.sft.shared_prefix_loss``): the same loss and gradients, a fraction of the compute
    when a long tool list heads every row."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, share_prefix: int = 0):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.share_prefix = share_prefix

    def __call__(self, features: Sequence[Mapping]) -> dict:
        import torch  # noqa: PLC0415

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        ids, mask, labels, weights = [], [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
            labels.append(list(f["labels"]) + [IGNORE] * pad)
            weights.append(list(f.get("weights") or [1.0] * len(f["input_ids"])) + [0.0] * pad)
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}
        if any("weights" in f for f in features):
            batch["loss_weights"] = torch.tensor(weights)
        if self.share_prefix > 0:
            group, prefix_len = prefix_groups(features, self.share_prefix)
            if prefix_len:
                batch["prefix_group"] = torch.tensor(group)
                batch["prefix_len"] = torch.tensor(prefix_len)
        return batch


class PackedCollator:
    """Packs a batch into one row: ``input_ids``, ``labels``, ``position_ids``, each ``(1, T)``
    with ``T`` the sum of the examples' lengths; no padding, no attention mask (see the module
    docstring for why no example sees another)."""

    def __call__(self, features: Sequence[Mapping]) -> dict:
        import torch  # noqa: PLC0415

        ids, labels, pos, weights = [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids += list(f["input_ids"])
            labels += [IGNORE] + list(f["labels"][1:])  # never predict across the boundary
            pos += list(range(n))
            weights += list(f.get("weights") or [1.0] * n)
        # use_cache=False: with a KV cache transformers skips the packed-sequence mask (measured:
        # examples then attend to the ones before them), and training needs no cache anyway.
        batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                 "position_ids": torch.tensor([pos]), "use_cache": False}
        if any("weights" in f for f in features):
            batch["loss_weights"] = torch.tensor([weights])
        return batch

