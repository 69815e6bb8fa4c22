// Real JavaScript clients through ollama-guard with `[auth] mode = "required"`: ollama-js with
// an Authorization header and the openai Node SDK with apiKey. Run by tests/e2e.rs; env as in
// tests/e2e/test_auth.py.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Ollama } = require('ollama');
const OpenAI = require('openai');

const URL = process.env.OLLAMA_GUARD_URL;
const USER = process.env.OLLAMA_GUARD_USER_KEY;

test('ollama-js with an Authorization header lists and chats', async () => {
  const ollama = new Ollama({ host: URL, headers: { Authorization: `Bearer ${USER}` } });
  const { models } = await ollama.list();
  assert.deepEqual(models.map((m) => m.model), ['llama3.2:latest', 'nomic-embed-text:latest']);
  const r = await ollama.chat({ model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.done, true);
});

test('ollama-js without a key rejects with status 401', async () => {
  const ollama = new Ollama({ host: URL });
  await assert.rejects(ollama.list(), (err) => {
    assert.equal(err.status_code, 401);
    assert.equal(err.error, 'ollama-guard: an API key is required (send Authorization: Bearer <key>)');
    return true;
  });
});

test('openai Node SDK with apiKey works; a wrong key is an AuthenticationError', async () => {
  const good = new OpenAI({ baseURL: `${URL}/v1`, apiKey: USER, maxRetries: 0 });
  const models = await good.models.list();
  assert.ok(models.data.length >= 1);
  const bad = new OpenAI({ baseURL: `${URL}/v1`, apiKey: 'ollama', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err.constructor.name}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
});
