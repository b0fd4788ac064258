"""Writes fixtures/eval/extraction.json: answers and their options with the letter
VLMEvalKit's exact matching reads from them (`can_infer`, then "Z" as
`extract_answer_from_item` gives under the `exact_matching` policy), for the Rust test that
checks `nuri eval --benchmark`'s extraction against it.

Usage: python make_extraction_fixture.py VLMEVALKIT_CHECKOUT [COMMIT]
(a VLMEvalKit source checkout, and the commit it is at for the record; only
vlmeval/utils/matching_util.py is loaded, offline)
"""
import json
import os
import random
import sys
import types

root = sys.argv[1]
commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
out = os.path.join(os.path.dirname(__file__), "../../fixtures/eval/extraction.json")

# matching_util imports only a logger from the package; give it one without the rest.
log = types.ModuleType("vlmeval.smp.log")
log.get_logger = lambda name: __import__("logging").getLogger(name)
for name in ("vlmeval", "vlmeval.smp"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["vlmeval.smp.log"] = log
source = open(os.path.join(root, "vlmeval/utils/matching_util.py"), encoding="utf-8").read()
matching = types.ModuleType("matching_util")
exec(compile(source, "matching_util.py", "exec"), matching.__dict__)

rng = random.Random(0)
texts_en = ["red", "blue", "a red circle", "a blue square", "green", "two", "three", "the cat",
            "left", "right", "apple", "Paris", "1,000", "none of these"]
texts_ko = ["빨간색", "파란색", "초록색", "사각형", "원", "왼쪽", "오른쪽", "두 개", "세 개"]
fillers = ["The", "answer", "is", "I", "think", "because", "the", "picture", "shows", "it",
           "correct", "option", "so", "a", "Answer:", "**", "(", ")", ".", ",", "정답은", "입니다",
           "Z", "not", "maybe", "E"]


def case():
    n = rng.randint(2, 5)
    pool = texts_ko if rng.random() < 0.3 else texts_en
    texts = rng.sample(pool, min(n, len(pool)))
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    kind = rng.random()
    if kind < 0.15:
        answer = rng.choice(list(options))
    elif kind < 0.3:
        answer = rng.choice(["(", "**", ""]) + rng.choice(list(options)) + rng.choice([")", ".", "**", ":", ""])
    elif kind < 0.45:
        answer = rng.choice(list(options.values()))
        if rng.random() < 0.5:
            answer = answer.upper() if rng.random() < 0.5 else f"It is {answer}."
    else:
        words = [rng.choice(fillers) for _ in range(rng.randint(1, 16))]
        for _ in range(rng.randint(0, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(list(options) + list(options.values())))
        if rng.random() < 0.2:
            words += ["the", "answer", "is", rng.choice(["**B**", "c", "D.", "a", "E"])]
        answer = " ".join(words)
    return answer, options


cases = []
for refusal in ["Cannot determine the answer from the image.", "Z", ""]:
    cases.append((refusal, {"A": "yes", "B": "no"}))
while len(cases) < 400:
    cases.append(case())
rows = []
for answer, options in cases:
    got = matching.can_infer(answer, dict(options))
    rows.append({"answer": answer, "options": [[k, v] for k, v in options.items()],
                 "expected": got if got else "Z"})
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w", encoding="utf-8") as f:
    json.dump({"source": "VLMEvalKit vlmeval/utils/matching_util.py can_infer",
               "commit": commit, "cases": rows}, f, ensure_ascii=False, indent=0)
print(f"{len(rows)} cases; letters: {sum(r['expected'] != 'Z' for r in rows)}, Z: {sum(r['expected'] == 'Z' for r in rows)}")
