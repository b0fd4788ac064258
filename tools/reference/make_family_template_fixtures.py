"""Chat-template reference renderings for the model families Nuri's processor is to support:
Qwen2.5-VL (`qwen2_5_vl`), EXAONE 4.5 (`exaone4_5`, with the EXAONE 4.0 text template of its
text model `exaone4`) and HyperCLOVA X SEED Think / Vision V2 (`hyperclovax_vision_v2`).

The templates are the published ones saved under fixtures/families/<family>/processor/ (see each
SOURCE.md for where they come from). Every conversation below is rendered by transformers' own
machinery, offline, on a tokenizer built here (a tiny word-level vocabulary holding the family's
special tokens; none of these templates reads a token string from the tokenizer, so its vocabulary
does not change the text):

- `tokenizer.apply_chat_template(messages, tokenize=False, ...)`: what a caller rendering with the
  tokenizer gets (transformers drops message keys whose value is None, aliases
  `reasoning`/`thinking` to `reasoning_content`, passes `tools`/`documents` (None when absent),
  `add_generation_prompt`, the tokenizer's special-token strings and every extra keyword);
- `processor.apply_chat_template(messages, tokenize=False, ...)` on the family's processor class
  (Qwen2_5_VLProcessor / Exaone4_5_Processor / HyperCLOVAXVisionV2Processor), which first turns
  every OpenAI `{"type": "image_url", "image_url": {"url": U}}` part into
  `{"type": "image", "url": U}`. Stored only where it differs from the tokenizer's rendering.

A rendering that raises is stored as `error` (the exception's class and message): the Rust side
has to refuse the same conversations.

Rerun (offline, a few seconds):
    HF_HUB_OFFLINE=1 /tmp/ref/bin/python tools/reference/make_family_template_fixtures.py
Writes fixtures/families/<family>/processor/renderings.json.
"""
import copy
import json
import os
import pathlib
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import jinja2
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAMILIES = ROOT / "fixtures" / "families"

# ----------------------------------------------------------------------------------------------
# Family setup: special tokens (as the published tokenizer configs name them) and processor class.

FAMILY = {
    "qwen2_5_vl": {
        "processor": "Qwen2_5_VLProcessor",
        # Qwen2.5-VL-*-Instruct tokenizer_config.json: eos <|im_end|>, pad <|endoftext|>, no bos.
        "special": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "extra": ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                  "<|image_pad|>", "<|video_pad|>"],
        "templates": {"chat_template.jinja": "qwen2_5_vl"},
    },
    "exaone4_5": {
        "processor": "Exaone4_5_Processor",
        # EXAONE 4.5's tokenizer files are not in any public repository found; these are the
        # strings its chat template and vLLM's example write (ids: see SOURCE.md).
        "special": {"bos_token": "[BOS]", "eos_token": "<|endofturn|>", "pad_token": "[PAD]",
                    "unk_token": "[UNK]"},
        "extra": ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tool_declare|>",
                  "<vision>", "</vision>", "<|image_pad|>", "<|video_pad|>"],
        "templates": {"chat_template.jinja": "exaone4_5",
                      "exaone4_text/chat_template.jinja": "exaone4"},
    },
    "hyperclovax_vision_v2": {
        "processor": "HyperCLOVAXVisionV2Processor",
        "special": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "extra": ["<|im_start|>", "<|IMAGE_PAD|>", "<|VIDEO_PAD|>", "<|image_start|>",
                  "<|image_end|>", "<|video_start|>", "<|video_end|>", "<|mime_start|>",
                  "<|mime_end|>", "<|video_aux_start|>", "<|video_aux_end|>"],
        "templates": {"chat_template.jinja": "hyperclovax_vision_v2"},
    },
}

# ----------------------------------------------------------------------------------------------
# Conversations. Media parts come in the three shapes callers send: transformers' own
# ({"type": "image", "image": ...}), qwen_vl_utils' ({"type": "video", "video": ...}) and OpenAI's
# ({"type": "image_url", "image_url": {"url": ...}}). HyperCLOVA X's template knows only the
# OpenAI shape and tells a video from an image by the URL's extension.

SYSTEM_KO = "당신은 친절한 한국어 비서입니다. 간결하게 답하세요."
SYSTEM_EN = "You are a helpful assistant."

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "도시의 현재 날씨를 알려 준다 (Get the current weather for a city).",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. 서울"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "now", "description": "Current time.",
                 "parameters": {"type": "object", "properties": {}}},
}


def text(t):
    return {"type": "text", "text": t}


IMG = {"type": "image", "image": "images/photo.jpg"}
IMG2 = {"type": "image", "image": "images/square.png"}
VID = {"type": "video", "video": "videos/clip.mp4"}
IMG_URL = {"type": "image_url", "image_url": {"url": "file:///data/images/photo.jpg"}}
VID_URL = {"type": "image_url", "image_url": {"url": "file:///data/videos/clip.mp4"}}
VID_URL_UPPER = {"type": "image_url", "image_url": {"url": "https://example.com/v/CLIP.MOV"}}

TOOL_CALL_TURNS = [
    {"role": "user", "content": "서울 날씨 어때?"},
    {"role": "assistant", "content": None, "reasoning_content": "The user wants Seoul's weather; call the tool.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "서울", "unit": "celsius"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
     "content": "{\"temperature\": 21, \"condition\": \"맑음\"}"},
]


def cases():
    """(name, messages, kwargs) for every family; kwargs go to apply_chat_template."""
    c = []

    def add(name, messages, **kw):
        kw.setdefault("add_generation_prompt", True)
        c.append((name, messages, kw))

    # Plain text, Korean and English, with and without a system prompt.
    add("ko_text_system", [{"role": "system", "content": SYSTEM_KO},
                           {"role": "user", "content": "안녕하세요! 오늘 기분이 어때요?"}])
    add("en_text_no_system", [{"role": "user", "content": "What is the capital of Korea?"}])
    add("en_text_parts", [{"role": "user", "content": [text("Hello "), text("world.")]}])
    add("ko_text_no_generation_prompt",
        [{"role": "user", "content": "1 더하기 1은?"}, {"role": "assistant", "content": "2입니다."}],
        add_generation_prompt=False)
    # The thinking switch.
    for v in (True, False):
        add(f"ko_text_enable_thinking_{str(v).lower()}",
            [{"role": "user", "content": "피보나치 수열의 10번째 항은?"}], enable_thinking=v)
    add("ko_text_thinking_kwarg_true", [{"role": "user", "content": "피보나치 수열의 10번째 항은?"}], thinking=True)
    add("en_text_enable_thinking_none", [{"role": "user", "content": "Hi"}], enable_thinking=None)
    # A past assistant turn carrying reasoning, three ways: `reasoning_content`, `<think>` inside
    # the content, and the `reasoning` alias transformers copies to `reasoning_content`.
    past_rc = [
        {"role": "system", "content": SYSTEM_EN},
        {"role": "user", "content": "What is 17 * 23?"},
        {"role": "assistant", "content": "391.", "reasoning_content": "17*20=340, 17*3=51, 340+51=391."},
        {"role": "user", "content": "그럼 391을 17로 나누면?"},
    ]
    for v in (None, True, False):
        kw = {} if v is None else {"enable_thinking": v}
        add("multiturn_reasoning_content" + ("" if v is None else f"_thinking_{str(v).lower()}"), past_rc, **kw)
    add("multiturn_think_in_content", [
        {"role": "user", "content": "What is 17 * 23?"},
        {"role": "assistant", "content": "<think>\n17*20=340, 17*3=51.\n</think>\n\n391."},
        {"role": "user", "content": "Thanks. And 391 / 17?"},
    ])
    add("multiturn_reasoning_alias", [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning": "Two plus two is four."},
        {"role": "user", "content": "3+3?"},
    ])
    # The last turn is the assistant's, after the last user turn (a training example): templates
    # keep its reasoning.
    add("final_assistant_with_reasoning", [
        {"role": "user", "content": "하늘은 왜 파란가요?"},
        {"role": "assistant", "content": "레일리 산란 때문입니다.", "reasoning_content": "Short wavelengths scatter more."},
    ], add_generation_prompt=False)
    add("final_assistant_think_in_content", [
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering."},
    ], add_generation_prompt=False)
    add("final_assistant_skip_think_false", [
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering."},
    ], add_generation_prompt=False, skip_think=False)
    # `str.lstrip('<think>')` strips a character set, not a prefix; `[9:]` slices characters.
    add("final_assistant_think_charset", [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "<think>hint: be brief</think>Hi!"},
    ], add_generation_prompt=False, skip_think=False)
    # The last user turn has list content: templates that look for the last *string* user turn
    # do not find one.
    add("final_assistant_reasoning_after_image_user", [
        {"role": "user", "content": [IMG, text("What is it?")]},
        {"role": "assistant", "content": "A cat.", "reasoning_content": "Looks like a cat."},
    ], add_generation_prompt=False)
    add("past_assistant_whitespace", [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "\n  answer  \n"},
        {"role": "user", "content": "b"},
    ])
    # Media.
    add("image_ko", [{"role": "user", "content": [IMG, text("이 사진에 무엇이 있나요?")]}])
    add("image_question_first", [{"role": "user", "content": [text("What is in this picture?"), IMG]}])
    add("two_images", [{"role": "user", "content": [IMG, IMG2, text("두 사진의 차이는?")]}])
    add("two_images_vision_id", [{"role": "user", "content": [IMG, IMG2, text("Compare them.")]}],
        add_vision_id=True)
    add("video_ko", [{"role": "user", "content": [VID, text("영상에서 무슨 일이 일어나나요?")]}])
    add("image_and_video", [{"role": "user", "content": [IMG, VID, text("Describe both.")]}])
    add("image_url_ko", [{"role": "system", "content": SYSTEM_KO},
                         {"role": "user", "content": [IMG_URL, text("이 표정 어때?")]}])
    add("video_url_ko", [{"role": "system", "content": SYSTEM_KO},
                         {"role": "user", "content": [VID_URL, text("영상의 배경은 무엇인가요?")]}])
    add("video_url_with_duration", [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///data/videos/clip.mp4"}, "video_duration": 3.5},
        text("How long is it?")]}])
    add("image_and_video_url", [{"role": "user", "content": [IMG_URL, VID_URL_UPPER, text("둘을 비교해 줘.")]}],
        enable_thinking=False, thinking=False)
    add("multiturn_images", [
        {"role": "user", "content": [IMG_URL, text("What do you see?")]},
        {"role": "assistant", "content": "A cat on a sofa."},
        {"role": "user", "content": [IMG_URL, text("And here?")]},
    ])
    # Tools.
    add("tools_declared_ko", [{"role": "system", "content": SYSTEM_KO},
                              {"role": "user", "content": "서울 날씨 어때?"}], tools=[WEATHER_TOOL])
    add("tools_declared_no_system", [{"role": "user", "content": "What time is it?"}],
        tools=[WEATHER_TOOL, CLOCK_TOOL])
    add("tool_call_and_response", copy.deepcopy(TOOL_CALL_TURNS), tools=[WEATHER_TOOL])
    add("tool_call_and_response_thinking", copy.deepcopy(TOOL_CALL_TURNS), tools=[WEATHER_TOOL],
        enable_thinking=True, thinking=True)
    two_calls = copy.deepcopy(TOOL_CALL_TURNS[:1]) + [
        {"role": "assistant", "content": "두 도구를 부를게요.",
         "tool_calls": [
             {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"부산\"}"}},
             {"type": "function", "function": {"name": "now", "arguments": {}}}]},
        {"role": "tool", "content": "{\"temperature\": 25}"},
        {"role": "tool", "content": {"time": "12:00"}},
        {"role": "assistant", "content": "부산은 25도, 지금은 12시입니다."},
        {"role": "user", "content": "고마워!"},
    ]
    add("two_tool_calls_string_and_dict_args", two_calls, tools=[WEATHER_TOOL, CLOCK_TOOL])
    # Shapes some templates refuse.
    add("unknown_role", [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    add("assistant_content_parts", [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [text("Hello!")]},
        {"role": "user", "content": "Bye"},
    ])
    add("system_content_parts", [{"role": "system", "content": [text(SYSTEM_EN)]},
                                 {"role": "user", "content": "Hi"}])
    return c


# ----------------------------------------------------------------------------------------------

def build_tokenizer(spec, template):
    tokens = ["[UNK]"] + list(dict.fromkeys(list(spec["special"].values()) + spec["extra"]))
    vocab = {t: i for i, t in enumerate(tokens)}
    for w in ("a", "b"):
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = dict(spec["special"])
    special.setdefault("unk_token", "[UNK]")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=spec["extra"], **special)
    tok.chat_template = template
    return tok


def build_processor(spec, tok, template):
    cls = getattr(transformers, spec["processor"])
    return cls(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tok,
               video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def render(fn, messages, kwargs):
    try:
        return {"rendered": fn(copy.deepcopy(messages), tokenize=False, **kwargs)}
    except (jinja2.TemplateError, TypeError, ValueError, KeyError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    meta = {"transformers": transformers.__version__, "jinja2": jinja2.__version__}
    for family, spec in FAMILY.items():
        out_dir = FAMILIES / family / "processor"
        result = {
            "family": family,
            "versions": meta,
            "how": "tokenizer.apply_chat_template(messages, tokenize=False, **kwargs); "
                   "`rendered_processor` / `error_processor`: processor.apply_chat_template (image_url parts "
                   "rewritten to {type: image, url}), only where it differs",
            "special_tokens_map": None,
            "templates": {},
        }
        for rel, label in spec["templates"].items():
            template = (out_dir / rel).read_text(encoding="utf-8")
            tok = build_tokenizer(spec, template)
            result["special_tokens_map"] = tok.special_tokens_map
            proc = build_processor(spec, tok, template)
            entries = []
            for name, messages, kwargs in cases():
                entry = {"name": name, "messages": messages, "kwargs": kwargs}
                entry.update(render(tok.apply_chat_template, messages, kwargs))
                via_proc = render(proc.apply_chat_template, messages, kwargs)
                if via_proc != {k: v for k, v in entry.items() if k in ("rendered", "error")}:
                    entry.update({k + "_processor": v for k, v in via_proc.items()})
                entries.append(entry)
            result["templates"][rel] = {"label": label, "cases": entries}
        path = out_dir / "renderings.json"
        path.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        n = sum(len(t["cases"]) for t in result["templates"].values())
        errs = sum("error" in c for t in result["templates"].values() for c in t["cases"])
        print(f"{path.relative_to(ROOT)}: {n} renderings ({errs} errors), {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
