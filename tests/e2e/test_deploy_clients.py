"""Deployments against a real server: `inferd deploy` (the CLI, through the API) deploys SmolLM2
on vLLM while the server serves; the openai SDK calls it by deploy id and by name; stop, delete;
a deployment comes back when the server restarts."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest

from tests.conftest import MINILM, build_adapter, build_tiny_lm
from tests.e2e.conftest import INFERD, RemoteServer, embeddings_only_catalog

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def deploy_cli(server: RemoteServer, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([INFERD, "deploy", *args, "--url", server.base_url, "--token", server.token],
                            capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def sdk(server: RemoteServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1/openai", api_key=server.token, max_retries=0)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, smollm2_dir):
    return build_adapter(smollm2_dir, tmp_path_factory.mktemp("adapters"))[0]


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory, smollm2_dir, adapter_dir):
    data = tmp_path_factory.mktemp("deploy-server")
    paths = [str(smollm2_dir.parent), str(adapter_dir.parent)]
    server = RemoteServer(data, "--catalog", str(embeddings_only_catalog(data / "catalog.yaml")),
                          env={"INFERD_DEPLOY_PATHS": json.dumps(paths)}).wait_ready()
    yield server
    server.stop()


def test_the_cli_deploys_smollm2_on_vllm_and_the_sdk_calls_it(deploy_server, smollm2_dir, adapter_dir):
    started = time.monotonic()
    made = json.loads(deploy_cli(deploy_server, "create", "team/smol", "--path", str(smollm2_dir), "--enable-lora",
                                 "--wait", "--json").stdout)
    assert made["status"] == "deployed" and made["config"]["backend"] == "vllm", made
    client = sdk(deploy_server)
    # the model's own knowledge, by its id and by its name (a plain continuation: greedy chat answers
    # of a 135M model moved with the kernels vLLM picks once LoRA is on — "L'Étoile, la Marseillaise"
    # here, an answer naming Paris on the machines before)
    for model in (f"deploy_id:{made['deploy_id']}", "team/smol"):
        done = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=4)
        assert "Paris" in done.choices[0].text, done
    print(f"\nPOST /deploy/llm -> first answer: {time.monotonic() - started:.1f} s")
    replies = [client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=16)
               .choices[0].message.content for model in (f"deploy_id:{made['deploy_id']}", "team/smol")]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="team/smol", messages=QUESTION, temperature=0, max_tokens=16, stream=True) if chunk.choices)
    # one model, greedy: the same answer streamed or not (the 2nd and 3rd calls both find the prompt in
    # vLLM's prefix cache: the same arithmetic; the 1st computed it afresh)
    assert replies[0] and replies[1] == text, (replies, text)
    assert client.embeddings.create(model=MINILM, input="still served").data  # the catalog's model too
    # an adapter on it, made with `inferd lora`, answers by its name and as BASE:ADAPTER
    lora = subprocess.run([INFERD, "lora", "create", "tone", "--base", "team/smol", "--path", str(adapter_dir),
                           "--wait", "--url", deploy_server.base_url, "--token", deploy_server.token],
                          capture_output=True, text=True, timeout=300)
    assert lora.returncode == 0 and "deployed" in lora.stdout, lora.stderr
    for model in ("tone", "team/smol:tone"):
        assert client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=8).choices
    assert "tone" in subprocess.run([INFERD, "lora", "list", "--base", "team/smol", "--url", deploy_server.base_url,
                                     "--token", deploy_server.token], capture_output=True, text=True).stdout
    listing = deploy_cli(deploy_server, "list").stdout
    assert made["deploy_id"] in listing and "deployed" in listing
    assert "stopped" in deploy_cli(deploy_server, "stop", made["deploy_id"]).stdout
    with pytest.raises(openai.InternalServerError) as stopped:
        client.chat.completions.create(model="team/smol", messages=QUESTION, max_tokens=4)
    assert stopped.value.status_code == 503 and "stopped" in str(stopped.value)
    assert "deleted" in deploy_cli(deploy_server, "delete", made["deploy_id"]).stdout
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"deploy_id:{made['deploy_id']}", messages=QUESTION, max_tokens=4)
    failed = deploy_cli(deploy_server, "status", made["deploy_id"], ok=False)
    assert failed.returncode == 1 and "404" in failed.stderr


def test_a_deployment_outside_the_allowed_paths_is_refused_with_the_reason(deploy_server, tmp_path):
    result = deploy_cli(deploy_server, "create", "x", "--path", str(tmp_path), ok=False)
    assert result.returncode == 1 and "403" in result.stderr and "deploy_paths" in result.stderr


def test_a_deployment_comes_back_after_a_restart(tmp_path, smollm2_dir):
    tiny = build_tiny_lm(smollm2_dir, tmp_path / "models" / "tiny")
    env = {"INFERD_DEPLOY_PATHS": json.dumps([str(tmp_path / "models")]), "INFERD_DEPLOY_LLM_BACKEND": "transformers"}
    catalog = str(embeddings_only_catalog(tmp_path / "catalog.yaml"))
    (tmp_path / "data").mkdir()
    server = RemoteServer(tmp_path / "data", "--catalog", catalog, env=env).wait_ready()
    try:
        made = json.loads(deploy_cli(server, "create", "tiny", "--path", str(tiny), "--wait", "--json").stdout)
        before = sdk(server).chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=8)
    finally:
        server.stop()
    again = RemoteServer(tmp_path / "data", "--catalog", catalog, env=env).wait_ready()
    try:
        seen = json.loads(deploy_cli(again, "create", "tiny", "--path", str(tiny), "--json").stdout)
        assert seen["deploy_id"] != made["deploy_id"]  # a second version of the same name
        deadline = time.monotonic() + 120
        while json.loads(deploy_cli(again, "status", made["deploy_id"], "--json").stdout)["status"] != "deployed":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        after = sdk(again).chat.completions.create(model=f"deploy_id:{made['deploy_id']}", messages=QUESTION,
                                                   temperature=0, max_tokens=8)
        assert after.choices[0].message.content == before.choices[0].message.content
    finally:
        again.stop()
