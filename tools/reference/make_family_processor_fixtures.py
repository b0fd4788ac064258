"""Processor reference fixtures for three more families: Qwen2.5-VL (`qwen2_5_vl`), EXAONE 4.5
(`exaone4_5`) and HyperCLOVA X SEED Think / Vision V2 (`hyperclovax_vision_v2`).

As make_processor_fixtures.py does for Qwen2-VL: one small byte-level BPE tokenizer in Qwen2's
style is trained here (same corpus, NFC, Qwen2's split regex, vocabulary capped at 700) and given
each family's special tokens; each family's transformers processor (Qwen2_5_VLProcessor,
Exaone4_5_Processor, HyperCLOVAXVisionV2Processor) is saved with the family's published chat
template (fixtures/families/<family>/processor/chat_template.jinja) as a checkpoint directory
fixtures/families/<family>/processor/checkpoint/, and what that processor makes of a few
conversations is stored in fixtures/families/<family>/processor/{reference.safetensors,cases.json}.

Rendering: Qwen2.5-VL and EXAONE 4.5 with `processor.apply_chat_template(tokenize=False)`;
HyperCLOVA X with `processor.tokenizer.apply_chat_template(tokenize=False)` on OpenAI
`image_url` parts (its template ignores `type: image/video` parts and transformers' docs say to
render with the tokenizer). Then `processor(text=..., images=..., videos=..., ...)` with the
media listed in each case's `media` and `call_kwargs` (recorded exactly).

Media: images are opened with Pillow (`Image.open`, the processor converts to RGB). The video is
fixtures/videos/clip.gif (20 frames, 10 fps, 90x60) decoded with Pillow
(`ImageSequence.Iterator`, `.convert("RGB")`, stacked to uint8 [20, 60, 90, 3]) and passed as an
array with `video_metadata` {fps: 10, total_num_frames: 20}: either all 20 frames with
`do_sample_frames=True, fps=2` (transformers samples), or a subset chosen here the way
qwen-vl-utils does (`linspace(0, total - 1, n).round()`) with `frames_indices` in the metadata and
`do_sample_frames=False`. HyperCLOVA X's conversations name the video `videos/clip.mp4` (its
template needs a video extension to call an image_url a video); the frames are still clip.gif's.

Pixels: images through Qwen2VLImageProcessorPil (the saved directory loaded with
`AutoImageProcessor.from_pretrained(..., backend="pil")`; transformers 5's default torchvision
backend differs by up to 0.015 and is recorded as `pixel_values_torchvision_backend`); videos
through transformers' Qwen2VLVideoProcessor, which resizes the uint8 frames itself (torchvision
v2; the qwen-vl-utils resize of the same frames is recorded as
`pixel_values_videos_qwen_vl_utils_resize`). Full pixel values only for the case `image`, else
sha256 and sums.

Rerun (offline, ~10 s):
    HF_HUB_OFFLINE=1 /tmp/ref/bin/python tools/reference/make_family_processor_fixtures.py
Rewrites only checkpoint/, reference.safetensors and cases.json under each family's processor/.
"""
import hashlib
import json
import os
import pathlib
import shutil
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np
import torch
import transformers
from PIL import Image, ImageSequence
from safetensors.torch import save_file
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        trainers)
from transformers import (AutoImageProcessor, Exaone4_5_Processor, HyperCLOVAXVisionV2Processor, PreTrainedTokenizerFast,
                          Qwen2_5_VLProcessor, Qwen2VLVideoProcessor)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils import logging as hf_logging
import torchvision.transforms.functional as tvF1
from torchvision.transforms import InterpolationMode

hf_logging.set_verbosity_error()

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
FAMILIES = FIXTURES / "families"

# Same as make_processor_fixtures.py.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
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

# Image bounds of the Qwen2-VL fixture; HyperCLOVA X uses its own preprocessor_config.json.
IMAGE_SIZE = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
# Per-frame video bounds (all three): 90x60 frames -> 84x56, a 4x6 patch grid per temporal step.
VIDEO_SIZE = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 8}

# Tokens: `special` are added special tokens (skipped by decode(skip_special_tokens=True)),
# `plain` added non-special ones. `first`: the specials take ids 0.. and the trained vocabulary
# is shifted after them (as EXAONE's real vocabulary, bos 1); otherwise every added token is
# appended after the trained vocabulary (as Qwen's and HyperCLOVA X's, in the order given).
FAMILY = {
    "qwen2_5_vl": {
        "processor": Qwen2_5_VLProcessor,
        # Qwen2.5-VL's added tokens in their real order (151643..151664; see SOURCE.md).
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                    "<|image_pad|>", "<|video_pad|>"],
        "plain": ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                  "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
        "first": False,
        "roles": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        # No image_token/video_token on the tokenizer: the processor falls back to
        # <|image_pad|>/<|video_pad|> (as with the published Qwen2.5-VL tokenizer_config.json).
        "extra": None,
        "render": "processor",
    },
    "exaone4_5": {
        "processor": Exaone4_5_Processor,
        "special": ["[PAD]", "[BOS]", "[UNK]", "<|endofturn|>", "<|system|>", "<|user|>",
                    "<|assistant|>", "<|tool|>", "<|tool_declare|>", "<vision>", "</vision>",
                    "<|image_pad|>", "<|video_pad|>", "<think>", "</think>", "<tool_call>",
                    "</tool_call>", "<tool_result>", "</tool_result>"],
        "plain": [],
        "first": True,
        "roles": {"bos_token": "[BOS]", "eos_token": "<|endofturn|>", "pad_token": "[PAD]",
                  "unk_token": "[UNK]"},
        "extra": None,
        "render": "processor",
    },
    "hyperclovax_vision_v2": {
        "processor": HyperCLOVAXVisionV2Processor,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|endofturn|>", "<|stop|>",
                    "<|mime_start|>", "<|mime_end|>", "<|image_start|>", "<|image_end|>",
                    "<|IMAGE_PAD|>", "<|video_start|>", "<|video_end|>", "<|VIDEO_PAD|>"],
        # Non-special: transformers' integration test of HyperCLOVAX-SEED-Think-32B
        # (tests/models/hyperclovax_vision_v2/test_modeling_hyperclovax_vision_v2.py) decodes with
        # skip_special_tokens=True and keeps `<think>`, `</think>`, `<|video_aux_start|>`,
        # `<|video_aux_end|>` (and `<|video_meta_duration|>`, left as plain text here) while the
        # ChatML, mime, image and video markers disappear. The tool tags are a guess.
        "plain": ["<think>", "</think>", "<|video_aux_start|>", "<|video_aux_end|>", "<tool_call>",
                  "</tool_call>", "<tool_response>", "</tool_response>", "<arg_key>", "</arg_key>",
                  "<arg_value>", "</arg_value>"],
        "first": False,
        "roles": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "extra": {"image_token": "<|IMAGE_PAD|>", "video_token": "<|VIDEO_PAD|>"},
        "render": "tokenizer",
    },
}


def train_base():
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def family_tokenizer(base_json, spec):
    data = json.loads(base_json)
    if spec["first"]:
        k = len(spec["special"])
        vocab = {t: i for i, t in enumerate(spec["special"])}
        vocab.update({t: i + k for t, i in data["model"]["vocab"].items()})
        data["model"]["vocab"] = vocab
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec["special"]])
    if spec["plain"]:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec["plain"]])
    kwargs = dict(spec["roles"])
    if spec["extra"]:
        kwargs["extra_special_tokens"] = spec["extra"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def make_processor(family, spec, tokenizer):
    pdir = FAMILIES / family / "processor"
    if family == "hyperclovax_vision_v2":
        cfg = json.loads((pdir / "preprocessor_config.json").read_text())
        for key in ("model_type", "auto_map", "image_processor_type", "processor_class"):
            cfg.pop(key, None)
        image_processor = Qwen2VLImageProcessorPil(**cfg)
    else:
        image_processor = Qwen2VLImageProcessorPil(size=dict(IMAGE_SIZE))
    video_processor = Qwen2VLVideoProcessor(size=dict(VIDEO_SIZE))
    template = (pdir / "chat_template.jinja").read_text()
    return spec["processor"](image_processor=image_processor, tokenizer=tokenizer,
                             video_processor=video_processor, chat_template=template)


def gif_frames():
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(FIXTURES / "videos" / "clip.gif"))]
    video = np.stack(frames)
    # The committed frame dumps are the same pixels.
    for i in (0, 7, 19):
        ref = np.asarray(Image.open(FIXTURES / "videos" / "frames" / f"frame_{i + 1}.png").convert("RGB"))
        assert np.array_equal(ref, video[i]), f"frame {i} differs from fixtures/videos/frames"
    return video


def qvu_indices(total, n):
    """qwen-vl-utils' frame choice: n frames, linspace(0, total - 1, n) rounded."""
    return [int(x) for x in torch.linspace(0, total - 1, n).round().long().tolist()]


# ---------------------------------------------------------------------------------------------
# Conversations. Media are named relative to fixtures/; `MEDIA` says what is passed for each.

GIF_META = {"fps": 10.0, "total_num_frames": 20}
# 6 frames at 3 fps by qwen-vl-utils' rule: nframes = round(20 / 10 * 3) = 6.
EXPLICIT_IDX = qvu_indices(20, 6)


def hf_image(path):
    return {"type": "image", "image": path}


def hf_video(path):
    return {"type": "video", "video": path}


def oa_url(path):
    return {"type": "image_url", "image_url": {"url": path}}


def text(t):
    return {"type": "text", "text": t}


def conversations(openai):
    """HF-shaped parts (Qwen2.5-VL, EXAONE 4.5) or OpenAI image_url parts (HyperCLOVA X; a video
    is an image_url ending in a video extension: the name clip.mp4 stands for clip.gif's frames)."""
    img = oa_url if openai else hf_image
    vid = (lambda p: oa_url(p.replace(".gif", ".mp4"))) if openai else hf_video
    return {
        "text_ko": [
            {"role": "system", "content": "You are a helpful assistant. 한국어로 답하세요."},
            {"role": "user", "content": "안녕하세요! What is 2+2?"},
            {"role": "assistant", "content": "4입니다."},
            {"role": "user", "content": "고마워요.\n  Bye  "},
        ],
        "image": [{"role": "user", "content": [img("images/photo.jpg"), text("이 사진에 무엇이 있나요?")]}],
        "two_images": [{"role": "user", "content": [
            text("Compare "), img("images/photo.jpg"), text(" and "), img("images/rgb_odd.png")]}],
        "video": [{"role": "user", "content": [vid("videos/clip.gif"), text("영상을 설명해 주세요.")]}],
        "image_and_video": [{"role": "user", "content": [
            img("images/rgb_odd.png"), vid("videos/clip.gif"), text("Same scene?")]}],
        "think_text": [{"role": "user", "content": "빨간 사각형이 움직입니다. Why?"}],
    }


def media_of(conv):
    """The media of a conversation in order: ('image', path) / ('video', path)."""
    out = []
    for m in conv:
        if isinstance(m["content"], str):
            continue
        for p in m["content"]:
            if p["type"] == "image":
                out.append(("image", p["image"]))
            elif p["type"] == "video":
                out.append(("video", p["video"]))
            elif p["type"] == "image_url":
                url = p["image_url"]["url"]
                if url.endswith(".mp4"):
                    out.append(("video", url.replace(".mp4", ".gif")))
                else:
                    out.append(("image", url))
    return out


def case_list(family):
    """(name, conversation keys, template kwargs, video mode)."""
    cases = [
        ("text_ko", ["text_ko"], {}, None),
        ("image", ["image"], {}, None),
        ("two_images", ["two_images"], {}, None),
        ("video", ["video"], {}, "sample_fps2"),
        ("image_and_video", ["image_and_video"], {}, "explicit"),
        ("batch_left", ["text_ko", "image_and_video"], {}, "explicit"),
    ]
    if family == "qwen2_5_vl":
        cases.append(("two_images_vision_id", ["two_images"], {"add_vision_id": True}, None))
    elif family == "exaone4_5":
        cases.append(("no_thinking", ["think_text"], {"enable_thinking": False}, None))
        cases.append(("image_no_thinking", ["image"], {"enable_thinking": False}, None))
    else:
        cases.append(("thinking", ["think_text"], {"thinking": True}, None))
        cases.append(("image_thinking", ["image"], {"thinking": True}, None))
        cases.append(("video_duration_token", ["video"], {}, "sample_fps2"))
    return cases


def plain(v):
    """A processor attribute as JSON (SizeDict -> its set fields)."""
    if isinstance(v, (int, float, str, bool, type(None), list, dict)):
        return v
    return {k: getattr(v, k) for k in ("shortest_edge", "longest_edge", "height", "width")
            if getattr(v, k, None) is not None}


def preresized_videos(processor, video, frames_used, grids):
    """The same frames resized as qwen-vl-utils (and Nuri) do, torchvision v1
    `resize(uint8 TCHW, BICUBIC, antialias=True)` (computed in float, rounded and clamped once),
    then the processor with do_resize=False. transformers' own resize (torchvision v2 on the
    uint8 [1, T, C, H, W] stack) runs the separable passes with a uint8 intermediate and differs
    by up to ~16 levels where bicubic overshoots."""
    out = []
    for idx, (_, gh, gw) in zip(frames_used, grids.tolist()):
        p = processor.video_processor.patch_size
        frames = torch.from_numpy(video[idx]).permute(0, 3, 1, 2).contiguous()
        resized = tvF1.resize(frames, [gh * p, gw * p], interpolation=InterpolationMode.BICUBIC,
                              antialias=True)
        out.append(processor.video_processor(videos=[resized], do_resize=False, do_sample_frames=False,
                                             return_tensors="pt")["pixel_values_videos"])
    return torch.cat(out)


def stats(t):
    a = t.detach().to(torch.float32).contiguous().numpy()
    return {"shape": list(a.shape), "dtype": "float32",
            "sha256_f32_le": hashlib.sha256(a.astype("<f4").tobytes()).hexdigest(),
            "sum": float(a.astype(np.float64).sum()), "abs_sum": float(np.abs(a.astype(np.float64)).sum())}


def run_family(family, spec, base_json, video):
    pdir = FAMILIES / family / "processor"
    ckpt = pdir / "checkpoint"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True)
    tokenizer = family_tokenizer(base_json, spec)
    processor = make_processor(family, spec, tokenizer)
    processor.save_pretrained(ckpt)
    # What a reader of the directory gets, with the Pillow image backend (transformers 5 picks
    # the torchvision one by default: resized pixels differ by up to ~0.015, recorded per case).
    processor = spec["processor"].from_pretrained(ckpt)
    tv_image_processor = processor.image_processor
    processor.image_processor = AutoImageProcessor.from_pretrained(ckpt, backend="pil")
    assert isinstance(processor.image_processor, Qwen2VLImageProcessorPil)
    tokenizer = processor.tokenizer

    convs = conversations(openai=spec["render"] == "tokenizer")
    cases, tensors = [], {}
    for name, keys, tkw, vmode in case_list(family):
        texts, images, videos, metas, media = [], [], [], [], []
        for k in keys:
            conv = convs[k]
            render = processor.apply_chat_template if spec["render"] == "processor" else \
                tokenizer.apply_chat_template
            texts.append(render(conv, tokenize=False, add_generation_prompt=True, **tkw))
            for kind, path in media_of(conv):
                if kind == "image":
                    images.append(Image.open(FIXTURES / path))
                    media.append({"kind": "image", "file": path})
                elif vmode == "sample_fps2":
                    videos.append(video)
                    metas.append(dict(GIF_META))
                    media.append({"kind": "video", "file": path, "frames_passed": list(range(20)),
                                  "metadata": dict(GIF_META)})
                else:
                    videos.append(video[EXPLICIT_IDX])
                    meta = dict(GIF_META, frames_indices=list(EXPLICIT_IDX))
                    metas.append(meta)
                    media.append({"kind": "video", "file": path, "frames_passed": list(EXPLICIT_IDX),
                                  "metadata": meta})
        if name == "video_duration_token":
            # The form transformers' processor fills in (the Hub template transformers tests
            # against is said to write it, unquoted); the OmniServe template writes
            # "<|video_meta_duration|>" (quoted), which transformers leaves alone.
            texts = [t.replace('"<|video_meta_duration|>"', "<|video_duration|>") for t in texts]
        call = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
        if videos:
            call["video_metadata"] = metas
            call["do_sample_frames"] = vmode == "sample_fps2"
            if vmode == "sample_fps2":
                call["fps"] = 2
        out = processor(text=texts, images=images or None, videos=videos or None, **call)
        if name == "video_duration_token":
            assert "<|video_duration|>" not in tokenizer.decode(out["input_ids"][0])

        ids, am = out["input_ids"], out["attention_mask"]
        tensors[f"{name}.input_ids"] = ids.to(torch.int64).contiguous()
        tensors[f"{name}.attention_mask"] = am.to(torch.int64).contiguous()
        if "mm_token_type_ids" in out:
            tensors[f"{name}.mm_token_type_ids"] = torch.as_tensor(out["mm_token_type_ids"]).to(torch.int64).contiguous()
        for key in ("image_grid_thw", "video_grid_thw"):
            if key in out:
                tensors[f"{name}.{key}"] = out[key].to(torch.int64).contiguous()
        rec = {"name": name, "conversations": [convs[k] for k in keys], "template_kwargs": tkw,
               "render": ("processor.apply_chat_template" if spec["render"] == "processor"
                          else "processor.tokenizer.apply_chat_template") +
                         "(conv, tokenize=False, add_generation_prompt=True, **template_kwargs)",
               "texts": texts, "media": media,
               "call_kwargs": {k: v for k, v in call.items() if k != "video_metadata"},
               "outputs": sorted(k for k in out.keys())}
        if "second_per_grid_ts" in out:
            s = [float(x) for x in out["second_per_grid_ts"]]
            rec["second_per_grid_ts"] = s  # as returned (float32)
            tensors[f"{name}.second_per_grid_ts"] = torch.tensor(s, dtype=torch.float32)
        if videos:
            vm = processor.video_processor(videos=videos, video_metadata=[dict(m) for m in metas],
                                           do_sample_frames=call["do_sample_frames"],
                                           **({"fps": 2} if vmode == "sample_fps2" else {}),
                                           return_metadata=True, return_tensors="pt")["video_metadata"]
            rec["video_frames_used"] = [list(map(int, m.frames_indices)) if m.frames_indices is not None
                                        else None for m in vm]
            rec["video_sampled_fps"] = [float(m.sampled_fps) for m in vm]
            if "second_per_grid_ts" in out:
                rec["second_per_grid_ts_exact"] = [processor.video_processor.temporal_patch_size / f
                                                   for f in rec["video_sampled_fps"]]
            if family == "hyperclovax_vision_v2":
                rec["video_duration"] = [round(float(m.duration if m.duration is not None
                                                     else m.total_num_frames / (m.fps or 24)), 2) for m in vm]
        for key in ("pixel_values", "pixel_values_videos"):
            if key in out:
                rec[key] = stats(out[key])
                if name == "image" and key == "pixel_values":
                    tensors[f"{name}.pixel_values"] = out[key].to(torch.float32).contiguous()
        if videos:
            alt = preresized_videos(processor, video, rec["video_frames_used"], out["video_grid_thw"])
            rec["pixel_values_videos_qwen_vl_utils_resize"] = dict(
                stats(alt), max_abs_diff=float((alt - out["pixel_values_videos"]).abs().max()))
        if images:
            tv = tv_image_processor(images=images, return_tensors="pt")["pixel_values"]
            rec["pixel_values_torchvision_backend"] = dict(
                stats(tv), max_abs_diff=float((tv - out["pixel_values"]).abs().max()))
        cases.append(rec)

    special = {t: tokenizer.convert_tokens_to_ids(t) for t in spec["special"] + spec["plain"]}
    save_file(tensors, pdir / "reference.safetensors")
    os.chmod(pdir / "reference.safetensors", 0o644)
    (pdir / "cases.json").write_text(json.dumps({
        "generator": "tools/reference/make_family_processor_fixtures.py",
        "transformers": transformers.__version__,
        "processor_class": spec["processor"].__name__,
        "tokenizer": {
            "added_tokens": special,
            "special": spec["special"], "non_special": spec["plain"],
            "roles": {k: [v, tokenizer.convert_tokens_to_ids(v)] for k, v in spec["roles"].items()},
            "image_token": [processor.image_token, processor.image_token_id],
            "video_token": [processor.video_token, processor.video_token_id],
            "vocab_size": len(tokenizer),
        },
        "image_processor_class": type(processor.image_processor).__name__,
        "video_processor_class": type(processor.video_processor).__name__,
        "image_processor": {k: plain(getattr(processor.image_processor, k)) for k in
                            ("size", "patch_size", "merge_size", "temporal_patch_size")},
        "video_processor": {k: plain(getattr(processor.video_processor, k)) for k in
                            ("size", "patch_size", "merge_size", "temporal_patch_size", "min_frames",
                             "max_frames", "do_sample_frames")},
        "note": "media files are relative to fixtures/; a video is clip.gif decoded by Pillow "
                "(ImageSequence, convert('RGB'), uint8 [20, 60, 90, 3]); `frames_passed` are the "
                "indices of the frames handed to the processor with `metadata`; `texts` are the "
                "template's output before the pads are expanded; pixel values: sha256 of the "
                "float32 little-endian row-major bytes, sums in float64 (full values for the case "
                "`image` only); images through Qwen2VLImageProcessorPil (AutoImageProcessor "
                "backend='pil'), `pixel_values_torchvision_backend` is what the default backend "
                "gives; videos through transformers' own resize, "
                "`pixel_values_videos_qwen_vl_utils_resize` is the same frames resized as "
                "qwen-vl-utils does (torchvision v1, float, rounded once) then do_resize=False",
        "cases": cases}, ensure_ascii=False, indent=1) + "\n")
    for c in cases:
        print(family, c["name"], tuple(tensors[c["name"] + ".input_ids"].shape))


def main():
    base = train_base()
    video = gif_frames()
    for family, spec in FAMILY.items():
        run_family(family, spec, base, video)


if __name__ == "__main__":
    main()
