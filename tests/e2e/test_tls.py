"""Real Ollama and OpenAI Python clients through ollama-guard over HTTPS.

Run by tests/tls.rs, which starts the simulator and the guard with a certificate signed by a
test CA, and passes the proxy URL (https://localhost:PORT) in OLLAMA_GUARD_URL and the CA's
PEM file in OLLAMA_GUARD_CA. The clients trust that CA the ways an operator would configure
them: httpx's `verify=` (which ollama.Client passes through), or SSL_CERT_FILE.
"""
import os
import ssl
import subprocess
import sys

import httpx
import ollama
import openai
import pytest

URL = os.environ["OLLAMA_GUARD_URL"]
CA = os.environ["OLLAMA_GUARD_CA"]


@pytest.fixture
def client():
    # httpx keyword arguments pass through ollama.Client; a CA file path works (newer httpx
    # prefers an ssl.SSLContext, as the OpenAI test below uses).
    return ollama.Client(host=URL, verify=CA)


def test_ollama_list_over_https(client):
    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_ollama_chat_streamed_over_https(client):
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(parts) >= 3
    assert parts[-1].done is True


def test_without_the_ca_the_certificate_is_refused():
    # ollama-python turns the TLS failure into its generic ConnectionError; httpx says why.
    with pytest.raises(ConnectionError):
        ollama.Client(host=URL).list()
    with pytest.raises(httpx.ConnectError) as err:
        httpx.get(URL + "/api/tags")
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_openai_chat_over_https_with_verify():
    oai = openai.OpenAI(
        base_url=URL + "/v1",
        api_key="ollama",
        max_retries=0,
        http_client=httpx.Client(verify=ssl.create_default_context(cafile=CA)),
    )
    r = oai.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.content


def test_openai_models_with_ssl_cert_file():
    # SSL_CERT_FILE is read when the default SSL context is made: a fresh interpreter.
    code = (
        "import openai, os; "
        "oai = openai.OpenAI(base_url=os.environ['OLLAMA_GUARD_URL'] + '/v1', api_key='ollama', max_retries=0); "
        "print(','.join(sorted(m.id for m in oai.models.list())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SSL_CERT_FILE": CA},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "llama3.2:latest,nomic-embed-text:latest"


def test_plain_http_to_the_https_port_gets_a_readable_400():
    plain = URL.replace("https://", "http://", 1)
    r = httpx.get(plain + "/api/tags")
    assert r.status_code == 400
    assert r.headers["connection"] == "close"
    assert r.text == "ollama-guard: this port speaks HTTPS; use https://\n"
