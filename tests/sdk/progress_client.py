"""The official openai Python SDK parses lariat's stream in every progress mode."""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["LARIAT_URL"], api_key=os.environ["LARIAT_KEY"], max_retries=0)
out = {}
for mode in ["off", "status", "reasoning", "content"]:
    content, reasoning, chunks, finish = "", "", 0, None
    stream = client.chat.completions.create(
        model="agent", messages=[{"role": "user", "content": "echo hi"}], stream=True,
        extra_headers={"x-lariat-progress": mode},
    )
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            finish = choice.finish_reason or finish
    out[mode] = {"content": content, "reasoning": reasoning, "chunks": chunks, "finish": finish}
print(json.dumps(out))
