// Real JavaScript clients through ollama-guard, against the embedded simulator: the official
// `ollama` package (ollama-js) and the `openai` Node SDK. Run by tests/e2e.rs with node's test
// runner; OLLAMA_GUARD_URL is the proxy, NODE_PATH the folder .ci/run installed the packages in.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Ollama } = require('ollama');
const OpenAI = require('openai');

const URL = process.env.OLLAMA_GUARD_URL;
const ollama = new Ollama({ host: URL });
const openai = new OpenAI({ baseURL: `${URL}/v1`, apiKey: 'ollama', maxRetries: 0 });

test('list shows the simulator models', async () => {
  const { models } = await ollama.list();
  assert.deepEqual(models.map((m) => m.model), ['llama3.2:latest', 'nomic-embed-text:latest']);
});

test('show returns the modelfile and details', async () => {
  const info = await ollama.show({ model: 'llama3.2' });
  assert.ok(info.modelfile.startsWith('# Modelfile'));
  assert.equal(info.details.family, 'llama');
  assert.ok('general.architecture' in info.model_info);
});

test('show of an unknown model rejects with status 404', async () => {
  await assert.rejects(ollama.show({ model: 'does-not-exist' }), (err) => {
    assert.equal(err.status_code, 404);
    assert.match(err.error, /not found/);
    return true;
  });
});

test('generate streams parts and ends with done', async () => {
  const parts = [];
  for await (const part of await ollama.generate({ model: 'llama3.2', prompt: 'hi', stream: true })) {
    parts.push(part);
  }
  assert.ok(parts.length >= 3);
  assert.equal(parts.at(-1).done, true);
  assert.ok(parts.slice(0, -1).every((p) => !p.done));
});

test('chat streamed and not streamed', async () => {
  const messages = [{ role: 'user', content: 'hi' }];
  const whole = await ollama.chat({ model: 'llama3.2', messages, stream: false });
  assert.equal(whole.message.role, 'assistant');
  assert.ok(whole.message.content.length > 0);
  let text = '';
  let last;
  for await (const part of await ollama.chat({ model: 'llama3.2', messages, stream: true })) {
    text += part.message.content;
    last = part;
  }
  assert.equal(last.done, true);
  assert.ok(text.length > 0);
});

test('pull progress ends in success', async () => {
  const statuses = [];
  for await (const p of await ollama.pull({ model: 'llama3.2', stream: true })) {
    statuses.push(p.status);
  }
  assert.equal(statuses[0], 'pulling manifest');
  assert.equal(statuses.at(-1), 'success');
});

test('embed returns one vector', async () => {
  const r = await ollama.embed({ model: 'nomic-embed-text', input: 'hello' });
  assert.equal(r.embeddings.length, 1);
  assert.ok(r.embeddings[0].length > 0);
});

test('openai chat completion', async () => {
  const r = await openai.chat.completions.create({ model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.object, 'chat.completion');
  assert.ok(r.choices[0].message.content.length > 0);
});

test('openai chat completion streamed', async () => {
  const stream = await openai.chat.completions.create({
    model: 'llama3.2',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
  });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.ok(chunks >= 2);
  assert.ok(text.length > 0);
});

test('openai models list', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['llama3.2:latest', 'nomic-embed-text:latest']);
});
