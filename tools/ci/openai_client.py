"""Drives `nuri serve` with the official `openai` Python client: a plain completion, a
streamed one with an image as a base64 data URL, the model list, and an error.

Usage: python openai_client.py BASE_URL MODEL IMAGE
"""
import base64
import sys

import openai

base_url, model, image = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused")

models = [m.id for m in client.models.list().data]
assert model in models, models

plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "안녕하세요?"}], max_tokens=8, temperature=0)
answer = plain.choices[0].message.content
assert isinstance(answer, str), plain
assert plain.usage.completion_tokens <= 8, plain.usage

url = "data:image/png;base64," + base64.b64encode(open(image, "rb").read()).decode()
stream = client.chat.completions.create(
    model=model, stream=True, max_tokens=8, temperature=0,
    messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What is in this picture?"}]}])
pieces, finish = [], None
for chunk in stream:
    delta = chunk.choices[0].delta
    if delta.content:
        pieces.append(delta.content)
    finish = chunk.choices[0].finish_reason or finish
assert finish in ("stop", "length"), finish
print(f"plain: {answer!r}; streamed with an image: {''.join(pieces)!r} ({len(pieces)} chunks, {finish})")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("an unknown model must be an error")
except openai.NotFoundError as e:
    assert e.status_code == 404
print("openai client: ok")
