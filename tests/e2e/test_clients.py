"""Real Ollama and OpenAI clients through ollama-guard, against the embedded simulator.

Run by tests/e2e.rs, which starts the simulator and the proxy and passes the proxy URL in
OLLAMA_GUARD_URL. Every assertion is about what the client library sees through the proxy.
"""
import hashlib
import os

import ollama
import openai
import pytest

URL = os.environ["OLLAMA_GUARD_URL"]


@pytest.fixture
def client():
    return ollama.Client(host=URL)


@pytest.fixture
def oai():
    return openai.OpenAI(base_url=URL + "/v1", api_key="ollama", max_retries=0)


def test_list_shows_the_simulators_models(client):
    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_show_returns_modelfile_template_and_parameters(client):
    info = client.show("llama3.2")
    assert info.modelfile.startswith("# Modelfile")
    assert info.template
    assert info.details.family == "llama"
    assert "general.architecture" in info.modelinfo


def test_show_unknown_model_raises_response_error_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.show("does-not-exist")
    assert err.value.status_code == 404
    assert "not found" in err.value.error


def test_generate_not_streamed(client):
    r = client.generate(model="llama3.2", prompt="hello", stream=False)
    assert r.done is True
    assert r.response


def test_generate_streamed_arrives_in_parts(client):
    parts = list(client.generate(model="llama3.2", prompt="hello", stream=True))
    assert len(parts) >= 3
    assert parts[-1].done is True
    assert all(not p.done for p in parts[:-1])


def test_chat_streamed_and_not(client):
    msgs = [{"role": "user", "content": "hi"}]
    whole = client.chat(model="llama3.2", messages=msgs, stream=False)
    assert whole.message.role == "assistant" and whole.message.content
    parts = list(client.chat(model="llama3.2", messages=msgs, stream=True))
    assert parts[-1].done is True
    assert "".join(p.message.content for p in parts) != ""


def test_pull_progress_stream_ends_in_success(client):
    statuses = [p.status for p in client.pull("llama3.2", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"


def test_create_blob_uploads_and_verifies_digest(client, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_embed(client):
    r = client.embed(model="nomic-embed-text", input="hello")
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) > 0


def test_openai_chat(oai):
    r = oai.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    assert r.object == "chat.completion"


def test_openai_chat_streamed(oai):
    stream = oai.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_openai_models(oai):
    ids = sorted(m.id for m in oai.models.list())
    assert ids == ["llama3.2:latest", "nomic-embed-text:latest"]
