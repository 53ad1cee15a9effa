// The Vercel AI SDK's default OpenAI provider (the Responses API) against lariat:
// generateText, streamText and a multi-step client tool. Prints what it saw as JSON.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const openai = createOpenAI({ baseURL: process.env.LARIAT_URL, apiKey: process.env.LARIAT_KEY });

const plain = await generateText({ model: openai('assistant'), prompt: 'Say hello', maxRetries: 0 });

const streamed = streamText({ model: openai('assistant'), prompt: 'Stream please', maxRetries: 0 });
let text = '';
for await (const piece of streamed.textStream) text += piece;

const calls = [];
const multi = await generateText({
  model: openai('assistant'),
  prompt: 'Weather in Oslo?',
  maxRetries: 0,
  stopWhen: stepCountIs(3),
  tools: {
    get_weather: tool({
      description: 'Weather in a city',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        calls.push(city);
        return { city, sky: 'clear' };
      },
    }),
  },
});

console.log(JSON.stringify({
  plain: { text: plain.text, inputTokens: plain.usage.inputTokens, outputTokens: plain.usage.outputTokens },
  streamed: { text, finishReason: await streamed.finishReason, totalTokens: (await streamed.usage).totalTokens },
  multi: { text: multi.text, steps: multi.steps.length, calls },
}));
