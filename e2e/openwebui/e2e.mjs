// lariat behind a real Open WebUI 0.12.4, driven in Debian's chromium.
//   LARIAT_BIN=<lariat debug binary> OPENWEBUI_VENV=<venv with open-webui> node e2e.mjs
// Exits non-zero on the first failed check; screenshots (and the servers' logs) stay
// in artifacts/<run id>/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { answer, assistants, check, newChat, pickerModels, send, waitFor } from './page.mjs';
import { createPeople, startStack, stopAll } from './stack.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const runId = process.env.E2E_RUN_ID || new Date().toISOString().replace(/[:.]/g, '-');
const artifacts = path.join(here, 'artifacts', runId);
fs.mkdirSync(artifacts, { recursive: true });
const shots = [];

async function shot(page, name) {
  const file = path.join(artifacts, `${String(shots.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  shots.push(file);
}

function step(name) {
  console.log(`-- ${name}`);
}

/// The upstream requests whose last user message is `text` (the chat's own, not tasks).
function requestsFor(upstream, text) {
  return upstream.requests.filter((r) => {
    const users = (r.body.messages ?? []).filter((m) => m.role === 'user');
    const last = users.at(-1)?.content;
    return (typeof last === 'string' ? last : JSON.stringify(last)) === text;
  });
}

async function scenarios({ stack, browser, tokens }) {
  const { upstream, tools } = stack;
  const context = async (token) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await ctx.addInitScript((t) => localStorage.setItem('token', t), token);
    return ctx;
  };
  const admin = await (await context(tokens.admin)).newPage();

  step("the model picker lists lariat's models");
  await admin.goto(`${stack.webui}/`);
  await admin.locator('#chat-input').waitFor({ timeout: 60_000 });
  const models = await pickerModels(admin);
  for (const m of ['agent', 'plain', 'tasks']) check(models.includes(`Select ${m} model`), `picker offers ${m}`, models);

  step('a streamed answer appears piece by piece');
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'stream me something');
  const half = await waitFor('the first half of the streamed answer', async () => {
    const last = (await assistants(admin)).at(-1);
    return last?.text.includes('the first half is here') ? last : null;
  });
  // The upstream holds the rest until now: what the page shows is a stream in flight.
  check(!half.text.includes('second half') && !half.done, 'only the first half is on screen yet', half);
  await shot(admin, 'stream-first-half');
  upstream.releaseStream();
  const streamed = await answer(admin, 1, 'the streamed answer to finish');
  check(streamed.text.includes('and the second half came later.'), 'the whole streamed answer', streamed);
  const asked = requestsFor(upstream, 'stream me something');
  check(asked.length === 1 && asked[0].body.stream === true, 'one streamed upstream request', asked.length);

  step('progress is visible while a server tool runs');
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'run the slow lookup');
  const running = await waitFor('a status line naming slow_lookup', async () => {
    const last = (await assistants(admin)).at(-1);
    return last?.status.some((s) => s.includes('slow_lookup')) ? last : null;
  });
  // The tool server holds slow_lookup until released: the line is shown mid-run.
  check(tools.counts.slow_lookup === 1 && tools.counts.slow_lookup_done === 0, 'slow_lookup is running', tools.counts);
  check(!running.done, 'the answer is not done while the tool runs', running);
  // Open WebUI shows status text verbatim: no markdown quoting in it.
  check(running.status.every((s) => !s.includes('`')), 'the status line is plain text', running.status);
  await shot(admin, 'progress-while-tool-runs');
  tools.release();
  const looked = await answer(admin, 1, 'the answer after the slow lookup');
  check(looked.text.includes('The slow lookup finished:'), 'the answer after the tool', looked);
  check(tools.counts.slow_lookup === 1, 'slow_lookup ran once', tools.counts);

  step('a confirmation is asked without a visible marker; "yes" runs the tool once');
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'please deploy the app');
  const question = await answer(admin, 1, 'the confirmation question');
  await shot(admin, 'confirmation-question');
  check(question.text.includes('Confirmation needed') && question.text.includes('deploy'), 'the question', question);
  const pageText = await admin.locator('body').innerText();
  check(!pageText.includes('lariat:confirm') && !pageText.includes('[//]'), 'no marker text on the page');
  const chatId = admin.url().split('/c/')[1];
  const stored = await (
    await fetch(`${stack.webui}/api/v1/chats/${chatId}`, { headers: { authorization: `Bearer ${tokens.admin}` } })
  ).json();
  const kept = Object.values(stored.chat.history.messages).find((m) => m.role === 'assistant')?.content ?? '';
  check(/\[\/\/\]: # \(lariat:confirm:[0-9a-f]{32}\)/.test(kept), 'the marker is kept in the chat history', kept);
  check(tools.counts.deploy === 0, 'nothing ran before the yes', tools.counts);
  await send(admin, 'yes');
  const deployed = await answer(admin, 2, 'the answer after yes');
  check(deployed.text.includes('Deployed:'), 'the answer after yes', deployed);
  check(tools.counts.deploy === 1, 'deploy ran exactly once', tools.counts);
  await shot(admin, 'confirmation-yes');

  step('regenerate the question, "yes" on both branches: it runs once in total');
  const before = tools.counts.deploy;
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'deploy the app, second chat');
  await answer(admin, 1, 'question 1');
  // Regenerate opens a menu in 0.12.4 ("Try Again", "Add Details", …).
  await admin.locator('button[aria-label="Regenerate"]').last().click();
  await admin.getByText('Try Again', { exact: true }).click({ timeout: 10_000 });
  const second = await waitFor('question 2 (2/2)', async () => {
    const last = (await assistants(admin)).at(-1);
    return last?.sibling === '2/2' && last.done ? last : null;
  });
  check(second.text.includes('Confirmation needed'), 'the regenerated question', second);
  await send(admin, 'yes');
  const ran = await answer(admin, 2, 'the answer to yes on question 2');
  check(ran.text.includes('Deployed:'), 'yes on question 2 runs it', ran);
  check(tools.counts.deploy === before + 1, 'deploy ran once', tools.counts);
  // Back to question 1: it is shown with no reply, so a new message answers it.
  const q2 = (await assistants(admin))[0];
  await admin.locator(`#${q2.id} button[aria-label="Previous message"]`).click();
  await waitFor('question 1 (1/2) as the last message', async () => {
    const all = await assistants(admin);
    return all.length === 1 && all[0].sibling === '1/2' ? all : null;
  });
  await send(admin, 'yes');
  const stale = await answer(admin, 2, 'the answer to yes on question 1');
  await shot(admin, 'regenerated-yes-on-older-question');
  check(tools.counts.deploy === before + 1, 'the older question ran nothing', tools.counts);
  check(stale.text.includes('A newer question replaced this one, so nothing was run for it.'), 'says so', stale);

  step('the same request in two chats: each question stands for its own chat');
  const twice = tools.counts.deploy;
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'deploy the app from two chats');
  await answer(admin, 1, 'the question in chat A');
  const chatA = admin.url();
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'deploy the app from two chats');
  await answer(admin, 1, 'the question in chat B');
  await admin.goto(chatA);
  await answer(admin, 1, 'chat A shown again');
  await send(admin, 'yes');
  const inA = await answer(admin, 2, 'the answer to yes in chat A');
  check(inA.text.includes('Deployed:'), "chat B's question does not replace chat A's", inA);
  check(tools.counts.deploy === twice + 1, 'deploy ran once for chat A', tools.counts);

  step('an Open WebUI tool and a gated lariat tool in one round');
  const deploys = tools.counts.deploy;
  await newChat(admin, stack.webui, 'agent');
  await send(admin, 'mixed: check the time and deploy to staging');
  const mixed = await answer(admin, 1, 'the question of the mixed round');
  check(mixed.text.includes('Confirmation needed') && mixed.text.includes('staging'), 'asked first', mixed);
  check(tools.counts.deploy === deploys, 'nothing ran before the yes', tools.counts);
  await send(admin, 'yes');
  const both = await answer(admin, 2, 'the answer after both tools');
  await shot(admin, 'client-tool-and-gated-tool');
  check(tools.counts.deploy === deploys + 1, 'the gated tool ran once', tools.counts);
  // Open WebUI ran its own tool and sent the result back through lariat upstream.
  const sawClientResult = upstream.requests.some((r) =>
    (r.body.messages ?? []).some((m) => m.role === 'tool' && String(m.content).includes('current_timestamp')),
  );
  check(sawClientResult, "Open WebUI's get_current_timestamp result reached the model");
  check(both.text.includes('Both done:') && both.text.includes('current_timestamp'), 'both results answered', both);

  step('a person with a lower role is not offered the admin-only tool');
  const bob = await (await context(tokens.user)).newPage();
  await newChat(bob, stack.webui, 'agent');
  await send(bob, 'hello from bob');
  const hi = await answer(bob, 1, "bob's answer");
  check(hi.text.includes('You said: hello from bob'), "bob's answer", hi);
  await shot(bob, 'second-person');
  const bobs = requestsFor(upstream, 'hello from bob');
  check(bobs.length === 1, "one upstream request for bob's message", bobs.length);
  check(!bobs[0].tools.includes('admin_reset'), 'bob (role user) is not offered admin_reset', bobs[0].tools);
  check(bobs[0].tools.includes('deploy'), 'bob gets the tools of his level', bobs[0].tools);
  const adas = requestsFor(upstream, 'stream me something');
  check(adas[0].tools.includes('admin_reset'), 'the admin is offered admin_reset', adas[0].tools);
  check(tools.counts.admin_reset === 0, 'admin_reset never ran', tools.counts);

  step("Open WebUI's background tasks went to the tool-less task model");
  const tasks = upstream.requests.filter((r) =>
    (r.body.messages ?? []).some((m) => m.role === 'user' && String(m.content).startsWith('### Task:')),
  );
  check(tasks.length > 0, 'Open WebUI sent background tasks');
  const stray = tasks.filter((r) => r.body.model !== 'e2e-tasks' || r.tools.length > 0);
  check(stray.length === 0, 'every task used the task model without tools', stray.map((r) => [r.body.model, r.tools]));
}

async function main() {
  const started = Date.now();
  const lariatBin = process.env.LARIAT_BIN;
  const venv = process.env.OPENWEBUI_VENV;
  if (!lariatBin || !venv) throw new Error('set LARIAT_BIN and OPENWEBUI_VENV');
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lariat-e2e-'));
  let stack;
  let browser;
  try {
    step('starting the mock upstream, the tool server, lariat and Open WebUI');
    // Interrupted (CI timeout, Ctrl-C): the servers run in their own process groups.
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => stopAll().finally(() => process.exit(130)));
    }
    stack = await startStack({ lariatBin, venv, runDir, logDir: artifacts });
    console.log(`   up after ${((Date.now() - started) / 1000).toFixed(1)} s: lariat ${stack.lariat}, Open WebUI ${stack.webui}`);
    const tokens = await createPeople(stack.webui);
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium' });
    await scenarios({ stack, browser, tokens });
    console.log(`\nPASS in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (e) {
    for (const ctx of browser?.contexts() ?? []) {
      for (const page of ctx.pages()) await shot(page, 'failure').catch(() => {});
    }
    if (stack) {
      // What the model saw, for the post-mortem.
      const seen = stack.upstream.requests.map((r) => ({ messages: r.body.messages, tools: r.tools, answer: r.answer }));
      fs.writeFileSync(path.join(artifacts, 'upstream-requests.json'), JSON.stringify(seen, null, 1));
    }
    console.error(`\nFAIL after ${((Date.now() - started) / 1000).toFixed(1)} s: ${e.stack ?? e}`);
    process.exitCode = 1;
  } finally {
    await browser?.close().catch(() => {});
    await stack?.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
    console.log(`\nscreenshots and logs in ${artifacts}:`);
    for (const file of shots) console.log(`  ${file}`);
  }
}

await main();
