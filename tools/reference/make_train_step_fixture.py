"""Writes fixtures/train_step/: one training step of the tiny Qwen2-VL fixture model in
transformers (fp32, eager attention), for the Rust test that checks Nuri's training step
against it — the loss and every parameter's gradient of one forward/backward, and the losses
of 10 AdamW steps on the same batch.

The batch is the `batch_padded` case (two rows, left padding, an image in each) with labels
on the second half of each row's real tokens; padding and the rest are -100.

Usage (from the repository root): HF_HUB_OFFLINE=1 /tmp/ref/bin/python tools/reference/make_train_step_fixture.py
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2VLForConditionalGeneration

torch.manual_seed(0)
torch.set_num_threads(2)
root = os.path.join(os.path.dirname(__file__), "../../fixtures")
out = os.path.join(root, "train_step")
os.makedirs(out, exist_ok=True)

model = Qwen2VLForConditionalGeneration.from_pretrained(
    os.path.join(root, "qwen2vl-tiny"), torch_dtype=torch.float32, attn_implementation="eager")
model.train()  # no dropout in this config; train() as a training step has it
case = load_file(os.path.join(root, "cases/batch_padded.safetensors"))
inputs = {k: case[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
inputs["mm_token_type_ids"] = case["mm_token_type_ids"].to(torch.int32)
ids, mask = inputs["input_ids"], inputs["attention_mask"]
labels = torch.full_like(ids, -100)
for r in range(ids.shape[0]):
    real = mask[r].nonzero().flatten()
    half = real[len(real) // 2:]
    labels[r, half] = ids[r, half]

LR, BETAS, EPS, WD, STEPS = 1e-3, (0.9, 0.999), 1e-8, 0.1, 10

def forward():
    model.model.rope_deltas = None  # positions from this batch, not a cached generation
    return model(**inputs, labels=labels, use_cache=False).loss


loss = forward()
loss.backward()


def hub_name(name):
    """transformers 5's module names as the checkpoint (and Nuri's export) writes them."""
    for new, old in (("model.language_model.", "model."), ("model.visual.", "visual.")):
        if name.startswith(new):
            return old + name[len(new):]
    return name


grads = {hub_name(name): p.grad.detach().clone().contiguous()
         for name, p in model.named_parameters() if p.grad is not None}
missing = [name for name, p in model.named_parameters() if p.grad is None]
save_file(grads, os.path.join(out, "grads.safetensors"))
save_file({"labels": labels.contiguous()}, os.path.join(out, "labels.safetensors"))

model.zero_grad()
optim = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
losses = []
for _ in range(STEPS):
    optim.zero_grad()
    step_loss = forward()
    losses.append(step_loss.item())
    step_loss.backward()
    optim.step()

with open(os.path.join(out, "steps.json"), "w") as f:
    json.dump({
        "case": "batch_padded",
        "labelled_tokens": int((labels != -100).sum()),
        "loss": loss.item(),
        "no_gradient": missing,
        "adamw": {"lr": LR, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": WD},
        "losses": losses,
        "torch": torch.__version__,
    }, f, indent=1)
print(f"loss {loss.item():.6f}; {len(grads)} gradients, none for {missing}; losses {losses}")
