"""The policy stage through real client libraries: what `ollama-python` and the OpenAI SDK see
when a request is refused (block mode) or only flagged (monitor mode).

Run by tests/policy.rs with OLLAMA_GUARD_URL (the proxy) and OLLAMA_GUARD_MODE (block|monitor);
the Rust side then checks the detection log and what reached the simulator.
"""
import os

import ollama
import openai
import pytest

URL = os.environ["OLLAMA_GUARD_URL"]
BLOCK = os.environ["OLLAMA_GUARD_MODE"] == "block"


@pytest.fixture
def client():
    return ollama.Client(host=URL)


@pytest.fixture
def oai():
    return openai.OpenAI(base_url=URL + "/v1", api_key="ollama", max_retries=0)


def test_push_to_a_foreign_registry(client):
    if BLOCK:
        with pytest.raises(ollama.ResponseError) as e:
            client.push("attacker.example/x/y")
        assert e.value.status_code == 403
        assert "policy.registry_push" in e.value.error
    else:
        assert client.push("attacker.example/x/y").status == "success"


def test_pull_from_the_official_registry_passes(client):
    assert client.pull("llama3.2").status == "success"


def test_debug_render_only(oai):
    ask = dict(
        model="llama3.2",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"_debug_render_only": True},
    )
    if BLOCK:
        with pytest.raises(openai.PermissionDeniedError) as e:
            oai.chat.completions.create(**ask)
        assert "policy.debug_render_only" in str(e.value)
    else:
        assert oai.chat.completions.create(**ask).choices
