"""Real clients through ollama-guard with `[auth] mode = "required"`, the way each SDK sends a key.

Run by tests/e2e.rs, which starts the simulator and the proxy, makes two keys through the admin
API and passes: OLLAMA_GUARD_URL (the proxy), OLLAMA_GUARD_ADMIN (the admin API),
OLLAMA_GUARD_USER_KEY (role user), OLLAMA_GUARD_MANAGER_KEY (role manager),
OLLAMA_GUARD_SPARE_KEY (role user, revoked by one test).
"""
import os

import httpx
import ollama
import openai
import pytest

URL = os.environ["OLLAMA_GUARD_URL"]
ADMIN = os.environ["OLLAMA_GUARD_ADMIN"]
USER = os.environ["OLLAMA_GUARD_USER_KEY"]
MANAGER = os.environ["OLLAMA_GUARD_MANAGER_KEY"]
SPARE = os.environ["OLLAMA_GUARD_SPARE_KEY"]


def test_ollama_python_sends_OLLAMA_API_KEY_and_works(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", USER)
    client = ollama.Client(host=URL)
    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done is True


def test_ollama_python_with_a_headers_argument_works(monkeypatch):
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    client = ollama.Client(host=URL, headers={"Authorization": f"Bearer {USER}"})
    assert client.generate(model="llama3.2", prompt="hi", stream=False).done is True


def test_ollama_python_without_a_key_raises_response_error_401(monkeypatch):
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    client = ollama.Client(host=URL)
    with pytest.raises(ollama.ResponseError) as err:
        client.list()
    assert err.value.status_code == 401
    assert err.value.error == "ollama-guard: an API key is required (send Authorization: Bearer <key>)"


def test_ollama_python_with_a_wrong_key_raises_response_error_401(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "ogk_" + "0" * 64)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=URL).list()
    assert err.value.status_code == 401
    assert err.value.error == "ollama-guard: invalid API key"


def test_a_user_key_cannot_pull_a_manager_key_can(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", USER)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=URL).pull("llama3.2", stream=False)
    assert err.value.status_code == 403
    monkeypatch.setenv("OLLAMA_API_KEY", MANAGER)
    assert ollama.Client(host=URL).pull("llama3.2", stream=False).status == "success"


def test_openai_sdk_api_key_works_and_a_wrong_one_raises_authentication_error():
    good = openai.OpenAI(base_url=URL + "/v1", api_key=USER, max_retries=0)
    r = good.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    bad = openai.OpenAI(base_url=URL + "/v1", api_key="ollama", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"


def test_revocation_takes_effect_on_the_next_request(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", SPARE)
    client = ollama.Client(host=URL)
    assert client.list().models
    r = httpx.delete(f"{ADMIN}/api/keys/spare")
    assert r.status_code == 204
    with pytest.raises(ollama.ResponseError) as err:
        client.list()
    assert err.value.status_code == 401
