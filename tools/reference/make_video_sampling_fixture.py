"""Frame-sampling reference: qwen_vl_utils' smart_nframes, its torch.linspace(...).round()
frame indices and fetch_video's per-video pixel bounds, over a grid of videos and options.

Rerun (offline; qwen-vl-utils is a pure-Python wheel from the package registry):
    /tmp/ref/bin/pip download --no-deps -d /tmp/qvu qwen-vl-utils && cd /tmp/qvu && unzip -o *.whl
    PYTHONPATH=/tmp/qvu /tmp/ref/bin/python tools/reference/make_video_sampling_fixture.py
Writes fixtures/video_sampling.json.
"""
import json
import math
import pathlib
import sys

import torch
from qwen_vl_utils import vision_process as vp

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "video_sampling.json"


def bounds(nframes, ele, image_factor=28):
    # The pixel-bound arithmetic of fetch_video, unchanged.
    frame_min = vp.VIDEO_MIN_TOKEN_NUM * image_factor * image_factor
    frame_max = vp.VIDEO_MAX_TOKEN_NUM * image_factor * image_factor
    min_pixels = ele.get("min_pixels", frame_min)
    total_pixels = ele.get("total_pixels", vp.MODEL_SEQ_LEN * image_factor * image_factor * 0.9)
    max_pixels = max(min(frame_max, total_pixels / nframes * vp.FRAME_FACTOR), int(min_pixels * 1.05))
    max_pixels = min(ele.get("max_pixels", max_pixels), max_pixels)
    return min_pixels, max_pixels


rows = []
for total, video_fps in [(4, 2.0), (9, 10.0), (50, 25.0), (132, 25.0), (300, 29.97), (1000, 30.0), (7, 1.0)]:
    for ele in [{}, {"fps": 1.0}, {"fps": 4.0, "max_frames": 16}, {"fps": 0.5, "min_frames": 6}, {"nframes": 5},
                {"fps": 2.0, "total_pixels": 20 * 28 * 28 * 8}, {"fps": 2.0, "max_pixels": 100 * 28 * 28}]:
        try:
            n = vp.smart_nframes(ele, total_frames=total, video_fps=video_fps)
        except ValueError:
            rows.append({"total_frames": total, "video_fps": video_fps, "options": ele, "error": True})
            continue
        idx = torch.linspace(0, total - 1, n).round().long().tolist()
        mn, mx = bounds(n, ele)
        rows.append({"total_frames": total, "video_fps": video_fps, "options": ele, "nframes": n,
                     "indices": idx, "min_pixels": mn, "max_pixels": mx})
OUT.write_text(json.dumps({"generator": "tools/reference/make_video_sampling_fixture.py",
                           "qwen_vl_utils": "0.0.14", "torch": torch.__version__, "rows": rows}, indent=1))
print(f"wrote {OUT}: {len(rows)} rows, {sum(r.get('error', False) for r in rows)} errors")
