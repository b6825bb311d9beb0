"""text2text-generation with transformers (T5, FLAN-T5, BART, mT5, ...: any
``AutoModelForSeq2SeqLM`` id or directory) on the encoder engine: the inputs of a batch (from
any requests) go through ``generate`` together; inputs whose generation settings differ are
generated in one pass per setting. Each row is the generated text, its token count and the
input's (an input weighs in a batch as its tokens and its new tokens; it is billed its own).

Catalog ``options``: none needed (``trust_remote_code`` is never on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from inferd.backends.base import EncoderBackend, EncoderInput, Tokenized, plain_tokenizer, right_pad
from inferd.errors import UnsupportedInput

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (or beam search with num_beams > 1)
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    num_beams: int = 1

    def generate_kwargs(self) -> dict:
        sample = self.temperature > 0
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": sample,
                  "repetition_penalty": self.repetition_penalty}
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        return kwargs


@dataclass(frozen=True, slots=True)
class Text2TextInput:
    text: str
    params: GenerationParams = field(default_factory=GenerationParams)


class Prompt(list):
    """An input's token ids, carrying its generation settings into the batch (a plain list of
    ids, as the engine's warm-up slices make, generates with the defaults)."""

    params: GenerationParams = GenerationParams()


_PROBE = GenerationParams(max_new_tokens=8)


class Seq2SeqBackend(EncoderBackend):
    normalizes = False
    dimensions = 1
    # generating for 16 inputs costs little more than for 8: the engine waits up to a quarter of a
    # batch's cost for more inputs, and runs one batch at a time on every core (each decoding step is
    # Python between small matrix products: two batches at once fight over the interpreter)
    fill_share = 0.25
    workers = 1

    def load(self) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.resolve()
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(path), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.spec.id}: a fast (Rust) tokenizer is needed")
        self.rust = plain_tokenizer(self.tokenizer.backend_tokenizer)
        self._specials = self.rust.num_special_tokens_to_add(False)
        self.vocab_size = len(self.tokenizer)
        config = self.model.config
        own = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        positions = getattr(config, "max_position_embeddings", None)  # T5 has none (relative positions)
        self.context_length = self.fit_context(min(own, int(positions)) if positions else min(own, 4096))
        self._pad_id = self.tokenizer.pad_token_id or 0
        log.info("loaded text2text model %s: context %d tokens", self.spec.id, self.context_length)

    def probe_input(self) -> EncoderInput:
        return Text2TextInput("hello " * 64, _PROBE)

    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        items = []
        for x in inputs:
            if not isinstance(x, Text2TextInput):
                raise UnsupportedInput(f"model {self.spec.id} rewrites text", param="input")
            items.append(x)
        encodings = self.rust.encode_batch([x.text for x in items], add_special_tokens=False)
        room = max(self.context_length - self._specials, 1)
        out = []
        for x, enc in zip(items, encodings, strict=True):
            original = len(enc.ids) + self._specials
            if len(enc.ids) > room:
                enc.truncate(room)
            ids = Prompt(self.rust.post_process(enc, add_special_tokens=True).ids)
            ids.params = x.params
            # what it weighs in a batch: its input, and each new token as much as an input token
            out.append(Tokenized(ids, original, cost=len(ids) + x.params.max_new_tokens * x.params.num_beams))
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> list:
        import torch

        groups: dict[GenerationParams, list[int]] = {}
        for i, ids in enumerate(batch):
            groups.setdefault(getattr(ids, "params", GenerationParams()), []).append(i)
        rows: list = [None] * len(batch)
        for params, members in groups.items():
            input_ids, mask = right_pad([batch[i] for i in members], self._pad_id)
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, pad_token_id=self._pad_id,
                                          **params.generate_kwargs())
            for i, sequence in zip(members, out.tolist(), strict=True):
                made = [t for t in sequence[1:] if t != self._pad_id]  # after the decoder's start token
                rows[i] = (self.tokenizer.decode(sequence, skip_special_tokens=True), len(made), len(batch[i]))
        return rows

    def close(self) -> None:
        self.model = None
