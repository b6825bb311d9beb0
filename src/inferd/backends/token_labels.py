"""Token labels -> entities, as transformers' token-classification pipeline groups them.

Every token-classification backend that labels subword tokens (transformers, ONNX) gives, per
input, a probability row per token; ``entities`` turns them into what DeepInfra (and the
Hugging Face pipeline) answers, for each aggregation strategy the pipeline names:

* ``none``: every token on its own (``entity``, ``index``), ``O`` left out;
* ``simple``: adjacent tokens of the same tag grouped (``B-``/``I-`` prefixes read), the
  group's score the mean of its tokens';
* ``first`` / ``average`` / ``max``: tokens of one word agree first (the first token's label,
  the label of the mean of the word's scores, or of its most certain token), then grouped as
  ``simple`` groups them.

Unlike the pipeline, ``word`` is the text between ``start`` and ``end`` (the user's own
characters, accents and case kept), so offsets always slice the input back to the word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("none", "simple", "first", "average", "max")


@dataclass(slots=True)
class TokenSpans:
    """What a tokenised text keeps for its entities: per token of the model's input, its
    characters in the text (special tokens: None) and whether it continues a word."""

    spans: list[tuple[int, int] | None]
    subword: list[bool]


def subword_flags(text: str, tokens: list[str], offsets: list[tuple[int, int]], prefix: str | None,
                  unknown: list[bool]) -> list[bool]:
    """Whether each token continues the word before it: by the tokenizer's continuing-subword
    prefix (``##``) where it has one, else (BPE without one) when no space comes before it; an
    unknown token starts a word (the pipeline's rules)."""
    flags = []
    for token, (start, end), unk in zip(tokens, offsets, unknown, strict=True):
        if unk:
            flags.append(False)
        elif prefix:
            flags.append(len(token) != end - start)
        else:
            flags.append(start > 0 and " " not in text[start - 1 : start + 1])
    return flags


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def entities(text: str, scores: np.ndarray, spans: TokenSpans, labels: list[str], strategy: str = "simple",
             ignore: frozenset[str] = frozenset({"O"})) -> list[dict]:
    """``scores``: [tokens, labels] probabilities, one row per token of the model's input."""
    tokens = [
        (i, span, spans.subword[i]) for i, span in enumerate(spans.spans[: len(scores)]) if span is not None
    ]
    if strategy in ("none", "simple"):
        words = []
        for i, (start, end), _ in tokens:
            best = int(scores[i].argmax())
            words.append({"entity": labels[best], "score": float(scores[i][best]), "index": i,
                          "start": start, "end": end})
        if strategy == "none":
            return [{**w, "word": text[w["start"]:w["end"]]} for w in words if w["entity"] not in ignore]
    elif strategy in ("first", "average", "max"):
        words = []
        group: list[tuple[int, tuple[int, int], bool]] = []
        for token in tokens:
            if group and not token[2]:
                words.append(_word(group, scores, labels, strategy))
                group = []
            group.append(token)
        if group:
            words.append(_word(group, scores, labels, strategy))
    else:
        raise ValueError(f"unknown aggregation strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    return [g for g in _grouped(words, text) if g["entity_group"] not in ignore]


def _word(group: list, scores: np.ndarray, labels: list[str], strategy: str) -> dict:
    rows = scores[[i for i, _, _ in group]]
    if strategy == "first":
        row = rows[0]
    elif strategy == "max":
        row = rows[int(rows.max(axis=1).argmax())]
    else:
        row = np.nanmean(rows, axis=0)
    best = int(row.argmax())
    return {"entity": labels[best], "score": float(row[best]), "start": group[0][1][0], "end": group[-1][1][1]}


def _grouped(words: list[dict], text: str) -> list[dict]:
    groups: list[list[dict]] = []
    for word in words:
        bi, tag = _tag(word["entity"])
        if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(word)
        else:
            groups.append([word])
    out = []
    for group in groups:
        start, end = group[0]["start"], group[-1]["end"]
        out.append({"entity_group": group[0]["entity"].split("-", 1)[-1],  # the pipeline's name for it
                    "score": float(np.nanmean([w["score"] for w in group])),
                    "word": text[start:end], "start": start, "end": end})
    return out
