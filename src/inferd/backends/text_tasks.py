"""What the classic text tasks share on the encoder engine (text-classification,
token-classification, fill-mask, question-answering; text2text-generation has its own module):
the inputs, and tokenisation with character offsets by the model's Rust tokenizer
(``tokenizers.Tokenizer``: a transformers checkpoint's fast tokenizer, or an ONNX model's
``tokenizer.json``).

Each input becomes the model's token ids (special tokens added, cut to the context) and a
``detail`` the answer is made from (the engine keeps it beside the model's row):

==================== =========================================== ===================================
task                 the model's row for an input                detail
==================== =========================================== ===================================
text-classification  scores per label (softmax, or sigmoid for   None
                     multi-label and one-label models)
token-classification scores per token per label (softmax)        ``TokenSpans``
fill-mask            scores per vocabulary entry at the mask     ``MaskDetail``
question-answering   start and end logits per token [tokens, 2]  ``AnswerSpans``
==================== =========================================== ===================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized, fit_pair, plain_tokenizer, second_segment
from inferd.backends.token_labels import TokenSpans, entities, subword_flags
from inferd.catalog import Task
from inferd.errors import UnsupportedInput


@dataclass(frozen=True, slots=True)
class QuestionInput:
    """A question about a context (question-answering)."""

    question: str
    context: str


@dataclass(slots=True)
class MaskDetail:
    """Where the mask is among the model's input ids (None: cut off with the end of the text),
    and the ids, to write the sequence back with each candidate in the mask's place."""

    position: int | None
    ids: list[int]


@dataclass(slots=True)
class AnswerSpans:
    """The context's tokens in the model's input: ``first`` .. ``last`` (inclusive), each with
    its characters in the context."""

    first: int
    last: int
    spans: list[tuple[int, int]]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class TextTaskBackend(EncoderBackend):
    """A model for one of the text tasks. Subclasses load ``self.rust`` (a ``tokenizers.Tokenizer``
    with no truncation or padding), set ``labels`` / ``multi_label`` / ``context_length`` /
    ``mask_token`` as the task needs, and run ``forward``."""

    normalizes = False
    labels: list[str] = []
    multi_label: bool = False  # text-classification: independent labels (sigmoid), not one of them
    mask_token: str | None = None  # fill-mask: the model's mask token
    tasks: frozenset[Task] = frozenset()  # what the backend can serve

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def ignored(self) -> frozenset[str]:
        """token-classification: labels never shown (catalog ``options.ignore_labels``; default ``O``)."""
        return frozenset(self.options.get("ignore_labels") or ["O"])

    def check_task(self) -> None:
        if self.task not in self.tasks:
            raise ValueError(f"backend {self.spec.backend} serves {', '.join(sorted(self.tasks))}, "
                             f"not {self.task.value}")

    def setup_tokenizer(self, tokenizer) -> None:
        """``tokenizer``: the Rust tokenizer (copied here without truncation or padding)."""
        self.rust = plain_tokenizer(tokenizer)
        self.vocab_size = self.rust.get_vocab_size()
        self._specials = self.rust.num_special_tokens_to_add(False)
        self._pair_specials = self.rust.num_special_tokens_to_add(True)
        model = self.rust.model
        self._prefix = getattr(model, "continuing_subword_prefix", None)
        self._unk = self.rust.token_to_id(getattr(model, "unk_token", None) or "[UNK]")

    def probe_input(self) -> EncoderInput:
        if self.task is Task.QUESTION_ANSWERING:
            return QuestionInput("hello?", "hello " * 64)
        if self.task is Task.FILL_MASK:
            return "hello " * 63 + (self.mask_token or "")
        return super().probe_input()

    # ------------------------------------------------------------------ tokenisation
    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        if self.task is Task.QUESTION_ANSWERING:
            return [self._question(x) for x in inputs]
        texts = []
        for x in inputs:
            if not isinstance(x, str):
                raise UnsupportedInput(f"model {self.spec.id} takes text", param="input")
            texts.append(x)
        encodings = self.rust.encode_batch(texts, add_special_tokens=False)
        out = []
        room = max(self.context_length - self._specials, 1)
        for text, enc in zip(texts, encodings, strict=True):
            original = len(enc.ids) + self._specials
            if len(enc.ids) > room:
                enc.truncate(room)
            full = self.rust.post_process(enc, add_special_tokens=True)
            detail = None
            if self.task is Task.TOKEN_CLASSIFICATION:
                detail = self._spans(text, full)
            elif self.task is Task.FILL_MASK:
                mask = self.rust.token_to_id(self.mask_token) if self.mask_token else None
                position = full.ids.index(mask) if mask is not None and mask in full.ids else None
                detail = MaskDetail(position, list(full.ids))
            out.append(Tokenized(list(full.ids), original, detail=detail))
        return out

    def _spans(self, text: str, enc) -> TokenSpans:
        special = enc.special_tokens_mask
        offsets = [tuple(o) for o in enc.offsets]
        flags = subword_flags(text, enc.tokens, offsets, self._prefix, [i == self._unk for i in enc.ids])
        return TokenSpans([None if special[i] else offsets[i] for i in range(len(offsets))], flags)

    def _question(self, x: EncoderInput) -> Tokenized:
        if not isinstance(x, QuestionInput):
            raise UnsupportedInput(f"model {self.spec.id} answers a question about a context", param="input")
        question = self.rust.encode(x.question, add_special_tokens=False)
        context = self.rust.encode(x.context, add_special_tokens=False)
        original = len(question.ids) + len(context.ids) + self._pair_specials
        fit_pair(question, context, self.context_length - self._pair_specials)
        full = self.rust.post_process(question, context, add_special_tokens=True)
        in_context = [i for i, s in enumerate(full.sequence_ids) if s == 1]
        offsets = [tuple(o) for o in full.offsets]
        first, last = (in_context[0], in_context[-1]) if in_context else (0, -1)
        spans = AnswerSpans(first, last, [offsets[i] for i in range(first, last + 1)])
        return Tokenized(list(full.ids), original, detail=spans)

    # ------------------------------------------------------------------ answers from rows
    def token_types(self, batch: Sequence[Sequence[int]], sep_id: int | None) -> np.ndarray:
        """Segment ids: the context of a question-answering pair is segment 1; one text, all 0."""
        return second_segment(batch, sep_id if self.task is Task.QUESTION_ANSWERING else None)

    def rows(self, logits: np.ndarray, batch: Sequence[Sequence[int]]) -> list:
        """The model's logits for a padded batch ([batch, labels] or [batch, tokens, ...]) -> the
        task's row for each input (see the table above)."""
        task = self.task
        if task is Task.TEXT_CLASSIFICATION:
            scores = sigmoid(logits) if self.multi_label or logits.shape[-1] == 1 else softmax(logits)
            return list(scores.astype(np.float32))
        if task is Task.TOKEN_CLASSIFICATION:
            return [softmax(logits[i, : len(ids)]).astype(np.float32) for i, ids in enumerate(batch)]
        if task is Task.QUESTION_ANSWERING:
            return [logits[i, : len(ids)].astype(np.float32) for i, ids in enumerate(batch)]
        if task is Task.FILL_MASK:  # logits [batch, 1, vocab]: at each input's mask (see mask_positions)
            mask = self.rust.token_to_id(self.mask_token)
            return [softmax(logits[i, 0]).astype(np.float32) if mask in ids else np.zeros(0, np.float32)
                    for i, ids in enumerate(batch)]
        raise ValueError(f"no rows for {task.value}")

    def mask_positions(self, batch: Sequence[Sequence[int]]) -> list[int]:
        """fill-mask: where each input's mask is (0 where the mask was cut off: that row is not used)."""
        mask = self.rust.token_to_id(self.mask_token)
        return [list(ids).index(mask) if mask in ids else 0 for ids in batch]

    def labelled(self, scores: np.ndarray, top_k: int | None) -> list[dict]:
        """text-classification: the best ``top_k`` labels (all when None), best first."""
        order = np.argsort(-scores, kind="stable")[: top_k or len(scores)]
        return [{"label": self.labels[i], "score": float(scores[i])} for i in order]

    def entities(self, text: str, scores: np.ndarray, spans: TokenSpans, strategy: str) -> list[dict]:
        """token-classification: the entities in ``text`` (see ``token_labels``)."""
        return entities(text, scores, spans, self.labels, strategy, self.ignored)

    def fills(self, scores: np.ndarray, detail: MaskDetail, top_k: int) -> list[dict]:
        """fill-mask: the ``top_k`` likeliest tokens for the mask, each with the text it makes."""
        k = min(top_k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        out = []
        for token in top:
            ids = list(detail.ids)
            ids[detail.position] = int(token)
            out.append({"sequence": self.rust.decode(ids, skip_special_tokens=True), "score": float(scores[token]),
                        "token": int(token), "token_str": self.rust.decode([int(token)])})
        return out

    def answers(self, logits: np.ndarray, detail: AnswerSpans, context: str, top_k: int = 1,
                max_answer_len: int = 15) -> list[dict]:
        """question-answering: the ``top_k`` likeliest spans of the context (the start and the end
        token's probabilities, each a softmax over the context's tokens, multiplied), at most
        ``max_answer_len`` tokens long; ``answer`` is the context's own characters."""
        first, last = detail.first, detail.last
        if last < first:
            return []
        start = softmax(logits[first : last + 1, 0].astype(np.float64))
        end = softmax(logits[first : last + 1, 1].astype(np.float64))
        outer = np.triu(np.tril(start[:, None] * end[None, :], max_answer_len - 1))
        flat = outer.ravel()
        k = min(top_k, int(np.count_nonzero(flat)) or 1)
        best = np.argsort(-flat, kind="stable")[:k]
        out = []
        for index in best:
            s, e = divmod(int(index), outer.shape[1])
            begin, finish = detail.spans[s][0], detail.spans[e][1]
            out.append({"answer": context[begin:finish], "score": float(flat[index]), "start": begin, "end": finish})
        return out
