// Reading and driving Open WebUI 0.12.4's chat page. Every wait polls the page for a
// state with a deadline; a check that fails is never retried.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Polls `probe` until it returns something truthy; on timeout, fails with what it
/// saw last (so a CI log says which state never came).
export async function waitFor(what, probe, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last && last.ok !== false) return last;
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last seen: ${JSON.stringify(last)}`);
}

export function check(condition, message, seen) {
  if (!condition) throw new Error(`check failed: ${message}${seen === undefined ? '' : `; seen: ${JSON.stringify(seen)}`}`);
}

/// The assistant messages on screen (the branch shown), oldest first.
export async function assistants(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.chat-assistant')].map((el) => {
      const block = el.closest('[id^="message-"]') ?? el;
      const counter = [...block.querySelectorAll('div')].find((d) => /^\d+\/\d+$/.test(d.innerText.trim()));
      return {
        id: block.id,
        text: el.innerText,
        // The toolbar (regenerate, copy…) is drawn only once the message is done.
        done: Boolean(block.querySelector('button[aria-label="Regenerate"]')),
        status: [...block.querySelectorAll('.status-description')].map((s) => s.innerText.trim()),
        sibling: counter ? counter.innerText.trim() : null,
      };
    }),
  );
}

/// Waits until there are `count` assistant messages and the last one is done.
export async function answer(page, count, what) {
  return waitFor(what ?? `assistant message ${count} to finish`, async () => {
    const all = await assistants(page);
    const last = all.at(-1);
    return all.length === count && last.done ? last : { ok: false, count: all.length, last };
  });
}

export async function newChat(page, base, model) {
  await page.goto(`${base}/`);
  await page.locator('#chat-input').waitFor({ timeout: 60_000 });
  await page.click('#model-selector-model-button');
  await page.locator(`[role="option"][aria-label="Select ${model} model"]`).click({ timeout: 30_000 });
  await waitFor(`model ${model} selected`, async () =>
    (await page.locator('#model-selector-model-button').innerText()).trim() === model,
  );
}

export async function send(page, text) {
  await page.click('#chat-input');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

/// The options of the model picker (opened and closed again).
export async function pickerModels(page) {
  await page.click('#model-selector-model-button');
  const labels = await waitFor('the model picker to list models', async () => {
    const found = await page.locator('[role="option"]').evaluateAll((os) => os.map((o) => o.getAttribute('aria-label')));
    return found.length ? found : null;
  });
  await page.keyboard.press('Escape');
  return labels;
}
