// The two fakes lariat talks to in the browser test: a scripted OpenAI-compatible
// upstream and a tool server for lariat's HTTP tools. Both run in the test's own
// process, so the test reads what they saw directly (no timing, no log scraping).
import http from 'node:http';

const MODEL = 'e2e-model';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (p) => parts.push(p));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

function text(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => p.text ?? '').join('');
  return '';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// What the upstream answers, decided by the conversation alone: a keyword in the
/// last user message picks a tool call; once the tool results are in, it answers.
export function script(body) {
  const messages = body.messages ?? [];
  let last = -1;
  messages.forEach((m, i) => {
    if (m.role === 'user') last = i;
  });
  const user = last >= 0 ? text(messages[last].content) : '';
  const results = messages.slice(last + 1).filter((m) => m.role === 'tool');
  const said = results.map((m) => text(m.content)).join(' | ');

  // Open WebUI's background tasks (titles, tags, follow-ups) want JSON.
  if (user.startsWith('### Task:')) {
    return { text: '{"title": "E2E chat", "tags": ["e2e"], "follow_ups": []}' };
  }
  // lariat asks the model to phrase a confirmation question with tools off.
  if (body.tool_choice === 'none') {
    return { text: 'I am about to deploy. Shall I go ahead?' };
  }
  // After a "yes" the client may send the question and the reply back with the round
  // (Open WebUI returning its tool results): the request is the message before them.
  const asked = messages.filter((m) => m.role === 'user').map((m) => text(m.content));
  const word = (asked.reverse().find((t) => !/^(yes|no)$/i.test(t.trim())) ?? '').toLowerCase();
  if (word.includes('stream')) {
    // The rest waits for the test: it sees the first half on the page first.
    return { text: 'Streaming: the first half is here', rest: ', and the second half came later.' };
  }
  if (word.includes('slow')) {
    if (!results.length) return { calls: [['slow_lookup', { topic: 'e2e' }]] };
    return { text: `The slow lookup finished: ${said}` };
  }
  if (word.includes('mixed')) {
    // One round: an Open WebUI tool (the client runs it) and a gated lariat tool.
    if (!results.length) return { calls: [['get_current_timestamp', {}], ['deploy', { target: 'staging' }]] };
    return { text: `Both done: ${said}` };
  }
  if (word.includes('deploy')) {
    if (!results.length) return { calls: [['deploy', { target: 'production' }]] };
    return { text: `Deployed: ${said}` };
  }
  return { text: `Hello from the mock upstream. You said: ${user}` };
}

function completion(answer) {
  const content = answer.text === undefined ? null : answer.text + (answer.rest ?? '');
  const message = { role: 'assistant', content };
  if (answer.calls) {
    message.tool_calls = answer.calls.map(([name, args], i) => ({
      id: `call_${i}_${name}`,
      type: 'function',
      function: { name, arguments: JSON.stringify(args) },
    }));
  }
  return {
    id: 'chatcmpl-mock',
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: MODEL,
    choices: [{ index: 0, message, finish_reason: answer.calls ? 'tool_calls' : 'stop' }],
    usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
  };
}

async function stream(res, answer, gate) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const base = { id: 'chatcmpl-mock', object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: MODEL };
  const send = (choices, extra = {}) => res.write(`data: ${JSON.stringify({ ...base, choices, ...extra })}\n\n`);
  if (answer.calls) {
    send([{ index: 0, delta: { role: 'assistant', content: null }, finish_reason: null }]);
    answer.calls.forEach(([name, args], i) => {
      const call = { index: i, id: `call_${i}_${name}`, type: 'function', function: { name, arguments: JSON.stringify(args) } };
      send([{ index: 0, delta: { tool_calls: [call] }, finish_reason: null }]);
    });
    send([{ index: 0, delta: {}, finish_reason: 'tool_calls' }]);
  } else {
    // Several pieces a little apart, so the page really receives a stream.
    const pieces = async (text) => {
      for (const word of text.split(/(?<= )/)) {
        send([{ index: 0, delta: { content: word }, finish_reason: null }]);
        await sleep(20);
      }
    };
    send([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
    await pieces(answer.text);
    if (answer.rest) {
      await gate.wait();
      await pieces(answer.rest);
    }
    send([{ index: 0, delta: {}, finish_reason: 'stop' }]);
  }
  send([], { usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
  res.end('data: [DONE]\n\n');
}

/// A one-shot gate: `wait` blocks until `open` (bounded, so a failed test still ends).
function gate() {
  let open = () => {};
  const opened = new Promise((r) => {
    open = r;
  });
  const bound = () => new Promise((r) => setTimeout(r, 120_000).unref());
  return { open: () => open(), wait: () => Promise.race([opened, bound()]) };
}

export async function startUpstream() {
  const requests = [];
  const streamGate = gate();
  const server = http.createServer(async (req, res) => {
    try {
      if (req.method === 'GET' && req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data: [{ id: MODEL, object: 'model', owned_by: 'mock' }] }));
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/chat/completions') {
        const body = JSON.parse(await readBody(req));
        const answer = script(body);
        requests.push({
          body,
          tools: (body.tools ?? []).map((t) => t.function?.name),
          answer,
        });
        if (body.stream) return await stream(res, answer, streamGate);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(completion(answer)));
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error": {"message": "not found"}}');
    } catch (e) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: String(e) } }));
    }
  });
  const url = await listen(server);
  return { url, requests, releaseStream: streamGate.open,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

/// lariat's HTTP tools. `slow_lookup` holds its answer until the test releases it,
/// so "progress is visible while the tool runs" is a fact, not a race.
export async function startTools() {
  const counts = { slow_lookup: 0, slow_lookup_done: 0, deploy: 0, admin_reset: 0 };
  const slow = gate();
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const name = req.url.replace(/^\//, '');
    if (!(name in counts)) {
      res.writeHead(404);
      res.end('no such tool');
      return;
    }
    counts[name] += 1;
    if (name === 'slow_lookup') {
      await slow.wait();
      counts.slow_lookup_done += 1;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ tool: name, ok: true, arguments: body ? JSON.parse(body) : {} }));
  });
  const url = await listen(server);
  return {
    url,
    counts,
    release: slow.open,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
