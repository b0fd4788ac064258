"""Writes the CI's small benchmark files into DIR: `mc.tsv` (VLMEvalKit's multiple-choice
layout: a base64 image, a row pointing at it by index, a missing option, a Korean question)
and `video.jsonl` (Video-MME-style: a video path and an options list).

Usage: python write_benchmarks.py DIR IMAGE VIDEO
"""
import base64
import csv
import json
import os
import sys

out, image, video = sys.argv[1:4]
b64 = base64.b64encode(open(image, "rb").read()).decode()
rows = [
    dict(index=0, question="What is in this picture?", hint="", A="A red square", B="A blue circle",
         C="Nothing", D="", answer="A", category="objects", image=b64),
    dict(index=1, question="이 사진에 무엇이 있나요?", hint="", A="빨간 사각형", B="파란 원", C="", D="",
         answer="A", category="objects", image="0"),
]
with open(os.path.join(out, "mc.tsv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
    w.writeheader()
    w.writerows(rows)
with open(os.path.join(out, "video.jsonl"), "w", encoding="utf-8") as f:
    f.write(json.dumps({"index": 0, "video": video, "question": "Which way does the square move?",
                        "options": "['A. left', 'B. right']", "answer": "B",
                        "task_type": "direction"}) + "\n")
