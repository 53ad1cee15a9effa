"""Drives a virtual model with an answer model through the official openai SDK."""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["LARIAT_URL"], api_key=os.environ["LARIAT_KEY"], max_retries=0)
messages = [{"role": "user", "content": "echo sdk"}]

raw = client.chat.completions.with_raw_response.create(model="agent", messages=messages)
complete = raw.parse()

content, finish_reason = "", None
for chunk in client.chat.completions.create(model="agent", messages=messages, stream=True):
    for choice in chunk.choices:
        content += choice.delta.content or ""
        finish_reason = choice.finish_reason or finish_reason

print(json.dumps({
    "complete": complete.choices[0].message.content,
    "upstream": raw.headers.get("x-lariat-upstream"),
    "stream": content,
    "finish_reason": finish_reason,
}))
