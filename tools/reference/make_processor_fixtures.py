"""Processor reference fixtures: a small byte-level BPE tokenizer in Qwen2's style (trained here
on English and Korean text), saved with transformers' Qwen2VLProcessor as a checkpoint
directory, and what that processor makes of a set of conversations.

Images go through the processor's own image processor (Qwen2VLImageProcessorPil, the
Pillow-exact one); videos go through qwen_vl_utils.fetch_video (torchcodec) and then the
processor with the video processor's do_resize/do_sample_frames off, as qwen_vl_utils
documents. Position ids come from Qwen2VLModel.get_rope_index: the original rule
(transformers 4.57, rope_index_v4.py) as `position_ids`, transformers 5's as
`position_ids_transformers5` (they differ after a video with more temporal than spatial
merged positions).

Rerun (offline):
    PYTHONPATH=/tmp/qvu /tmp/ref/bin/python tools/reference/make_processor_fixtures.py
(needs /tmp/tf4/site, see rope_index_v4.py)
Writes fixtures/processor/{checkpoint/,cases.json,reference.safetensors}.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "torchcodec")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from PIL import Image
from qwen_vl_utils import vision_process as vp
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                          Qwen2VLProcessor, Qwen2VLVideoProcessor)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

ROOT = pathlib.Path(__file__).resolve().parents[2]
# An unpacked transformers 4.57 wheel (see rope_index_v4.py).
TRANSFORMERS4 = os.environ.get("TRANSFORMERS4", "/tmp/tf4/site")
OUT = ROOT / "fixtures" / "processor"
CKPT = OUT / "checkpoint"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
# Qwen2's pre-tokenizer pattern (tokenizer.json of Qwen2-VL).
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# The chat template of Qwen/Qwen2-VL-7B-Instruct.
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is in this picture? Describe the video in one sentence.",
    "A red square moves across a striped background.",
    "You are a helpful assistant. Answer briefly and precisely.",
    "Numbers like 2026 and 3.14 are split into digits.",
    "이 사진에 무엇이 있나요? 영상을 한 문장으로 설명해 주세요.",
    "빨간 사각형이 줄무늬 배경 위를 움직입니다.",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "한국어와 영어를 모두 잘 이해하는 모델입니다.",
    "The cat sat on the mat; the dog didn't.",
] * 20
IMAGE_BOUNDS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
VIDEO_BOUNDS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 8}


def build_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    CKPT.mkdir(parents=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            size={"shortest_edge": IMAGE_BOUNDS["min_pixels"], "longest_edge": IMAGE_BOUNDS["max_pixels"]}),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    processor.save_pretrained(CKPT)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}

    images = ROOT / "fixtures" / "images"
    gif = ROOT / "fixtures" / "videos" / "clip.gif"
    convs = {
        "text_ko": [
            {"role": "system", "content": "You are a helpful assistant. 한국어로 답하세요."},
            {"role": "user", "content": [{"type": "text", "text": "안녕하세요! What is 2+2?"}]},
            {"role": "assistant", "content": "4입니다."},
            {"role": "user", "content": "Thanks.\n  Bye  "},
        ],
        "image": [{"role": "user", "content": [
            {"type": "image", "image": "images/photo.jpg"},
            {"type": "text", "text": "What is in this picture?"}]}],
        "two_images": [{"role": "user", "content": [
            {"type": "text", "text": "Compare "},
            {"type": "image", "image": "images/tall_32x800.png"},
            {"type": "text", "text": " and "},
            {"type": "image", "image": "images/rgba.png"}]}],
        "video": [{"role": "user", "content": [
            {"type": "video", "video": "videos/clip.gif", **VIDEO_BOUNDS},
            {"type": "text", "text": "영상을 설명해 주세요."}]}],
        "image_and_video": [{"role": "user", "content": [
            {"type": "image", "image": "images/gray.png"},
            {"type": "video", "video": "videos/clip.gif", "fps": 5.0, **VIDEO_BOUNDS},
            {"type": "text", "text": "Same scene?"}]}],
    }
    batches = {"single_" + k: [k] for k in convs} | {
        "batch_left": ["text_ko", "image", "video"],
        "batch_right": ["text_ko", "image", "video"],
    }

    config = Qwen2VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, spatial_merge_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2VLForConditionalGeneration(config).eval()

    def media(conv):
        imgs, vids, fps = [], [], []
        for m in conv:
            if isinstance(m["content"], str):
                continue
            for part in m["content"]:
                if part["type"] == "image":
                    imgs.append(Image.open(ROOT / "fixtures" / part["image"]))
                elif part["type"] == "video":
                    ele = {k: v for k, v in part.items() if k != "type"}
                    ele["video"] = str(ROOT / "fixtures" / part["video"])
                    video, sample_fps = vp.fetch_video(ele, return_video_sample_fps=True)
                    vids.append(video)
                    fps.append(sample_fps)
        return imgs, vids, fps

    cases, tensors = [], {}
    for name, keys in batches.items():
        texts, imgs, vids, fps = [], [], [], []
        for k in keys:
            texts.append(processor.apply_chat_template(convs[k], tokenize=False, add_generation_prompt=True))
            i, v, f = media(convs[k])
            imgs += i
            vids += v
            fps += f
        side = "right" if name.endswith("right") else "left"
        out = processor(text=texts, images=imgs or None, videos=vids or None, padding=True,
                        padding_side=side, return_tensors="pt",
                        videos_kwargs={"do_resize": False, "do_sample_frames": False})
        ids_t, am = out["input_ids"], out["attention_mask"]
        tt = torch.zeros_like(ids_t)
        tt[ids_t == ids["<|image_pad|>"]] = 1
        tt[ids_t == ids["<|video_pad|>"]] = 2
        pos, deltas = model.model.get_rope_index(
            ids_t, mm_token_type_ids=tt.to(torch.int32), image_grid_thw=out.get("image_grid_thw"),
            video_grid_thw=out.get("video_grid_thw"), attention_mask=am)
        tensors[f"{name}.input_ids"] = ids_t.to(torch.int64).contiguous()
        tensors[f"{name}.attention_mask"] = am.to(torch.int64).contiguous()
        tensors[f"{name}.position_ids_transformers5"] = pos.to(torch.int64).contiguous()
        tensors[f"{name}.rope_deltas_transformers5"] = deltas.to(torch.int64).reshape(-1).contiguous()
        for key in ["pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"]:
            # A batch's pixel values are its conversations' in order; store them once.
            if key in out and (name.startswith("single_") or "grid" in key):
                t = out[key]
                tensors[f"{name}.{key}"] = (t.to(torch.int64) if "grid" in key else t.float()).contiguous()
        cases.append({"name": name, "conversations": [convs[k] for k in keys], "padding_side": side,
                      "texts": texts, "video_sample_fps": fps})
    # Position ids by the original rule (transformers 4.57), in a second interpreter.
    tmp = OUT / "tmp"
    tmp.mkdir()
    save_file({k: v for k, v in tensors.items() if k.split(".")[1] in
               ("input_ids", "attention_mask", "image_grid_thw", "video_grid_thw")}, tmp / "in.safetensors")
    (tmp / "ids.json").write_text(json.dumps(ids))
    subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("rope_index_v4.py")),
                    str(tmp / "in.safetensors"), str(tmp / "ids.json"), str(tmp / "out.safetensors")],
                   env={**os.environ, "PYTHONPATH": TRANSFORMERS4}, check=True)
    tensors.update(load_file(tmp / "out.safetensors"))
    shutil.rmtree(tmp)
    save_file(tensors, OUT / "reference.safetensors")
    (OUT / "cases.json").write_text(json.dumps({
        "generator": "tools/reference/make_processor_fixtures.py",
        "transformers": transformers.__version__, "qwen_vl_utils": "0.0.14",
        "special_token_ids": ids,
        "note": "media paths are relative to fixtures/; texts are the chat template's output before "
                "the pads are expanded",
        "cases": cases}, ensure_ascii=False, indent=1))
    for c in cases:
        print(c["name"], tensors[c["name"] + ".input_ids"].shape)


if __name__ == "__main__":
    main()
