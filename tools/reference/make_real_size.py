"""A random-weight checkpoint of a published size, saved by transformers, for benchmarks
(`nuri bench --model DIR`, `bench_torch.py --model DIR`). Never commit its output.

    cargo run --release -- config --preset qwen2-vl-2b > /tmp/q2b.json
    HF_HUB_OFFLINE=1 /tmp/ref/bin/python tools/reference/make_real_size.py \
        --config /tmp/q2b.json --out /scratch/qwen2-vl-2b-random --dtype bfloat16

The weights are N(0, 0.02) as the model's own initializer draws them (what a checkpoint's
numbers are does not change how fast it runs). The tokenizer, template and processor configs
are copied from a fixture of the same family (the real tokenizers are not available offline),
and the config's placeholder ids (`image_token_id`, …) are set to that tokenizer's, so that
`nuri generate` and transformers both take the directory as it is.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[2]
PROCESSOR_FIXTURE = {
    "qwen2_vl": REPO / "fixtures" / "families" / "qwen2_5_vl" / "processor" / "checkpoint",
    "qwen2_5_vl": REPO / "fixtures" / "families" / "qwen2_5_vl" / "processor" / "checkpoint",
    "exaone4_5": REPO / "fixtures" / "families" / "exaone4_5" / "processor" / "checkpoint",
    "exaone4": REPO / "fixtures" / "families" / "exaone4_5" / "processor" / "checkpoint",
    "hyperclovax_vision_v2": REPO / "fixtures" / "families" / "hyperclovax_vision_v2" / "processor" / "checkpoint",
}


# config.json field → the token it names (Qwen-style placeholders).
PLACEHOLDERS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def tokenizer_ids(fixture: Path) -> dict:
    """The ids of the fixture tokenizer's added tokens, by content."""
    tok = json.loads((fixture / "tokenizer.json").read_text())
    return {t["content"]: t["id"] for t in tok.get("added_tokens", [])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="a config.json (e.g. from `nuri config --preset NAME`)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    config = transformers.AutoConfig.from_pretrained(a.config)
    fixture = PROCESSOR_FIXTURE.get(config.model_type)
    if fixture:
        ids = tokenizer_ids(fixture)
        for field, token in PLACEHOLDERS.items():
            if hasattr(config, field) and token in ids:
                setattr(config, field, ids[token])
    torch.manual_seed(a.seed)
    dtype = getattr(torch, a.dtype)
    torch.set_default_dtype(dtype)
    model = transformers.AutoModelForImageTextToText.from_config(config, dtype=dtype) if hasattr(config, "vision_config") else transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=a.max_shard_size)
    if fixture:
        for f in fixture.iterdir():
            if f.name != "config.json":
                shutil.copy(f, out / f.name)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": str(out), "parameters": n, "dtype": a.dtype}))


if __name__ == "__main__":
    main()
