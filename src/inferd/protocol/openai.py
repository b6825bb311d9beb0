"""OpenAI-compatible wire models (served under /v1/openai and /v1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from inferd.protocol.base import WireModel

TokenIds = list[Annotated[StrictInt, Field(ge=0)]]
EmbeddingInput = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]


class EmbeddingRequest(WireModel):
    model: StrictStr
    input: EmbeddingInput = Field(description="a string, a list of strings, token ids, or lists of token ids")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="float when absent; base64 is little-endian float32"
    )
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: str | None = None
    service_tier: str | None = None


class EmbeddingData(WireModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int
    estimated_cost: float | None = None


class EmbeddingResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    metadata: dict[str, Any]


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class SpeechRequest(WireModel):
    model: Annotated[str, Field(max_length=256)] | None = Field(None, description="default: the catalog's default voice model")
    input: StrictStr = Field(description="the text to speak (at most max_speech_characters)")
    voice: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="one of the model's voices, or an OpenAI voice name (alloy, echo, ...) mapped onto them")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: Annotated[str, Field(max_length=4096)] | None = Field(None, description="accepted, not used")


class ImageGenerationRequest(WireModel):
    prompt: StrictStr = Field(description="what to draw")
    model: Annotated[str, Field(max_length=256)] | None = Field(None, description="default: the catalog's default "
                                                                "text-to-image model")
    n: int = Field(1, description="images to make (at most max_images_per_request)")
    size: Annotated[str, Field(max_length=20)] | None = Field(None, description="WIDTHxHEIGHT (default 1024x1024), "
                                                              "or auto: the model's own size")
    quality: Annotated[str, Field(max_length=20)] | None = Field(
        None, description="low: half the model's denoising steps; hd/high: twice; anything else: its default")
    style: Annotated[str, Field(max_length=20)] | None = Field(None, description="accepted, not used")
    response_format: Literal["b64_json", "url"] = Field("b64_json", description="url: a data: URL of the PNG")
    output_format: Literal["png"] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class ImageData(WireModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(WireModel):
    created: int
    data: list[ImageData]
    usage: dict | None = None


class ErrorResponse(WireModel):
    error: ErrorBody


# --- chat and text completions

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(WireModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema", "regex"]
    json_schema: dict[str, Any] | None = None
    regex: str | None = None


class SamplingFields(WireModel):
    """What chat and text completions share (OpenAI's fields plus DeepInfra's and vLLM's)."""

    model: StrictStr
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = 1.0
    top_k: Annotated[int, Field(ge=-1)] | None = 0
    min_p: Probability | None = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = 1.0
    presence_penalty: Penalty | None = 0.0
    frequency_penalty: Penalty | None = 0.0
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = 1
    seed: int | None = None
    logit_bias: Annotated[dict[str, float], Field(max_length=300)] | None = Field(
        None, description="token id -> bias (-100..100) added to its logit before sampling"
    )
    ignore_eos: bool = Field(False, description="vLLM extension: generate max_tokens tokens whatever comes")
    response_format: ResponseFormat | None = None
    user: str | None = None


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="data for the model's chat template: add_generation_prompt, continue_final_message, "
        "enable_thinking, thinking, documents"
    )


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = Field(None, description="accepted and ignored")
