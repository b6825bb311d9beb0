"""What a runtime must provide. A new backend is one module here plus one registry line."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferd.catalog.sources import resolve_source
from inferd.catalog.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class RerankPair:
    """One (query, document) pair for a reranker, with the judge's instruction if any."""

    query: str
    document: str
    instruction: str | None = None


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image to encode (embed, classify, detect in), decoded: a PIL image."""

    image: Any


EncoderInput = str | Sequence[int] | RerankPair | ImageInput


@dataclass(slots=True)
class Tokenized:
    """One input as the model will see it."""

    ids: Any  # token ids with special tokens, truncated to the context when allowed; an image's pixels
    original_length: int  # tokens before truncation (special tokens included)
    cost: int | None = None  # an image: what it weighs in a batch, in tokens (its patches); None: len(ids)
    detail: Any = None  # what the answer needs besides the model's row (token offsets, ...): kept by the engine

    @property
    def length(self) -> int:
        return len(self.ids) if self.cost is None else self.cost


class Backend(ABC):
    """A runtime that owns one loaded model."""

    def __init__(
        self,
        spec: ModelSpec,
        source: str,
        options: dict[str, Any],
        threads: int | None = None,
        cache_dir: Path | None = None,
    ):
        self.spec = spec
        self.source = source
        self.options = options
        self.threads = threads  # intra-op threads per forward pass; None: the runtime's default
        self.cache_dir = cache_dir  # where converted checkpoints and compiled artefacts go
        self.path: Path | None = None

    def fit_context(self, own: int) -> int:
        """The model's own context length, cut to the catalog's ``limits.context_length`` if smaller."""
        wanted = self.spec.limits.context_length
        return int(min(own, wanted) if wanted else own)

    def resolve(self) -> Path:
        """Where the weights are (may download: call it from load(), off the event loop)."""
        self.path = resolve_source(self.source)
        return self.path

    @abstractmethod
    def load(self) -> None:
        """Resolve the source and load weights; runs in a worker thread, may take long,
        raises with a clear message."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what load() took."""


class EncoderBackend(Backend):
    """An input in, one vector out, batched by the encoder engine: embedding models, rerankers."""

    context_length: int
    dimensions: int
    vocab_size: int
    normalizes: bool  # whether the model's own output is L2-normalised
    modalities: frozenset[str] = frozenset({"text"})  # what tokenize() takes: "text", "image"
    workers: int | None = None  # forward passes at once (None: the engine_workers setting)
    fill_share = 0.0  # how long a part-filled batch may wait for more, as a share of its cost (see _fill)

    @abstractmethod
    def tokenize(self, inputs: Sequence[EncoderInput]) -> list[Tokenized]:
        """Texts or token ids -> ids with special tokens; thread-safe with forward()."""

    @abstractmethod
    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray | list:
        """A batch of token id lists -> float32 array [len(batch), dimensions] (embedding models), or
        a row per input of whatever the task's answer is made from (the text tasks: scores, a
        token's label scores, generated text)."""

    def probe_input(self) -> EncoderInput:
        """A long-ish input the engine tokenises to warm the model up and measure its cost."""
        return "hello " * 64


class RerankBackend(EncoderBackend):
    """A reranker on the encoder engine. ``scoring`` says what the engine's rows are:

    * ``"pairs"`` (cross-encoders, LM judges): inputs are ``RerankPair``s, each row one raw
      score (a logit: log-odds of relevance);
    * ``"cosine"`` (bi-encoders): inputs are texts, rows are embeddings; the raw score of a
      pair is the cosine of its query's and document's embeddings.

    ``to_unit`` maps raw scores to relevance in [0, 1].
    """

    scoring: str = "pairs"
    dimensions = 1  # pair scorers: one raw score a row
    normalizes = False

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        return relevance(self.scoring, raw)

    def probe_input(self) -> EncoderInput:
        return RerankPair("hello", "hello " * 64) if self.scoring == "pairs" else super().probe_input()


def relevance(scoring: str, raw: np.ndarray) -> np.ndarray:
    """Raw rerank scores -> relevance in [0, 1]: for logits (``pairs``: log-odds of relevance) the
    sigmoid; for cosines (``cosine``) (cosine + 1) / 2, in the cosine's order."""
    if scoring == "cosine":
        return np.clip((raw + 1.0) / 2.0, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(-raw))


def padded(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> (input_ids, attention_mask), both numpy int64 [len(batch), longest]."""
    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def right_pad(batch: Sequence[Sequence[int]], pad_id: int):
    """Token id lists -> (input_ids, attention_mask), both torch int64 [len(batch), longest]."""
    import torch

    input_ids, mask = padded(batch, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def second_segment(batch: Sequence[Sequence[int]], sep_id: int | None) -> np.ndarray:
    """Segment ids of pairs ([CLS] first [SEP] second [SEP]): 1 after the first [SEP], int64 [batch, longest]."""
    types = np.zeros((len(batch), max(len(ids) for ids in batch)), dtype=np.int64)
    if sep_id is not None:
        for row, ids in enumerate(batch):
            if sep_id in ids:
                types[row, list(ids).index(sep_id) + 1 : len(ids)] = 1
    return types


def fit_pair(first, second, room: int) -> None:
    """Cut two ``tokenizers`` encodings to ``room`` tokens together: the second gives way, but a
    huge first one (a query, a question) keeps at most half the room."""
    if len(first.ids) > room // 2 and len(first.ids) + len(second.ids) > room:
        first.truncate(max(room // 2, room - len(second.ids)))
    if len(first.ids) + len(second.ids) > room:
        second.truncate(max(room - len(first.ids), 0))


def plain_tokenizer(tokenizer):
    """A private copy of a Rust tokenizer (``tokenizers.Tokenizer``) with no truncation or padding."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


@dataclass(slots=True)
class SpeechChunk:
    """Up to 30 s of one request's speech (voice-activity chunks joined), ready for the model."""

    features: np.ndarray  # log-mel [n_mels, frames], padded to the model's window
    offset: float  # where the chunk starts in the audio it was cut from (seconds)
    duration: float  # seconds of audio in it
    task: str = "transcribe"  # or "translate"
    language: str | None = None  # None: detected per chunk (multilingual models)
    prompt: str | None = None  # the request's initial prompt
    words: bool = False  # word timestamps


@dataclass(slots=True)
class ChunkText:
    """What the model made of one chunk: segments with times relative to the chunk's audio."""

    language: str
    language_probability: float
    segments: list[dict]  # {start, end, text, tokens, avg_logprob, compression_ratio, no_speech_prob[, words]}


class SpeechRecognitionBackend(Backend):
    """Speech to text, batched by the speech engine: chunks of many requests decoded together."""

    sampling_rate: int = 16000
    chunk_seconds: int = 30
    multilingual: bool

    @abstractmethod
    def speech(self, audio: np.ndarray, *, vad: bool = True) -> list[dict]:
        """Where 16 kHz mono audio holds speech: [{start, end}] in samples, each at most
        ``chunk_seconds`` (with ``vad`` off: the audio in windows of ``chunk_seconds``)."""

    @abstractmethod
    def features(self, audio: np.ndarray, chunk: dict) -> np.ndarray:
        """The model's input for one chunk: ``chunk["segments"]`` (samples of ``audio``) joined."""

    def batch_key(self, prompt: str | None) -> object:
        """Chunks whose prompts give the same key may share a batch (whisper on CTranslate2: the
        same number of prompt tokens)."""
        return None

    @abstractmethod
    def transcribe(self, chunks: Sequence[SpeechChunk], temperature: float) -> list[ChunkText]:
        """Decode a batch of chunks (from any requests, one ``batch_key``) in one pass of the model."""

    @abstractmethod
    def restore(self, segments: list[dict], speech: list[dict]) -> list[dict]:
        """Map times of chunks cut from ``speech`` back to the original audio's."""


@dataclass(frozen=True, slots=True)
class Voice:
    """One voice a text-to-speech model speaks with."""

    id: str
    name: str
    language: str = "en-us"
    gender: str | None = None


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n{2,}")
_CLAUSE_END = re.compile(r"(?<=[,;:、，；：])\s+")
# a first sentence longer than this is cut at its first clause pause that leaves both halves at
# least FRAGMENT_MIN_CHARS long: the first audio of a stream is then made in about half the time
# (Piper, 2 cores: 410 ms for "The weather is lovely today, so we are going to the beach.", 200 ms
# for its first clause), as streaming TTS servers do (RealtimeTTS's fast_sentence_fragment)
FIRST_FRAGMENT_CHARS = 40
FRAGMENT_MIN_CHARS = 12


def first_fragment(sentences: list[str]) -> list[str]:
    """``sentences`` with a long first sentence cut in two at its first clause pause, if any."""
    if not sentences or len(sentences[0]) <= FIRST_FRAGMENT_CHARS:
        return sentences
    head = sentences[0]
    for match in _CLAUSE_END.finditer(head):
        if match.start() >= FRAGMENT_MIN_CHARS and len(head) - match.end() >= FRAGMENT_MIN_CHARS:
            return [head[: match.start()], head[match.end():], *sentences[1:]]
    return sentences


class SpeechSynthesisBackend(Backend):
    """Text to speech, run by the synthesis engine: one sentence at a time, so audio streams."""

    sample_rate: int
    voices: list[Voice]

    def sentences(self, text: str) -> list[str]:
        """The text cut where the voice pauses (sentence ends, blank lines; a long first sentence
        also at its first clause pause, see ``first_fragment``), in order."""
        return first_fragment([p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()])

    @abstractmethod
    def synthesize(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        """One sentence as mono int16 samples at ``sample_rate``; thread-safe."""


@dataclass(frozen=True, slots=True)
class ImageBatchKey:
    """What the images of one batch share: requests with equal keys are generated together."""

    mode: str  # "text" (text to image), "image" (image to image), "inpaint"
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str | None = None  # a scheduler class name the pipeline accepts; None: its own
    strength: float = 1.0  # image to image and inpainting: how far from the given image


@dataclass(slots=True)
class ImageRequest:
    """One request's share of a batch: ``count`` images from one prompt, seeds ``seed``, ``seed + 1``..."""

    prompt: str
    count: int
    seed: int
    negative_prompt: str | None = None
    image: Any = None  # PIL image at the key's size (image to image, inpainting)
    mask: Any = None  # PIL image, white where to paint (inpainting)


@dataclass(slots=True)
class MadeImage:
    image: Any  # PIL image
    nsfw: bool


class ImageGenerationBackend(Backend):
    """Images from text (and from images), batched by the image engine: the requests of one
    ``ImageBatchKey`` run through the pipeline in one call."""

    default_size: tuple[int, int]  # width, height the pipeline was trained at
    default_steps: int
    default_guidance: float
    size_multiple: int = 8  # widths and heights must be multiples of this
    modes: frozenset[str] = frozenset({"text"})  # what generate() can do
    schedulers: tuple[str, ...] = ()  # scheduler class names a request may choose

    @abstractmethod
    def generate(self, key: ImageBatchKey, requests: Sequence[ImageRequest], stop) -> list[list[MadeImage]]:
        """Each request's images, in order; ``stop()`` (checked between denoising steps) says
        every request of the batch has left: the pipeline may end early, its images unused."""

    prompt_tokenizer: Any = None  # the text encoder's tokenizer, where there is one

    def prompt_tokens(self, text: str) -> int:
        """Tokens the text encoder reads of a prompt (for usage); 0 when unknown."""
        return count_prompt_tokens(self.prompt_tokenizer, text)


def count_prompt_tokens(tokenizer, text: str) -> int:
    """Tokens a text encoder reads of a prompt (its tokenizer cuts at ``model_max_length``); 0
    without a tokenizer."""
    if tokenizer is None:
        return 0
    return min(len(tokenizer(text).input_ids), tokenizer.model_max_length)
