"""Qwen2-VL's M-RoPE position ids as the original implementation computes them (transformers
4.57 `Qwen2VLModel.get_rope_index`, the rule the Qwen2-VL checkpoints were trained with: text
after a visual block resumes at the block's largest position + 1 over all three streams).

transformers 5 resumes at `max(h, w)` only, which differs after a video whose temporal grid
exceeds its spatial one; make_processor_fixtures.py stores both.

Run by make_processor_fixtures.py, with a transformers 4.57 wheel unpacked on PYTHONPATH:
    /tmp/ref/bin/pip download --no-deps transformers==4.57.1 -d /tmp/tf4
    unzip -qo /tmp/tf4/transformers-4.57.1-*.whl -d /tmp/tf4/site
    (its import-time dependency version check must be disabled in
     transformers/dependency_versions_check.py: tokenizers 0.23.3 is newer than it allows)
Usage: rope_index_v4.py IN.safetensors TOKENS.json OUT.safetensors
"""
import json
import sys
import types

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

assert transformers.__version__.startswith("4."), transformers.__version__
inputs = load_file(sys.argv[1])
ids = json.loads(open(sys.argv[2]).read())
config = types.SimpleNamespace(
    vision_config=types.SimpleNamespace(spatial_merge_size=2), image_token_id=ids["<|image_pad|>"],
    video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"])
fake = types.SimpleNamespace(config=config)
out = {}
for key in inputs:
    if not key.endswith(".input_ids"):
        continue
    name = key[: -len(".input_ids")]
    pos, deltas = Qwen2VLModel.get_rope_index(
        fake, inputs[key], inputs.get(f"{name}.image_grid_thw"), inputs.get(f"{name}.video_grid_thw"),
        inputs[f"{name}.attention_mask"])
    out[f"{name}.position_ids"] = pos.to(torch.int64).contiguous()
    out[f"{name}.rope_deltas"] = deltas.to(torch.int64).reshape(-1).contiguous()
save_file(out, sys.argv[3])
