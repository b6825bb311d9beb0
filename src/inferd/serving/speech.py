"""Speech to text: one call for every dialect (OpenAI's audio routes, DeepInfra's native
automatic-speech-recognition), then each dialect's response shape.

Audio arrives as an upload Starlette has already spooled to disk past 1 MB, or as a data URL;
it is decoded (any container and codec FFmpeg reads: wav, mp3, m4a/aac, ogg/opus, flac, webm)
and resampled once to 16 kHz mono by PyAV, off the event loop. Billed by the second of input
audio (pricing ``input_length``).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, BinaryIO

import numpy as np

from inferd.catalog import ModelRef, Task, Units
from inferd.engine.pool import ModelPool
from inferd.engine.speech import SpeechModel, SpeechRequest, Transcribed
from inferd.errors import InputTooLarge, InvalidRequest
from inferd.serving.context import RequestContext
from inferd.serving.metering import Charge, Meter
from inferd.settings import Settings

RATE = 16000
BLOCK_S = 300.0  # seconds of audio decoded, cut and held at a time per request
_DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]*)(?:;[\w=.-]+)*;base64,", re.IGNORECASE)


def decode_blocks(source: BinaryIO | bytes, max_seconds: float, max_bytes: int,
                  block_seconds: float = BLOCK_S) -> Iterator[np.ndarray]:
    """16 kHz mono float32 samples of any audio FFmpeg reads, ``block_seconds`` at a time (a long
    file never lies whole in memory); 400 for what is not audio, 413 past ``max_bytes`` or
    ``max_seconds``. Undecodable frames are skipped, and a file cut short gives what it holds.
    Iterated on the speech engine's preparation threads."""
    import av

    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    size = source.seek(0, io.SEEK_END)
    if size == 0:
        raise InvalidRequest("the file is empty", param="file")
    if size > max_bytes:
        raise InputTooLarge(f"the audio file is larger than {max_bytes} bytes", param="file")
    source.seek(0)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except Exception as exc:  # noqa: BLE001 - FFmpeg's many errors: the client sent something unreadable
        raise InvalidRequest(f"the file could not be decoded as audio ({type(exc).__name__}: {exc})",
                             param="file") from None
    with container:
        if not container.streams.audio:
            raise InvalidRequest("the file has no audio stream", param="file")
        declared = container.duration / av.time_base if container.duration else None
        if declared is not None and declared > max_seconds + 1:
            raise InputTooLarge(f"the audio is {declared:.0f} s long; at most {max_seconds:.0f} s", param="file")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        block, pending, held, total = int(block_seconds * RATE), [], 0, 0
        frames = container.decode(audio=0)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.InvalidDataError:
                continue  # a damaged frame: skipped, as faster-whisper does
            except Exception as exc:  # noqa: BLE001 - the stream ends here (a truncated file)
                if total == 0 and not pending:
                    raise InvalidRequest(f"the file could not be decoded as audio ({type(exc).__name__}: {exc})",
                                         param="file") from None
                break
            for piece in resampler.resample(frame):
                pending.append(piece.to_ndarray().reshape(-1))
                held += len(pending[-1])
            if total + held > max_seconds * RATE:
                raise InputTooLarge(f"the audio is longer than {max_seconds:.0f} s", param="file")
            if held >= block:
                total += held
                yield np.concatenate(pending).astype(np.float32) / 32768.0
                pending, held = [], 0
        for piece in resampler.resample(None):
            pending.append(piece.to_ndarray().reshape(-1))
        if pending:
            samples = np.concatenate(pending)
            total += len(samples)
            if samples.size:
                yield samples.astype(np.float32) / 32768.0
        if total == 0:
            raise InvalidRequest("the audio is empty (0 s)", param="file")


def from_data_url(value: str, max_bytes: int) -> bytes:
    """The bytes of ``data:audio/...;base64,...`` (or of bare base64)."""
    match = _DATA_URL.match(value)
    encoded = value[match.end():] if match else value
    if len(encoded) * 3 // 4 > max_bytes:
        raise InputTooLarge(f"the audio is larger than {max_bytes} bytes", param="audio")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("audio must be a file upload, or a data URL (data:audio/...;base64,...)",
                             param="audio") from None



@dataclass(slots=True)
class AudioFile:
    """A request's audio file, decoded block by block when called (``decode_blocks``, on the
    speech engine's threads). Sent to a Ray Serve replica, it travels as the file's bytes (at
    most ``max_bytes`` and one more: the replica refuses what is larger)."""

    source: BinaryIO | bytes
    max_seconds: float
    max_bytes: int
    block_seconds: float = BLOCK_S

    def __call__(self) -> Iterator[np.ndarray]:
        return decode_blocks(self.source, self.max_seconds, self.max_bytes, self.block_seconds)

    def __reduce__(self):
        data = self.source
        if not isinstance(data, bytes | bytearray):
            data.seek(0)
            data = data.read(self.max_bytes + 1)
        return AudioFile, (bytes(data), self.max_seconds, self.max_bytes, self.block_seconds)

@dataclass(slots=True)
class SpeechQuery:
    model: str
    audio: BinaryIO | bytes
    version: str | None = None
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    words: bool = False


@dataclass(slots=True)
class Transcript:
    ref: ModelRef
    task: str
    duration: float
    language: str = "en"
    segments: list[dict] = field(default_factory=list)
    charge: Charge | None = None

    @property
    def text(self) -> str:
        return "".join(s["text"] for s in self.segments).strip()

    @property
    def words(self) -> list[dict]:
        return [w for s in self.segments for w in s.get("words") or ()]


class SpeechService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self._max_seconds = settings.max_audio_seconds
        self.max_bytes = settings.max_audio_bytes
        self.block_seconds = BLOCK_S

    async def stream(self, query: SpeechQuery, ctx: RequestContext) -> AsyncIterator[tuple[Transcript, list[dict]]]:
        """The transcript as it grows: (transcript so far, the segments just added), chunk by chunk;
        the last item carries the charge."""
        engine = self._pool.get(query.model, query.version, Task.AUTOMATIC_SPEECH_RECOGNITION, ctx.viewer)
        await engine.ready()
        assert isinstance(engine, SpeechModel)
        if query.temperature < 0 or query.temperature > 1:
            raise InvalidRequest("temperature must be between 0 and 1", param="temperature")
        # decoded by the engine, on its preparation threads, block by block
        decode = AudioFile(query.audio, self._max_seconds, self.max_bytes, self.block_seconds)
        request = SpeechRequest(decode, query.task, _language(query.language), query.prompt, query.temperature,
                                query.words)
        engine.check_request(request)
        transcript = Transcript(engine.ref, query.task, 0.0)
        async with self._meter.track(ctx, engine.ref) as metered:
            first = True
            async for piece in engine.transcribe(request):
                transcript.duration = request.seconds  # decoded so far
                metered.consume(Units(input_seconds=transcript.duration))
                added = _numbered(piece, len(transcript.segments))
                if first:
                    transcript.language, first = piece.language, False
                transcript.segments += added
                yield transcript, added
            transcript.duration = request.seconds
            transcript.charge = metered.charge(Units(input_seconds=transcript.duration))
        yield transcript, []

    async def transcribe(self, query: SpeechQuery, ctx: RequestContext) -> Transcript:
        transcript = None
        async for transcript, _ in self.stream(query, ctx):
            pass
        assert transcript is not None
        return transcript


def _language(value: str | None) -> str | None:
    """ISO-639-1 codes as whisper knows them; OpenAI's clients also send names ("english")."""
    if not value:
        return None
    value = value.strip().lower()
    if len(value) > 2:
        code = _codes().get(value)
        if code is None:
            raise InvalidRequest(f"unknown language {value[:40]!r}; send an ISO-639-1 code such as 'en'",
                                 param="language")
        return code
    return value


def _numbered(piece: Transcribed, start: int) -> list[dict]:
    out = []
    for i, segment in enumerate(piece.segments):
        segment = {**segment, "id": start + i, "start": round(float(segment["start"]), 3),
                   "end": round(float(segment["end"]), 3), "avg_logprob": float(segment["avg_logprob"]),
                   "compression_ratio": float(segment["compression_ratio"]),
                   "no_speech_prob": float(segment["no_speech_prob"])}
        if segment.get("words"):
            segment["words"] = [{"word": w["word"], "start": round(float(w["start"]), 3),
                                 "end": round(float(w["end"]), 3), "probability": float(w["probability"])}
                                for w in segment["words"]]
        out.append(segment)
    return out


@cache
def _names() -> dict[str, str]:
    """Whisper's languages, code -> name (read when first needed, not at start-up)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES


@cache
def _codes() -> dict[str, str]:
    return {name: code for code, name in _names().items()}


# ---------------------------------------------------------------- dialect shapes
def _usage(t: Transcript) -> dict:
    return {"type": "duration", "seconds": math.ceil(t.duration)}


def _segment(s: dict, temperature: float = 0.0) -> dict:
    return {key: s[key] for key in ("id", "seek", "start", "end", "text", "tokens", "avg_logprob",
                                    "compression_ratio", "no_speech_prob")} | {"temperature": temperature}


def openai_body(t: Transcript, response_format: str, granularities: list[str], temperature: float) -> Any:
    """OpenAI's transcription / translation answer: a dict for json formats, a str otherwise."""
    if response_format == "text":
        return t.text + "\n"
    if response_format == "srt":
        return _subtitles(t, srt=True)
    if response_format == "vtt":
        return _subtitles(t, srt=False)
    if response_format == "verbose_json":
        body: dict[str, Any] = {"task": t.task, "language": _names().get(t.language, t.language),
                                "duration": round(t.duration, 3), "text": t.text}
        if "segment" in granularities or not granularities:
            body["segments"] = [_segment(s, temperature) for s in t.segments]
        if "word" in granularities:
            body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for w in t.words]
        body["usage"] = _usage(t)
        return body
    return {"text": t.text, "usage": _usage(t)}


def _timestamp(seconds: float, srt: bool) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if srt else '.'}{ms:03d}"


def _subtitles(t: Transcript, srt: bool) -> str:
    lines = [] if srt else ["WEBVTT", ""]
    for n, s in enumerate(t.segments, 1):
        if srt:
            lines.append(str(n))
        lines += [f"{_timestamp(s['start'], srt)} --> {_timestamp(s['end'], srt)}", s["text"].strip(), ""]
    return "\n".join(lines) + ("\n" if lines else "")


def native_body(t: Transcript, ctx: RequestContext, words: bool) -> dict:
    assert t.charge is not None
    body = {
        "text": t.text,
        "segments": [_segment(s) for s in t.segments],
        "language": t.language,
        "input_length_ms": int(round(t.duration * 1000)),
        "request_id": ctx.request_id,
        "inference_status": {"status": "succeeded", "runtime_ms": t.charge.runtime_ms, "cost": t.charge.cost_usd,
                             "tokens_input": 0, "tokens_generated": 0},
    }
    if words:
        body["words"] = [{"text": w["word"].strip(), "start": w["start"], "end": w["end"],
                          "confidence": w["probability"]} for w in t.words]
    return body


async def openai_events(stream: AsyncIterator[tuple[Transcript, list[dict]]]) -> AsyncIterator[dict]:
    """OpenAI's streamed transcript: ``transcript.text.delta`` per piece, then ``transcript.text.done``."""
    transcript = None
    async for transcript, added in stream:
        delta = "".join(s["text"] for s in added)
        if delta:
            yield {"type": "transcript.text.delta", "delta": delta.lstrip() if added[0]["id"] == 0 else delta}
    assert transcript is not None
    yield {"type": "transcript.text.done", "text": transcript.text, "usage": _usage(transcript)}
