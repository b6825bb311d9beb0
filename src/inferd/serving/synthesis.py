"""Text to speech: one call for every dialect (OpenAI's ``/audio/speech``, ElevenLabs-style
``/v1/text-to-speech``, DeepInfra's native text-to-speech), streamed sentence by sentence and
encoded as it goes by PyAV (mp3, opus in Ogg, aac in ADTS, flac) or as raw samples (wav, pcm,
μ-law). Everything leaves at 24 kHz mono unless the format names a rate (OpenAI's ``pcm`` is 24
kHz; ElevenLabs' formats carry theirs). Billed per input character (pricing ``input_characters``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from inferd.backends.base import Voice
from inferd.catalog import ModelRef, Task, Units, Viewer
from inferd.engine.base import EngineState
from inferd.engine.pool import ModelPool
from inferd.engine.synthesis import SynthesisModel
from inferd.errors import InputTooLarge, InvalidRequest, NotFound
from inferd.serving.context import RequestContext
from inferd.serving.metering import Charge, Meter
from inferd.settings import Settings

RATE = 24000
# OpenAI's voice names: a client that sends one gets one of the model's voices, always the same
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse")
MEDIA = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
         "pcm": "audio/pcm", "ulaw": "audio/basic"}
_CODECS = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"), "flac": ("flac", "flac")}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    codec: str  # mp3, opus, aac, flac, wav, pcm, ulaw
    rate: int = RATE
    bitrate: int | None = None  # bits per second (mp3, opus, aac)

    @property
    def media_type(self) -> str:
        return MEDIA[self.codec]


_ELEVEN = re.compile(r"^(mp3|pcm|opus|ulaw|wav)_(\d{4,5})(?:_(\d{2,3}))?$")


def elevenlabs_format(value: str) -> AudioFormat:
    """ElevenLabs' ``output_format``: ``mp3_44100_128``, ``pcm_16000``, ``opus_48000_64``, ``ulaw_8000``..."""
    match = _ELEVEN.match(value or "")
    rate = int(match.group(2)) if match else 0
    if not match or not 8000 <= rate <= 48000 or (match.group(1) == "opus" and rate not in _OPUS_RATES):
        raise InvalidRequest(f"unsupported output_format {value[:40]!r}; e.g. mp3_44100_128, pcm_24000, "
                             "opus_48000_64, wav_24000, ulaw_8000", param="output_format")
    bitrate = int(match.group(3)) * 1000 if match.group(3) else None
    return AudioFormat(match.group(1), rate, bitrate)


class AudioEncoder:
    """Mono int16 samples in (at the model's rate), encoded bytes out, as they come."""

    def __init__(self, fmt: AudioFormat, source_rate: int):
        import av

        self.fmt = fmt
        self._out: list[bytes] = []
        self._resampler = None
        self._container = None
        if fmt.codec in _CODECS:
            form, codec = _CODECS[fmt.codec]
            self._container = av.open(self, "w", format=form)
            self._stream = self._container.add_stream(codec, rate=fmt.rate, layout="mono")
            if fmt.bitrate:
                self._stream.bit_rate = fmt.bitrate
            target = self._stream.codec_context.format.name
        else:
            target = "s16"
        self._source_rate = source_rate
        if source_rate != fmt.rate or target != "s16":
            self._resampler = av.AudioResampler(format=target, layout="mono", rate=fmt.rate)
        if fmt.codec == "wav":  # streamed: the sizes are not known yet (as OpenAI's streamed wav)
            self._out.append(_wav_header(fmt.rate))

    def write(self, data) -> int:  # PyAV's output file
        self._out.append(bytes(data))
        return len(data)

    def _take(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def _frames(self, samples: np.ndarray | None):
        import av

        if samples is None:
            return self._resampler.resample(None) if self._resampler else []
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = self._source_rate
        return self._resampler.resample(frame) if self._resampler else [frame]

    def _emit(self, frames) -> None:
        for frame in frames:
            if self._container is not None:
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            else:
                pcm = frame.to_ndarray().reshape(-1).astype("<i2")
                self._out.append(_mulaw(pcm) if self.fmt.codec == "ulaw" else pcm.tobytes())

    def feed(self, samples: np.ndarray) -> bytes:
        if samples.size:
            self._emit(self._frames(samples))
        return self._take()

    def close(self) -> bytes:
        self._emit(self._frames(None))
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._take()


def _wav_header(rate: int) -> bytes:
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown))


_ULAW_SEGMENTS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _mulaw(pcm: np.ndarray) -> bytes:
    """G.711 μ-law of 16-bit samples, as the reference coder (and Python's audioop) computes it."""
    x = pcm.astype(np.int32) >> 2  # 14-bit
    negative = x < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -x, x), 8159) + 33
    segment = np.searchsorted(_ULAW_SEGMENTS, magnitude)
    value = (np.minimum(segment, 7) << 4) | ((magnitude >> (segment + 1)) & 0xF)
    return (np.where(segment >= 8, 0x7F, value) ^ mask).astype(np.uint8).tobytes()


@dataclass(slots=True)
class SpeakQuery:
    model: str | None  # None: the catalog's default text-to-speech model
    text: str
    voice: str | None = None
    speed: float = 1.0
    fmt: AudioFormat = AudioFormat("mp3")
    version: str | None = None


@dataclass(slots=True)
class Spoken:
    """A request's audio as it is made; ``charge`` is set once the last bytes are out."""

    ref: ModelRef
    voice: str
    fmt: AudioFormat
    characters: int
    chunks: AsyncIterator[bytes] | None = None  # set by SynthesisService.speak
    charge: Charge | None = None


class SynthesisService:
    def __init__(self, pool: ModelPool, meter: Meter, settings: Settings):
        self._pool = pool
        self._meter = meter
        self.max_characters = settings.max_speech_characters

    def engines(self, viewer: Viewer) -> list[SynthesisModel]:
        """The text-to-speech models that are ready and ``viewer`` may see: their voices are the ones on offer."""
        return [e for e in self._pool.engines() if isinstance(e, SynthesisModel) and e.state is EngineState.READY
                and viewer.sees(e.ref.spec)]

    def engine(self, model: str | None, viewer: Viewer, version: str | None = None) -> SynthesisModel:
        engine = self._pool.get(model or "default", version, Task.TEXT_TO_SPEECH, viewer)
        assert isinstance(engine, SynthesisModel)
        return engine

    def find_voice(self, voice_id: str, viewer: Viewer) -> tuple[SynthesisModel, Voice]:
        """A voice by id across every text-to-speech model ``viewer`` sees (ElevenLabs' ``/v1/voices``)."""
        for engine in self.engines(viewer):
            for voice in engine.voices:
                if voice.id == voice_id:
                    return engine, voice
        raise NotFound(f"voice {voice_id[:100]!r} not found; GET /v1/voices lists them")

    def voice_of(self, engine: SynthesisModel, name: str | None) -> str:
        voices = engine.voices
        if not name:
            return voices[0].id
        for voice in voices:
            if name in (voice.id, voice.name):
                return voice.id
        if name.lower() in OPENAI_VOICES:
            return voices[OPENAI_VOICES.index(name.lower()) % len(voices)].id
        raise InvalidRequest(f"unknown voice {name[:100]!r} for model {engine.name}; it speaks "
                             f"{', '.join(v.id for v in voices)} (or OpenAI's voice names)", param="voice")

    async def speak(self, query: SpeakQuery, ctx: RequestContext) -> Spoken:
        """Check the request; its audio then streams from ``Spoken.chunks`` (take the first chunk
        before answering: a full queue or a rate limit is then a status, not a broken stream)."""
        engine = self.engine(query.model, ctx.viewer, query.version)
        await engine.ready()
        text = query.text.strip() if isinstance(query.text, str) else ""
        if not text:
            raise InvalidRequest("input must not be empty", param="input")
        if len(text) > self.max_characters:
            raise InputTooLarge(f"input is {len(text)} characters long; at most {self.max_characters}", param="input")
        if not 0.25 <= query.speed <= 4.0:
            raise InvalidRequest("speed must be between 0.25 and 4.0", param="speed")
        voice = self.voice_of(engine, query.voice)
        spoken = Spoken(engine.ref, voice, query.fmt, len(text))
        spoken.chunks = self._stream(spoken, engine, text, query.speed, ctx)
        return spoken

    async def _stream(self, spoken: Spoken, engine: SynthesisModel, text: str, speed: float,
                      ctx: RequestContext) -> AsyncIterator[bytes]:
        encoder = AudioEncoder(spoken.fmt, engine.sample_rate)
        units = Units(input_characters=spoken.characters)
        async with self._meter.track(ctx, engine.ref) as metered:
            sentences = engine.speak(text, spoken.voice, speed)
            try:
                async for samples in sentences:
                    metered.consumed = units  # speaking has begun: a client that leaves pays for its text
                    yield encoder.feed(samples)
                if out := encoder.close():
                    yield out
            finally:
                await sentences.aclose()
            spoken.charge = metered.charge(units)


async def collect(spoken: Spoken) -> bytes:
    """The whole audio (the native route answers it in one JSON body)."""
    out = bytearray()
    async with aclosing(spoken.chunks) as chunks:
        async for chunk in chunks:
            out += chunk
    return _sized_wav(bytes(out)) if spoken.fmt.codec == "wav" else bytes(out)


def _sized_wav(wav: bytes) -> bytes:
    """A streamed WAV (sizes unknown) with its sizes written in, once it is whole."""
    return wav[:4] + struct.pack("<I", len(wav) - 8) + wav[8:40] + struct.pack("<I", len(wav) - 44) + wav[44:]


def native_speech_body(spoken: Spoken, audio: bytes, ctx: RequestContext) -> dict:
    import base64

    assert spoken.charge is not None
    return {
        "audio": f"data:{spoken.fmt.media_type};base64,{base64.b64encode(audio).decode()}",
        "output_format": spoken.fmt.codec,
        "input_character_length": spoken.characters,
        "request_id": ctx.request_id,
        "inference_status": {"status": "succeeded", "runtime_ms": spoken.charge.runtime_ms,
                             "cost": spoken.charge.cost_usd, "tokens_input": 0, "tokens_generated": 0},
    }


async def speech_events(spoken: Spoken) -> AsyncIterator[dict]:
    """OpenAI's ``stream_format: sse``: the audio in ``speech.audio.delta`` events, then ``speech.audio.done``."""
    import base64

    async for chunk in spoken.chunks:
        if chunk:
            yield {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
    n = spoken.characters
    yield {"type": "speech.audio.done", "usage": {"input_tokens": n, "output_tokens": 0, "total_tokens": n}}


def voice_card(engine: SynthesisModel, voice: Voice) -> dict:
    """A voice as ElevenLabs' ``GET /v1/voices`` shows one."""
    return {"voice_id": voice.id, "name": voice.name, "category": "premade",
            "labels": {"language": voice.language, **({"gender": voice.gender} if voice.gender else {})},
            "description": engine.ref.spec.description or engine.name, "preview_url": None,
            "available_for_tiers": [], "settings": None, "high_quality_base_model_ids": [engine.name]}
