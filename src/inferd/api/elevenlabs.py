"""ElevenLabs-style text to speech: ``POST /v1/text-to-speech/{voice_id}`` (and ``/stream``),
``GET /v1/voices``, ``GET /v1/voices/{voice_id}``. ElevenLabs' clients send the token in
``xi-api-key`` (``Authorization: Bearer`` works too); errors are ``{"detail": {"status",
"message"}}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field, StrictStr

from inferd.api.deps import authenticated
from inferd.api.responses import FastJSONResponse
from inferd.api.routing import ELEVENLABS, dialect_route
from inferd.api.state import AppState, app_state
from inferd.api.streaming import bytes_response
from inferd.protocol.base import WireModel
from inferd.serving.context import RequestContext
from inferd.serving.synthesis import SpeakQuery, elevenlabs_format, voice_card

router = APIRouter(route_class=dialect_route(ELEVENLABS), tags=["ElevenLabs"])


class VoiceSettings(WireModel):
    speed: float = Field(1.0, ge=0.25, le=4.0)


class TextToSpeechIn(WireModel):
    text: StrictStr
    model_id: Annotated[str, Field(max_length=256)] | None = Field(None, description="default: the voice's model")
    language_code: Annotated[str, Field(max_length=16)] | None = Field(None, description="accepted; the voice decides")
    voice_settings: VoiceSettings | None = None


async def _speak(voice_id: str, body: TextToSpeechIn, output_format: str, request: Request, ctx: RequestContext,
                 state: AppState):
    fmt = elevenlabs_format(output_format)
    engine, voice = state.synthesis.find_voice(voice_id, ctx.viewer)
    model = body.model_id or engine.ref.spec.id
    speed = body.voice_settings.speed if body.voice_settings else 1.0
    spoken = await state.synthesis.speak(SpeakQuery(model=model, text=body.text, voice=voice.id, speed=speed, fmt=fmt),
                                         ctx)
    return await bytes_response(request, spoken.chunks, fmt.media_type)


Format = Annotated[str, Query(max_length=32, description="codec_rate[_kbps]: mp3_44100_128, pcm_24000, opus_48000_64, "
                                                         "wav_24000, ulaw_8000")]


@router.post("/v1/text-to-speech/{voice_id}", response_class=FastJSONResponse)
async def text_to_speech(voice_id: str, body: TextToSpeechIn, request: Request, output_format: Format = "mp3_44100_128",
                         ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Speak `text` with a voice (audio bytes, streamed as they are made)."""
    return await _speak(voice_id, body, output_format, request, ctx, state)


@router.post("/v1/text-to-speech/{voice_id}/stream", response_class=FastJSONResponse)
async def text_to_speech_stream(voice_id: str, body: TextToSpeechIn, request: Request,
                                output_format: Format = "mp3_44100_128",
                                ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """The same, as ElevenLabs' streaming route: audio chunks as each sentence is made."""
    return await _speak(voice_id, body, output_format, request, ctx, state)


@router.get("/v1/voices", response_class=FastJSONResponse)
async def list_voices(ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    """Every voice of every text-to-speech model that is ready."""
    voices = [voice_card(e, v) for e in state.synthesis.engines(ctx.viewer) for v in e.voices]
    return FastJSONResponse({"voices": voices})


@router.get("/v1/voices/{voice_id}", response_class=FastJSONResponse)
async def get_voice(voice_id: str, ctx: RequestContext = Depends(authenticated), state: AppState = Depends(app_state)):
    engine, voice = state.synthesis.find_voice(voice_id, ctx.viewer)
    return FastJSONResponse(voice_card(engine, voice))
