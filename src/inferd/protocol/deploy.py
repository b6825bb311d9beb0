"""DeepInfra's deployment wire models: ``POST /deploy/llm``, ``POST /deploy/hf/``, ``PUT /deploy/{id}``.

Every field is bounded and unknown fields are refused: a deployment loads weights on the
server, so nothing a client sends becomes a path, a backend or an option unless it is one of
the values listed here (a local path must also lie under a directory the admin allowed).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from inferd.catalog import Task

# a model name: what requests put in `model`; no `:` (that is MODEL:VERSION) and no `deploy/` prefix
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?$")]
Repo = Annotated[str, StringConstraints(min_length=3, max_length=200,
                                        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")]
Revision = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._/-]+$")]
LocalPath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HFSource(_Strict):
    repo: Repo = Field(description="a Hugging Face repository, org/name")
    revision: Revision | None = Field(None, description="a branch, tag or commit (default: main)")
    token: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        None, description="a Hugging Face token for a gated or private repository (used to download, never stored)")


class DeploySettings(_Strict):
    min_instances: int = Field(1, ge=0, le=100, description="replicas always up (Ray Serve); 0: none while idle")
    max_instances: int = Field(1, ge=1, le=100, description="replicas under load, at most (Ray Serve)")


class LLMExtraArgs(_Strict):
    backend: Literal["vllm", "transformers"] | None = Field(
        None, description="the runtime: vLLM's engine, or transformers with inferd's continuous batching "
        "(default: the server's deploy_llm_backend)")
    dtype: Literal["bfloat16", "float32", "float16"] | None = None
    context_length: int | None = Field(None, ge=16, le=1_048_576, description="tokens (default: the model's own)")
    kv_cache_gib: float | None = Field(None, gt=0, le=1024, description="vLLM's KV cache, GiB (default 2)")
    enable_lora: bool = Field(False, description="vLLM: serve LoRA adapters on this model (POST /v1/lora/create)")
    max_lora_rank: int | None = Field(None, ge=1, le=512, description="the largest adapter rank it takes (16)")


class DeployLLMIn(_Strict):
    model_name: ModelName
    hf: HFSource | None = None
    path: LocalPath | None = Field(None, description="a local directory or file under one the admin allowed "
                                                     "(deploy_paths)")
    gpu: Annotated[str, StringConstraints(max_length=64)] | None = Field(None, description="accepted and shown")
    num_gpus: int | None = Field(None, ge=0, le=64, description="GPUs per replica (Ray Serve)")
    max_batch_size: int | None = Field(None, ge=1, le=1024, description="requests generated at once")
    base_model: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="not taken here: adapters are made with /v1/lora/create")
    settings: DeploySettings = DeploySettings()
    extra_args: LLMExtraArgs | None = None
    private: bool = Field(True, description="only the deploying account (and admins) see and call it; "
                                            "false: everyone (admins only)")
    description: Annotated[str, StringConstraints(max_length=1000)] = ""


# the runtimes a non-LLM deployment may name for each task (the first: the default)
HF_BACKENDS: dict[Task, tuple[str, ...]] = {
    Task.EMBEDDINGS: ("sentence-transformers",),
    Task.RERANKER: ("cross-encoder", "bi-encoder"),
    Task.AUTOMATIC_SPEECH_RECOGNITION: ("faster-whisper",),
    Task.TEXT_TO_IMAGE: ("diffusers",),
    Task.IMAGE_CLASSIFICATION: ("image-classifier",),
    Task.ZERO_SHOT_IMAGE_CLASSIFICATION: ("clip",),
    Task.OBJECT_DETECTION: ("object-detector",),
    Task.TEXT_GENERATION: ("vllm", "transformers"),
    Task.TEXT_CLASSIFICATION: ("transformers-text",),
    Task.TOKEN_CLASSIFICATION: ("transformers-text",),
    Task.FILL_MASK: ("transformers-text",),
    Task.QUESTION_ANSWERING: ("transformers-text",),
    Task.TEXT2TEXT_GENERATION: ("transformers-seq2seq",),
}


class DeployHFIn(_Strict):
    model_name: ModelName
    task: Task
    hf: HFSource | None = None
    path: LocalPath | None = None
    backend: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="one of the task's runtimes (default: its first)")
    max_batch_size: int | None = Field(None, ge=1, le=1024, description="inputs in one forward pass")
    context_length: int | None = Field(None, ge=16, le=1_048_576)
    num_gpus: int | None = Field(None, ge=0, le=64)
    settings: DeploySettings = DeploySettings()
    private: bool = True
    description: Annotated[str, StringConstraints(max_length=1000)] = ""


class DeploymentUpdateIn(_Strict):
    settings: DeploySettings


class Instances(BaseModel):
    running: int
    pending: int


class DeploymentOut(BaseModel):
    deploy_id: str
    model_name: str
    version: str
    task: str
    status: Literal["initializing", "deploying", "deployed", "failed", "stopped", "deleted"]
    fail_reason: str | None
    created_at: int
    updated_at: int
    instances: Instances
    config: dict
    settings: DeploySettings
    progress: dict | None = Field(None, description="while deploying: the stage, bytes and seconds so far")
    owner: str
    private: bool


class LoraIn(_Strict):
    lora_name: ModelName = Field(description="the name requests use (`model`), also BASE:LORA_NAME")
    base_model: Annotated[str, StringConstraints(min_length=1, max_length=300)] = Field(
        description="the model it runs on (served by vLLM with enable_lora)")
    path: LocalPath | None = Field(None, description="a PEFT adapter directory under the server's deploy_paths")
    hf: HFSource | None = None
    private: bool = True
    description: Annotated[str, StringConstraints(max_length=1000)] = ""


class LoraPatch(_Strict):
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    private: bool | None = None


class LoraOut(BaseModel):
    lora_id: str
    lora_name: str
    base_model: str
    status: Literal["deploying", "deployed", "failed", "deleted"]
    fail_reason: str | None
    created_at: int
    updated_at: int
    rank: int | None
    owner: str
    private: bool
    description: str
