"""DeepInfra's native inference wire models (POST /v1/inference/{model})."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictStr

from inferd.protocol.base import WireModel


class InferenceStatus(WireModel):
    status: Literal["queued", "running", "succeeded", "failed"]
    runtime_ms: int
    cost: float = Field(description="USD")
    tokens_input: int = 0
    tokens_generated: int = 0


class EmbeddingsIn(WireModel):
    inputs: list[StrictStr] = Field(description="texts to embed")
    normalize: bool = Field(False, description="L2-normalise the embeddings")
    image: str | None = Field(None, description="an image as a data URL (image models only)")
    webhook: str | None = None


class EmbeddingsOut(WireModel):
    embeddings: list[list[float]]
    input_tokens: int
    request_id: str
    inference_status: InferenceStatus


class RerankerIn(WireModel):
    queries: list[StrictStr] | None = Field(None, description="one query per document (or a single query)")
    query: StrictStr | None = Field(None, description="one query for every document")
    documents: list[StrictStr] = Field(description="the documents to score against the query")
    instruction: StrictStr | None = Field(None, description="the judge's instruction (LM-judge rerankers only)")
    webhook: str | None = None


class RerankerOut(WireModel):
    scores: list[float] = Field(description="relevance in [0, 1], in the documents' order")
    input_tokens: int
    request_id: str
    inference_status: InferenceStatus


class TextGenerationIn(WireModel):
    input: StrictStr = Field(description="the prompt, sent as is (no chat template)")
    stream: bool = False
    max_new_tokens: Annotated[int, Field(ge=1)] | None = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = 0.9
    top_k: Annotated[int, Field(ge=-1)] | None = 0
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = 1.0
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = 0.0
    stop: Annotated[list[StrictStr], Field(max_length=4)] | StrictStr | None = None
    num_responses: Annotated[int, Field(ge=1, le=16)] = 1
    seed: int | None = None
    ignore_eos: bool = False
    response_format: dict | None = None
    webhook: str | None = None


class GeneratedText(WireModel):
    generated_text: str


class TextGenerationOut(WireModel):
    results: list[GeneratedText]
    num_tokens: int
    num_input_tokens: int
    request_id: str
    inference_status: InferenceStatus


class SpeechRecognitionIn(WireModel):
    audio: object = Field(description="the audio: a multipart file, or a data URL (data:audio/...;base64,...)")
    task: Literal["transcribe", "translate"] = Field("transcribe", description="translate: into English")
    language: Annotated[str, Field(max_length=40)] | None = Field(None, description="ISO-639-1; detected when unset")
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    initial_prompt: Annotated[str, Field(max_length=4000)] | None = None
    chunk_level: Literal["segment", "word"] = Field("segment", description="word: also word timestamps")
    chunk_length_s: int = Field(30, ge=1, le=30, description="accepted; chunks are cut at pauses, ≤ 30 s")
    webhook: str | None = None


class SpeechSegment(WireModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class SpeechRecognitionOut(WireModel):
    text: str
    segments: list[SpeechSegment]
    language: str
    input_length_ms: int
    request_id: str
    inference_status: InferenceStatus


class TextToImageIn(WireModel):
    prompt: StrictStr = Field(description="what to draw")
    negative_prompt: Annotated[str, Field(max_length=4000)] | None = Field(None, description="what not to draw")
    num_images: int = Field(1, description="images to make (at most max_images_per_request)")
    num_inference_steps: int | None = Field(None, description="denoising steps; default: the model's")
    guidance_scale: float | None = Field(None, description="classifier-free guidance; default: the model's")
    width: int | None = Field(None, description="pixels, a multiple of 8; default: the model's")
    height: int | None = Field(None, description="pixels, a multiple of 8; default: the model's")
    seed: int | None = Field(None, description="the same seed and fields draw the same images; random when unset")
    scheduler: Annotated[str, Field(max_length=80)] | None = Field(
        None, description="a diffusers scheduler class the model accepts (e.g. EulerDiscreteScheduler)")
    webhook: str | None = None


class TextToImageOut(WireModel):
    images: list[str] = Field(description="data URLs (data:image/png;base64,...)")
    nsfw_content_detected: list[bool]
    seed: int
    request_id: str
    inference_status: InferenceStatus


class ImageClassificationIn(WireModel):
    image: object = Field(description="the image: a multipart file, a data URL or base64")
    top_k: int | None = Field(5, ge=1, description="the best k labels; null: all")
    webhook: str | None = None


class ScoredLabel(WireModel):
    label: str
    score: float


class ImageClassificationOut(WireModel):
    results: list[ScoredLabel] = Field(description="best first")
    request_id: str
    inference_status: InferenceStatus


class ZeroShotImageClassificationIn(WireModel):
    image: object = Field(description="the image: a multipart file, a data URL or base64")
    candidate_labels: list[StrictStr] = Field(description="the labels to score the image against")
    webhook: str | None = None


class ObjectDetectionIn(WireModel):
    image: object = Field(description="the image: a multipart file, a data URL or base64")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="the least score of an object shown")
    webhook: str | None = None


class Box(WireModel):
    xmin: float
    ymin: float
    xmax: float
    ymax: float


class DetectedObject(WireModel):
    label: str
    score: float
    box: Box = Field(description="in the image's pixels")


class ObjectDetectionOut(WireModel):
    results: list[DetectedObject] = Field(description="best first")
    request_id: str
    inference_status: InferenceStatus


MAX_TEXT_CHARS = 200_000  # one text for the classic text tasks; the model reads its context's worth
Text = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class TextClassificationIn(WireModel):
    input: Text = Field(description="the text to classify")
    top_k: int | None = Field(1, ge=1, description="the best k labels; null: every label")
    return_all_scores: bool = Field(False, description="every label's score (as top_k null)")
    webhook: str | None = None


class TextClassificationOut(WireModel):
    results: list[ScoredLabel] = Field(description="best first")
    request_id: str
    inference_status: InferenceStatus


class TokenClassificationIn(WireModel):
    input: Text = Field(description="the text to label")
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        "simple", description="as transformers' pipelines name them: none, every token; simple, adjacent tokens of "
        "one tag grouped; first / average / max, a word's tokens agree first")
    webhook: str | None = None


class Entity(WireModel):
    entity_group: str | None = Field(None, description="the label of a group of tokens (every strategy but none)")
    entity: str | None = Field(None, description="a token's own label (aggregation_strategy none)")
    index: int | None = Field(None, description="the token's position (aggregation_strategy none)")
    score: float
    word: str = Field(description="the text between start and end")
    start: int = Field(description="the first character in the input (Unicode code points)")
    end: int = Field(description="one past the last character")


class TokenClassificationOut(WireModel):
    results: list[Entity]
    request_id: str
    inference_status: InferenceStatus


class FillMaskIn(WireModel):
    input: Text = Field(description="a text with the model's mask token (e.g. [MASK]) once")
    top_k: int = Field(5, ge=1, le=1000, description="the likeliest k tokens for the mask")
    webhook: str | None = None


class MaskFill(WireModel):
    sequence: str = Field(description="the input with this token in the mask's place")
    score: float
    token: int
    token_str: str


class FillMaskOut(WireModel):
    results: list[MaskFill] = Field(description="likeliest first")
    request_id: str
    inference_status: InferenceStatus


class QuestionAnsweringIn(WireModel):
    question: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    context: Text
    top_k: int = Field(1, ge=1, le=20, description="answers to give (more than 1: `answers` lists them)")
    max_answer_len: int = Field(15, ge=1, le=512, description="the longest answer, in tokens")
    webhook: str | None = None


class Answer(WireModel):
    answer: str = Field(description="the context's characters between start and end")
    score: float
    start: int
    end: int


class QuestionAnsweringOut(WireModel):
    answer: str
    score: float
    start: int
    end: int
    answers: list[Answer] | None = Field(None, description="with top_k > 1: the best answers, best first")
    request_id: str
    inference_status: InferenceStatus


class Text2TextGenerationIn(WireModel):
    input: Text = Field(description="the text to rewrite (also accepted as `text`)")
    max_new_tokens: int = Field(128, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=1000, description="0: no top-k cut")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    num_beams: int = Field(1, ge=1, le=8)
    webhook: str | None = None


class Text2TextGenerationOut(WireModel):
    results: list[GeneratedText]
    num_tokens: int
    num_input_tokens: int
    request_id: str
    inference_status: InferenceStatus


class TextToSpeechIn(WireModel):
    text: StrictStr = Field(description="the text to speak")
    preset_voice: Annotated[str, Field(max_length=200)] | None = Field(None, description="a voice of the model")
    output_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    language_code: Annotated[str, Field(max_length=16)] | None = Field(None, description="accepted; the voice decides")
    webhook: str | None = None


class TextToSpeechOut(WireModel):
    audio: str = Field(description="a data URL: data:audio/...;base64,...")
    output_format: str
    input_character_length: int
    request_id: str
    inference_status: InferenceStatus
