"""Video reference fixtures: a 2-second test clip in every format Nuri reads, and what
qwen_vl_utils (torchcodec backend) + transformers' Qwen2VLVideoProcessor make of it.

The clip: 20 frames of 90x60 at 10 fps, drawn from a 216-colour palette so that GIF, APNG,
lossless WebP and PNG frames hold identical pixels. The mp4 is H.264 (libx264, yuv420p) and
the webm VP9 (libvpx), encoded by the `ffmpeg` command-line tool from the PNG frames.

Rerun (offline; needs the system FFmpeg 5.1 libraries and CLI, `apt-get install ffmpeg`):
    /tmp/ref/bin/pip install torchcodec          # qwen_vl_utils' preferred video reader
    PYTHONPATH=/tmp/qvu /tmp/ref/bin/python tools/reference/make_video_fixtures.py
Writes fixtures/videos/{clip.gif,clip.apng,clip.webp,clip.mp4,clip.webm,frames/,reference.json,
reference.safetensors}.
"""
import json
import os
import pathlib
import shutil
import subprocess

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "torchcodec")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torchcodec
import transformers
from PIL import Image
from qwen_vl_utils import vision_process as vp
from safetensors.torch import save_file
from transformers import Qwen2VLVideoProcessor

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "videos"
FRAMES, WIDTH, HEIGHT, FPS = 20, 90, 60, 10
# Small per-frame bounds keep the committed pixel values small (56x84 frames).
BOUNDS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 8}


def frame(t):
    """A gradient, a moving square and a moving stripe, every channel a multiple of 51."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    r = (x * 6 // WIDTH) * 51
    g = (y * 6 // HEIGHT) * 51
    b = np.full_like(x, (t % 6) * 51)
    sq = (abs(x - (5 + 4 * t)) < 8) & (abs(y - (10 + 2 * t)) < 8)
    stripe = (x + y + 3 * t) % 23 < 3
    r = np.where(sq, 255, r)
    g = np.where(sq, 0, g)
    b = np.where(stripe, 255 - b, b)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def write_clip():
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "frames").mkdir(parents=True)
    frames = [frame(t) for t in range(FRAMES)]
    for t, im in enumerate(frames):
        im.save(OUT / "frames" / f"frame_{t + 1}.png")  # unpadded: tests numeric order
    ms = 1000 // FPS
    frames[0].save(OUT / "clip.gif", save_all=True, append_images=frames[1:], duration=ms, loop=0,
                   optimize=False, disposal=1)
    frames[0].save(OUT / "clip.apng", format="PNG", save_all=True, append_images=frames[1:], duration=ms,
                   loop=0)
    frames[0].save(OUT / "clip.webp", save_all=True, append_images=frames[1:], duration=ms, loop=0,
                   lossless=True, quality=100, method=0)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", str(FPS), "-start_number", "1", "-i",
                    str(OUT / "frames" / "frame_%d.png"), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-preset", "medium", "-crf", "18", "-g", "8", "-bf", "2", str(OUT / "clip.mp4")],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", str(FPS), "-start_number", "1", "-i",
                    str(OUT / "frames" / "frame_%d.png"), "-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p",
                    "-crf", "20", "-b:v", "0", "-g", "8", str(OUT / "clip.webm")], check=True)
    # A truncated copy for the error tests.
    data = (OUT / "clip.mp4").read_bytes()
    (OUT / "truncated.mp4").write_bytes(data[: len(data) // 2])
    data = (OUT / "clip.gif").read_bytes()
    (OUT / "truncated.gif").write_bytes(data[: len(data) // 2])
    return frames


def main():
    frames = write_clip()
    processor = Qwen2VLVideoProcessor()
    cases, tensors = [], {}
    for file in ["clip.gif", "clip.mp4", "clip.webm"]:
        for options in [{}, {"fps": 5.0}] if file != "clip.webm" else [{}]:
            ele = {"video": str(OUT / file), **BOUNDS, **options}
            video, meta = vp.fetch_video(ele, return_video_metadata=True)
            out = processor(videos=[video], do_resize=False, do_sample_frames=False, return_tensors="pt")
            key = f"{file.replace('.', '_')}_{len(meta['frames_indices'])}"
            tensors[key] = out["pixel_values_videos"].contiguous()
            # The decoded frames themselves, to measure decode differences apart from resizing.
            decoder = torchcodec.decoders.VideoDecoder(str(OUT / file))
            decoded = decoder.get_frames_at(indices=list(meta["frames_indices"])).data
            src = np.stack([np.asarray(frames[i]) for i in meta["frames_indices"]])
            cases.append({
                "file": file, "key": key, "options": {**BOUNDS, **options},
                "total_frames": int(meta["total_num_frames"]), "video_fps": float(meta["fps"]),
                "frame_indices": [int(i) for i in meta["frames_indices"]],
                "resized": list(video.shape[2:]),
                "grid_thw": out["video_grid_thw"][0].tolist(),
                "decode_max_diff_vs_source": int(np.abs(decoded.permute(0, 2, 3, 1).numpy().astype(int)
                                                        - src.astype(int)).max()),
            })
    save_file(tensors, OUT / "reference.safetensors")
    (OUT / "reference.json").write_text(json.dumps({
        "generator": "tools/reference/make_video_fixtures.py",
        "qwen_vl_utils": "0.0.14", "torchcodec": torchcodec.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "frames": FRAMES, "fps": FPS,
        "size": [HEIGHT, WIDTH], "cases": cases}, indent=1))
    for c in cases:
        print(c)


if __name__ == "__main__":
    main()
