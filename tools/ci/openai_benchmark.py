"""Asks `nuri serve`, through the official `openai` Python client, every question that
`nuri eval --benchmark ... --requests REQUESTS` asked, and checks that the server gives the
same answers: the same content, and the same reasoning in `reasoning_content` (vLLM's field).

Usage: python openai_benchmark.py BASE_URL MODEL REQUESTS PREDICTIONS
"""
import json
import sys

import openai

base_url, model, requests_file, predictions_file = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key="unused")

predictions = {}
with open(predictions_file, encoding="utf-8") as f:
    for line in f:
        p = json.loads(line)
        predictions[p["key"]] = p

asked = same = with_reasoning = 0
with open(requests_file, encoding="utf-8") as f:
    for line in f:
        request = json.loads(line)
        body = request["body"]
        # The fields the OpenAI API does not have go in the request body as they are.
        extra = {k: body.pop(k) for k in ("chat_template_kwargs", "max_thinking_tokens") if k in body}
        body["model"] = model
        reply = client.chat.completions.create(**body, extra_body=extra)
        message = reply.choices[0].message
        content = (message.content or "").strip()
        reasoning = (message.model_extra or {}).get("reasoning_content")
        expected = predictions[request["key"]]
        asked += 1
        want_reasoning = expected.get("reasoning")
        if want_reasoning is not None:
            with_reasoning += 1
        if content == expected.get("prediction") and (reasoning or "").strip() == (want_reasoning or "").strip():
            same += 1
        else:
            print(f"{request['key']}: server {content!r} / {reasoning!r}; "
                  f"nuri eval {expected.get('prediction')!r} / {want_reasoning!r}")

print(f"openai client: {same} of {asked} answers as nuri eval gave them "
      f"({with_reasoning} with a reasoning block)")
if asked == 0 or same != asked:
    sys.exit(1)
if with_reasoning == 0:
    sys.exit("no answer had a reasoning block: the check did not exercise reasoning_content")
