"""Writes fixtures/eval/vqa.json: short answers scored by VLMEvalKit's VQA evaluation
(vlmeval/dataset/utils/vqa_eval.py: `process_answer`, `process_line` with `vqa_score` and
`anls`, and `hit_calculate`'s ANLS threshold), for the Rust test that checks
`nuri eval --benchmark`'s scoring against it.

Usage: python make_vqa_fixture.py VLMEVALKIT_CHECKOUT [COMMIT]
(a VLMEvalKit source checkout; vqa_eval.py and smp/misc.py's `process_punctuation` and
`istype` are loaded, offline, without the rest of the package)
"""
import ast
import json
import os
import random
import sys
import types

root = sys.argv[1]
commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
out = os.path.join(os.path.dirname(__file__), "../../fixtures/eval/vqa.json")

misc_src = open(os.path.join(root, "vlmeval/smp/misc.py"), encoding="utf-8").read()
smp = types.ModuleType("vlmeval.smp")
tree = ast.parse(misc_src)
wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("process_punctuation", "istype")]
exec(compile(ast.Module(body=wanted, type_ignores=[]), "misc.py", "exec"), smp.__dict__)
smp.listinstr = lambda lst, s: any(x in s for x in lst)
sys.modules["vlmeval"] = types.ModuleType("vlmeval")
sys.modules["vlmeval.smp"] = smp
sys.modules.setdefault("numpy", types.ModuleType("numpy"))  # only hit_calculate uses it
vqa = types.ModuleType("vqa_eval")
src = open(os.path.join(root, "vlmeval/dataset/utils/vqa_eval.py"), encoding="utf-8").read()
exec(compile(src, "vqa_eval.py", "exec"), vqa.__dict__)

rng = random.Random(0)
words = ["Two", "two", "2", "the", "a", "an", "dog", "dogs", "cat", "Red", "red", "yes", "no",
         "dont", "Im", "isnt", "ten", "none", "1,000", "1000", "2.5", "3.", "U.S.A.", "e.g.",
         "black-and-white", "black and white", "(left)", "left!", "@home", "a/b", "it's",
         "youre", "Wasnt", "10", "  ", "\n", "\t", "invoice", "Invoice No.", "총액", "빨간색"]


def phrase():
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))


cases = []
for _ in range(300):
    n = rng.choice([1, 1, 3, 10])
    answers = [phrase() for _ in range(n)]
    if n == 10:  # human answers agree more often than not
        common = phrase()
        answers = [common if rng.random() < 0.6 else a for a in answers]
    prediction = rng.choice(answers) if rng.random() < 0.5 else phrase()
    if rng.random() < 0.3:
        prediction = prediction.upper() + rng.choice(["", ".", " !", "\n"])
    line = {"answer": str(answers) if n > 1 else answers[0], "prediction": prediction}
    score = vqa.process_line(line, "vqa_score")
    anls = vqa.process_line(line, "anls")
    best = 1 - min(anls["match"])
    cases.append({
        "prediction": prediction,
        "answers": answers,
        "normalized": vqa.process_answer(prediction),
        # The mean over the leave-one-out sets (with one answer VLMEvalKit's is always 0).
        "vqa_score": sum(score["match"]) / len(score["match"]),
        "anls": 0.0 if best < 0.5 else best,
    })
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w", encoding="utf-8") as f:
    json.dump({"source": "VLMEvalKit vlmeval/dataset/utils/vqa_eval.py", "commit": commit,
               "cases": cases}, f, ensure_ascii=False, indent=0)
print(f"{len(cases)} cases")
