// The official openai Node SDK parses lariat's stream in every progress mode.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.LARIAT_URL, apiKey: process.env.LARIAT_KEY, maxRetries: 0 });
const out = {};
for (const mode of ['off', 'status', 'reasoning', 'content']) {
  const stream = await client.chat.completions.create(
    { model: 'agent', messages: [{ role: 'user', content: 'echo hi' }], stream: true },
    { headers: { 'x-lariat-progress': mode } },
  );
  let content = '', reasoning = '', chunks = 0, finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    for (const choice of chunk.choices) {
      content += choice.delta.content ?? '';
      reasoning += choice.delta.reasoning_content ?? '';
      finish = choice.finish_reason ?? finish;
    }
  }
  out[mode] = { content, reasoning, chunks, finish };
}
console.log(JSON.stringify(out));
