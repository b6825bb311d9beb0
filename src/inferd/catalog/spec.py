"""What a catalog entry says about a model: task, backend, source, versions, pricing, limits."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferd.catalog.pricing import Pricing


class Task(StrEnum):
    EMBEDDINGS = "embeddings"
    TEXT_GENERATION = "text-generation"
    RERANKER = "reranker"
    TEXT_TO_IMAGE = "text-to-image"
    AUTOMATIC_SPEECH_RECOGNITION = "automatic-speech-recognition"
    TEXT_TO_SPEECH = "text-to-speech"
    TEXT_CLASSIFICATION = "text-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    FILL_MASK = "fill-mask"
    QUESTION_ANSWERING = "question-answering"
    TEXT2TEXT_GENERATION = "text2text-generation"
    ZERO_SHOT_IMAGE_CLASSIFICATION = "zero-shot-image-classification"
    IMAGE_CLASSIFICATION = "image-classification"
    OBJECT_DETECTION = "object-detection"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, description="inputs in one forward pass")
    max_batch_tokens: int = Field(16384, ge=1, description="padded tokens in one forward pass")
    queue_size: int = Field(2048, ge=1, description="queued inputs before 429")
    context_length: int | None = Field(None, ge=1, description="tokens; the model's own when unset")
    max_inputs: int | None = Field(None, ge=1, description="inputs in one request")


class Scaling(BaseModel):
    """Replicas of a model on Ray Serve (``inferd serve --ray``); DeepInfra's deployment
    settings use the same two names. One process serves one instance and only shows these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_instances: int = Field(1, ge=0, description="replicas always up; 0: none while idle (the first request waits)")
    max_instances: int = Field(1, ge=1, description="replicas under load, at most")
    target_ongoing_requests: float | None = Field(
        None, gt=0, description="requests in flight per replica the autoscaler aims at (default: the model's "
        "max_batch_size, so a replica's batches fill before another starts)")
    upscale_delay_s: float = Field(30.0, ge=0, description="how long load stays high before a replica is added")
    downscale_delay_s: float = Field(600.0, ge=0, description="how long load stays low before a replica goes")
    num_cpus: float | None = Field(None, gt=0, description="CPUs a replica asks Ray for (and its threads); default 1")
    num_gpus: float = Field(0.0, ge=0, description="GPUs a replica asks Ray for")

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances {self.min_instances} is above max_instances {self.max_instances}")
        return self


class VersionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    deploy_id: str | None = Field(None, description="the deployment that made this version (POST /deploy/...)")


_REVISION = re.compile(r"^hf:[^@]+@(?P<rev>.+)$")


class ModelSpec(BaseModel):
    """One catalog entry. ``source`` + ``version`` is short for a single-item ``versions``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    task: Task
    backend: str
    source: str | None = None
    version: str | None = None
    versions: tuple[VersionSpec, ...] = ()
    aliases: tuple[str, ...] = ()
    pricing: Pricing | None = None
    limits: Limits = Limits()
    scaling: Scaling = Scaling()
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the backend")
    tags: tuple[str, ...] = ()
    description: str = ""
    owned_by: str = "inferd"
    owner: str | None = Field(None, description="the account a deployed model belongs to (None: the server's)")
    private: bool = Field(False, description="only its owner (and admins) see and call it")
    quantization: str | None = Field(None, description="how the weights are served (fp32, bf16, q4_1, ...)")
    deprecated: bool = False
    replaced_by: str | None = Field(None, description="the model to use instead of a deprecated one")

    @model_validator(mode="before")
    @classmethod
    def _fold_source(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("source"):
            return data
        data = dict(data)
        source = data.pop("source")
        name = data.pop("version", None) or _default_version_name(source)
        versions = [{"name": name, "source": source}, *list(data.get("versions") or ())]
        return {**data, "versions": versions}

    @model_validator(mode="after")
    def _check_versions(self) -> ModelSpec:
        if not self.versions:
            raise ValueError(f"model {self.id!r} needs a source or versions")
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.id!r} repeats a version name: {names}")
        return self

    @property
    def default_version(self) -> VersionSpec:
        return self.versions[0]

    def get_version(self, name: str | None) -> VersionSpec | None:
        if name is None:
            return self.default_version
        return next((v for v in self.versions if v.name == name), None)


def _default_version_name(source: str) -> str:
    match = _REVISION.match(source)
    return match.group("rev") if match else "main"
