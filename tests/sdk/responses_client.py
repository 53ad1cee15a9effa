"""Drives lariat's Responses API with the official openai SDK; prints what it saw as JSON."""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["LARIAT_URL"], api_key=os.environ["LARIAT_KEY"], max_retries=0)

plain = client.responses.create(model="assistant", input="Say hello", instructions="Be brief.")

# The SDK's stream helper: typed events, and the final response assembled from them.
deltas, kinds = [], []
with client.responses.stream(model="assistant", input="Stream please") as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()

# A function tool round trip, continued by previous_response_id.
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
asked = client.responses.create(model="assistant", input="Weather in Oslo?", tools=tools)
call = next(item for item in asked.output if item.type == "function_call")
answered = client.responses.create(
    model="assistant",
    previous_response_id=asked.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "clear"})}],
    tools=tools,
)
fetched = client.responses.retrieve(answered.id)
client.responses.delete(answered.id)
try:
    client.responses.retrieve(answered.id)
    after_delete = None
except openai.NotFoundError as e:
    after_delete = e.status_code

print(json.dumps({
    "plain": {"text": plain.output_text, "model": plain.model, "status": plain.status,
              "input_tokens": plain.usage.input_tokens, "output_tokens": plain.usage.output_tokens},
    "stream": {"deltas": deltas, "first": kinds[0], "last": kinds[-1], "text": final.output_text,
               "total_tokens": final.usage.total_tokens},
    "call": {"name": call.name, "arguments": json.loads(call.arguments)},
    "answered": answered.output_text,
    "fetched": fetched.output_text,
    "after_delete": after_delete,
}))
