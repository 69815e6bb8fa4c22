// Real JavaScript clients through ollama-guard over HTTPS: ollama-js and the `openai` Node
// SDK. Run by tests/tls.rs with node's test runner; OLLAMA_GUARD_URL is https://localhost:PORT,
// and NODE_EXTRA_CA_CERTS names the test CA that signed the guard's certificate (Node reads it
// once, at start, for every TLS connection including fetch).
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { Ollama } = require('ollama');
const OpenAI = require('openai');

const URL = process.env.OLLAMA_GUARD_URL;
const ollama = new Ollama({ host: URL });
const openai = new OpenAI({ baseURL: `${URL}/v1`, apiKey: 'ollama', maxRetries: 0 });

test('ollama-js lists the models over https', async () => {
  const { models } = await ollama.list();
  assert.deepEqual(models.map((m) => m.model), ['llama3.2:latest', 'nomic-embed-text:latest']);
});

test('ollama-js streams a chat over https', async () => {
  const parts = [];
  for await (const part of await ollama.chat({
    model: 'llama3.2',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  })) {
    parts.push(part);
  }
  assert.ok(parts.length >= 3);
  assert.equal(parts.at(-1).done, true);
});

test('openai chat completion over https', async () => {
  const r = await openai.chat.completions.create({ model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.object, 'chat.completion');
  assert.ok(r.choices[0].message.content);
});

test('plain http to the https port gets a readable 400', async () => {
  const plain = new globalThis.URL(URL.replace('https://', 'http://'));
  const { status, connection, body } = await new Promise((resolve, reject) => {
    http
      .get({ host: plain.hostname, port: plain.port, path: '/api/tags' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, connection: res.headers.connection, body }));
      })
      .on('error', reject);
  });
  assert.equal(status, 400);
  assert.equal(connection, 'close');
  assert.equal(body, 'ollama-guard: this port speaks HTTPS; use https://\n');
});
