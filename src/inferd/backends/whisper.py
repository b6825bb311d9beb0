"""Whisper through faster-whisper (CTranslate2): speech to text, batched across requests.

faster-whisper's own pipelines decode one file at a time. Here the pieces it is built from
(Silero voice-activity detection, log-mel features, prompts, CTranslate2's batched
``generate``, timestamp splitting, word alignment) run with the speech engine in between: the
chunks of every request in flight are decoded in one batch, each row with its own prompt
(task, language, initial prompt), as faster-whisper's ``BatchedInferencePipeline`` does for
the chunks of one file.

Options (catalog ``options``): ``compute_type`` (int8, the default on CPU; float32, ...),
``beam_size`` (5, faster-whisper's default; 1 is greedy), ``parts`` (sources whose
``model.bin.partN`` files join the source's into one ``model.bin``, for weights shipped in
pieces), ``device`` (cpu, cuda).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from inferd.backends.base import ChunkText, SpeechChunk, SpeechRecognitionBackend
from inferd.catalog.sources import resolve_source

log = logging.getLogger(__name__)

_PART = re.compile(r"^model\.bin\.part(\d+)$")
_PUNCT_BEFORE = "\"'“¿([{-"
_PUNCT_AFTER = "\"'.。,，!！?？:：”)]}、"


def join_parts(sources: list[Path], target_root: Path, label: str) -> Path:
    """One model directory from weights shipped as ``model.bin.partN`` files spread over several
    directories: joined once into ``target_root`` (written aside, then renamed), reused after."""
    parts = sorted((p for d in sources for p in d.iterdir() if _PART.match(p.name)),
                   key=lambda p: int(_PART.match(p.name).group(1)))
    if not parts:
        raise FileNotFoundError(f"no model.bin or model.bin.partN files in {', '.join(map(str, sources))}")
    fingerprint = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:16]
    target = target_root / f"{label}-{fingerprint}"
    if (target / "model.bin").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    total = sum(p.stat().st_size for p in parts)
    log.info("joining %d parts of %s (%.0f MB) into %s", len(parts), label, total / 1e6, target)
    with open(staging / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, out, 16 << 20)
    for d in sources:
        for f in d.iterdir():
            if f.is_file() and not _PART.match(f.name) and not (staging / f.name).exists():
                shutil.copy2(f, staging / f.name)
    staging.rename(target)
    return target


class WhisperBackend(SpeechRecognitionBackend):
    def load(self) -> None:
        from faster_whisper import WhisperModel

        path = self.resolve()
        if not (path / "model.bin").is_file():
            extra = [resolve_source(s) for s in self.options.get("parts", ())]
            root = (self.cache_dir or path.parent) / "whisper"
            path = join_parts([path, *extra], root, re.sub(r"[^\w.-]", "_", self.spec.id))
        self.model = WhisperModel(
            str(path),
            device=self.options.get("device", "cpu"),
            compute_type=self.options.get("compute_type", "int8"),
            cpu_threads=self.threads or 0,
            num_workers=1,
        )
        self.multilingual = bool(self.model.model.is_multilingual)
        self.beam_size = int(self.options.get("beam_size", 5))
        self.frames_per_second = self.model.frames_per_second
        log.info("loaded %s: whisper, %s, beam %d", self.spec.id,
                 "multilingual" if self.multilingual else "English only", self.beam_size)

    @property
    def languages(self) -> list[str]:
        return list(self.model.supported_languages)

    @lru_cache(maxsize=256)  # noqa: B019 - one backend per model, a few (task, language) pairs
    def _tokenizer(self, task: str, language: str):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.model.hf_tokenizer, self.multilingual, task=task, language=language)

    # --- cutting audio into chunks (the engine's preparation threads)

    def speech(self, audio: np.ndarray, *, vad: bool = True) -> list[dict]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if vad:
            return get_speech_timestamps(audio, VadOptions(max_speech_duration_s=self.chunk_seconds,
                                                           min_silence_duration_ms=160))
        limit = self.chunk_seconds * self.sampling_rate
        return [{"start": s, "end": min(s + limit, len(audio))} for s in range(0, len(audio), limit)]

    def features(self, audio: np.ndarray, chunk: dict) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        piece = np.concatenate([audio[s["start"]:s["end"]] for s in chunk["segments"]])
        return pad_or_trim(self.model.feature_extractor(piece)[..., :-1])

    def restore(self, segments: list[dict], speech: list[dict]) -> list[dict]:
        from faster_whisper.vad import SpeechTimestampsMap

        times = SpeechTimestampsMap(speech, self.sampling_rate)
        for segment in segments:
            words = segment.get("words")
            if words:
                for word in words:
                    index = times.get_chunk_index((word["start"] + word["end"]) / 2)
                    word["start"] = times.get_original_time(word["start"], index)
                    word["end"] = times.get_original_time(word["end"], index)
                segment["start"], segment["end"] = words[0]["start"], words[-1]["end"]
            else:
                segment["start"] = times.get_original_time(segment["start"])
                segment["end"] = times.get_original_time(segment["end"], is_end=True)
        return segments

    def _prompt_tokens(self, prompt: str | None) -> list[int]:
        if not prompt:
            return []
        tokens = self.model.hf_tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids
        return tokens[-(self.model.max_length // 2 - 1):]  # what get_prompt keeps

    def batch_key(self, prompt: str | None) -> object:
        # CTranslate2 decodes a batch only when <|startoftranscript|> is at one position in every
        # row: rows share a batch when their initial prompts have as many tokens
        return len(self._prompt_tokens(prompt))

    # --- one batch (the engine's thread)

    def transcribe(self, chunks: Sequence[SpeechChunk], temperature: float) -> list[ChunkText]:
        from faster_whisper.transcribe import get_compression_ratio

        model = self.model
        encoded = model.encode(np.stack([c.features for c in chunks]))
        languages: list[tuple[str, float]] = []
        detected = None
        for i, c in enumerate(chunks):
            if c.language is not None or not self.multilingual:
                languages.append((c.language or "en", 1.0))
                continue
            if detected is None:
                detected = model.model.detect_language(encoded)
            token, probability = detected[i][0]
            languages.append((token[2:-2], probability))
        tokenizers = [self._tokenizer(c.task, lang) for c, (lang, _) in zip(chunks, languages, strict=True)]
        prompts = [model.get_prompt(tok, self._prompt_tokens(c.prompt), without_timestamps=False)
                   for c, tok in zip(chunks, tokenizers, strict=True)]
        if temperature > 0:
            decoding = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        else:
            decoding = {"beam_size": self.beam_size}
        results = model.model.generate(
            encoded, prompts, max_length=model.max_length, suppress_blank=True, suppress_tokens=[-1],
            return_scores=True, return_no_speech_prob=True, **decoding,
        )
        out = []
        for c, tok, (lang, probability), result in zip(chunks, tokenizers, languages, results, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            pieces, _, _ = model._split_segments_by_timestamps(
                tokenizer=tok, tokens=tokens, time_offset=c.offset,
                segment_size=int(math.ceil(c.duration) * self.frames_per_second),
                segment_duration=c.duration, seek=0,
            )
            segments = []
            for piece in pieces:
                text = tok.decode(piece["tokens"])
                segments.append({
                    "seek": int(c.offset * self.frames_per_second), "start": piece["start"], "end": piece["end"],
                    "text": text, "tokens": piece["tokens"], "avg_logprob": avg_logprob,
                    "compression_ratio": get_compression_ratio(text), "no_speech_prob": result.no_speech_prob,
                })
            out.append(ChunkText(lang, probability, segments))
        self._add_words(chunks, tokenizers, encoded, out)
        return out

    def _add_words(self, chunks, tokenizers, encoded, out: list[ChunkText]) -> None:
        """Word timestamps (cross-attention alignment) for the rows that asked, grouped by tokenizer."""
        rows = [i for i, c in enumerate(chunks) if c.words and out[i].segments]
        if not rows:
            return
        import ctranslate2

        for tok in {id(tokenizers[i]): tokenizers[i] for i in rows}.values():
            mine = [i for i in rows if tokenizers[i] is tok]
            view = encoded if len(mine) == len(chunks) else \
                ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[mine]))
            self.model.add_word_timestamps(
                [out[i].segments for i in mine], tok, view,
                [int(math.ceil(chunks[i].duration) * self.frames_per_second) for i in mine],
                _PUNCT_BEFORE, _PUNCT_AFTER, 0.0,
            )
