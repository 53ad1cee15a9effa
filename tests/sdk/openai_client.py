"""Drives lariat with the official openai SDK and prints what it saw as JSON."""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["LARIAT_URL"], api_key=os.environ["LARIAT_KEY"], max_retries=0)
messages = [{"role": "user", "content": "hello"}]

models = [m.id for m in client.models.list()]

complete = client.chat.completions.create(model="assistant", messages=messages, temperature=0.5)

content, ids, finish_reason = "", set(), None
for chunk in client.chat.completions.create(model="assistant", messages=messages, stream=True):
    ids.add(chunk.id)
    for choice in chunk.choices:
        content += choice.delta.content or ""
        finish_reason = choice.finish_reason or finish_reason

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    unknown_model_status = None
except openai.NotFoundError as e:
    unknown_model_status = e.status_code

# A stream that breaks after content: the SDK must raise, not return a short answer.
partial, broken = "", None
try:
    for chunk in client.chat.completions.create(model="assistant", messages=messages, stream=True):
        for choice in chunk.choices:
            partial += choice.delta.content or ""
except openai.APIError as e:
    broken = str(e)

print(json.dumps({
    "models": models,
    "complete": {
        "content": complete.choices[0].message.content,
        "model": complete.model,
        "total_tokens": complete.usage.total_tokens,
    },
    "stream": {"content": content, "ids": len(ids), "finish_reason": finish_reason},
    "unknown_model_status": unknown_model_status,
    "broken_stream": {"partial": partial, "error": broken},
}))
