// Starts what the browser test needs: the fakes, lariat (debug binary) with an e2e
// config, and Open WebUI offline, all on free loopback ports; and stops them again.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { startTools, startUpstream } from './mocks.mjs';

export const LARIAT_KEY = 'sk-e2e-openwebui-0123456789';
export const ADMIN = { name: 'Ada Admin', email: 'ada@example.com', password: 'e2e-admin-password' };
export const USER = { name: 'Bob User', email: 'bob@example.com', password: 'e2e-user-password' };

export const WEBUI_VERSION = '0.12.4';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// A port nobody listens on right now (the OS picks it; the child binds it a moment later).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function lariatConfig({ port, upstream, tools }) {
  return `# Written by e2e/openwebui/stack.mjs for one run.
[server]
listen = "127.0.0.1:${port}"

[upstream]
retries = 0

[providers.mock]
base_url = "${upstream}/v1"
api_key = "sk-mock-upstream-0123456789"

[models.agent]
description = "Tools, confirmations and live progress"
chain = [{ target = "mock/e2e-model", context_window = 128000 }]
tools = ["slow_lookup", "deploy", "admin_reset"]
progress = "status"

[models.plain]
description = "No server tools: a relay"
chain = ["mock/e2e-model"]
tools = []

# Open WebUI's TASK_MODEL_EXTERNAL: background tasks get no tools at all.
[models.tasks]
description = "Titles, tags and follow-ups"
chain = ["mock/e2e-tasks"]
tools = []

[tools.http.slow_lookup]
description = "Look something up (slow)"
url = "${tools}/slow_lookup"
timeout_s = 120
parameters = { type = "object", properties = { topic = { type = "string" } } }

[tools.http.deploy]
description = "Deploy the application"
url = "${tools}/deploy"
parameters = { type = "object", properties = { target = { type = "string" } } }

[tools.http.admin_reset]
description = "Reset everything (administrators only)"
url = "${tools}/admin_reset"
min_access = "admin"

[tools.builtin.current_time]
enabled = false

[tools.builtin.fetch_url]
enabled = false

[confirm]
tools = ["deploy"]

[[keys]]
key = "${LARIAT_KEY}"
user = "open-webui"
access = "admin"
forwarded_identity = "openwebui"
role_access = { admin = "admin", user = "user" }
`;
}

async function waitHttp(url, what, timeoutMs, child) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode} before it was up`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(500);
  }
  throw new Error(`${what} not up at ${url} after ${timeoutMs / 1000} s`);
}

/// Every child started, so an interrupted run can stop them (see `stopAll`).
const started = [];

function start(command, args, env, logFile) {
  const out = fs.openSync(logFile, 'a');
  // Its own process group, so stopping it also stops what it started (uvicorn workers).
  const child = spawn(command, args, { env, stdio: ['ignore', out, out], detached: true });
  started.push(child);
  return child;
}

export async function stopAll() {
  await Promise.all(started.map(stop));
}

/// SIGTERM to the child's group, SIGKILL if it is still there 10 s later.
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  const signal = (sig) => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  const late = await Promise.race([exited.then(() => false), sleep(10_000).then(() => true)]);
  if (late) signal('SIGKILL');
}

export async function startStack({ lariatBin, venv, runDir, logDir }) {
  const upstream = await startUpstream();
  const tools = await startTools();
  const children = [];
  const stack = { upstream, tools, children };
  stack.stop = async () => {
    await Promise.all(children.map(stop));
    upstream.close();
    tools.close();
  };
  try {
    const lariatPort = await freePort();
    const configPath = path.join(runDir, 'lariat.toml');
    fs.writeFileSync(configPath, lariatConfig({ port: lariatPort, upstream: upstream.url, tools: tools.url }));
    // A copy: a build in a shared target directory must not replace it mid-run.
    const binary = path.join(runDir, 'lariat');
    fs.copyFileSync(lariatBin, binary);
    fs.chmodSync(binary, 0o755);
    const lariat = start(
      binary,
      ['serve', '--config', configPath],
      { PATH: process.env.PATH, HOME: process.env.HOME, LARIAT_KEY, RUST_LOG: 'info' },
      path.join(logDir, 'lariat.log'),
    );
    children.push(lariat);
    stack.lariat = `http://127.0.0.1:${lariatPort}`;
    await waitHttp(`${stack.lariat}/ready`, 'lariat', 30_000, lariat);

    const webuiPort = await freePort();
    const dataDir = path.join(runDir, 'openwebui-data');
    fs.mkdirSync(dataDir, { recursive: true });
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      LANG: 'C.UTF-8',
      OFFLINE_MODE: 'true',
      HF_HUB_OFFLINE: '1',
      ENABLE_PERSISTENT_CONFIG: 'false',
      RAG_EMBEDDING_ENGINE: 'openai',
      ENABLE_OLLAMA_API: 'false',
      ENABLE_OPENAI_API: 'true',
      OPENAI_API_BASE_URL: `${stack.lariat}/v1`,
      OPENAI_API_KEY: LARIAT_KEY,
      DATA_DIR: dataDir,
      WEBUI_SECRET_KEY: 'e2e-secret-key-not-secret',
      ENABLE_VERSION_UPDATE_CHECK: 'false',
      ENABLE_FORWARD_USER_INFO_HEADERS: 'true',
      // Two people with different roles need sign-in; the first sign-up is the admin.
      WEBUI_AUTH: 'true',
      ENABLE_SIGNUP: 'true',
      // Models from a connection are admin-only until an admin shares them.
      BYPASS_MODEL_ACCESS_CONTROL: 'true',
      TASK_MODEL_EXTERNAL: 'tasks',
      ANONYMIZED_TELEMETRY: 'false',
      DO_NOT_TRACK: 'true',
      SCARF_NO_ANALYTICS: 'true',
    };
    const webui = start(
      path.join(venv, 'bin', 'open-webui'),
      ['serve', '--host', '127.0.0.1', '--port', String(webuiPort)],
      env,
      path.join(logDir, 'openwebui.log'),
    );
    children.push(webui);
    stack.webui = `http://127.0.0.1:${webuiPort}`;
    await waitHttp(`${stack.webui}/health`, 'Open WebUI', 300_000, webui);
    return stack;
  } catch (e) {
    await stack.stop();
    throw e;
  }
}

async function api(base, route, body, token) {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${route}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/// The admin signs up first (so is admin); the admin adds a person with role "user".
export async function createPeople(webui) {
  const admin = await api(webui, '/api/v1/auths/signup', ADMIN);
  if (admin.role !== 'admin') throw new Error(`the first sign-up should be admin, is ${admin.role}`);
  await api(webui, '/api/v1/auths/add', { ...USER, role: 'user' }, admin.token);
  const user = await api(webui, '/api/v1/auths/signin', { email: USER.email, password: USER.password });
  if (user.role !== 'user') throw new Error(`the second person should be a user, is ${user.role}`);
  // An admin is shown the release notes once per version; mark them seen.
  await api(webui, '/api/v1/users/user/settings/update', { ui: { version: WEBUI_VERSION } }, admin.token);
  return { admin: admin.token, user: user.token };
}
