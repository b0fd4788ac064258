"""How fast can shape be learned from the quickstart's pictures, outside the language model?

A stand-alone PyTorch classifier over the level-1 shape questions of `nuri data shapes`:
a patch embedding (a strided convolution without bias, as the ViT's), optional transformer
blocks without position information, the 2x2 merge MLP of the patch merger, attention pooling
with a learned query, and a linear layer over the 5 shapes. AdamW, batch 16, 1 thread; it
prints the validation accuracy every 100 steps. Offline: it reads only the dataset.

    ./target/release/nuri data shapes --out /tmp/shapes
    python tools/reference/shape_probe.py /tmp/shapes --patch 8 --blocks 0
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

KOREAN = {"원": "circle", "사각형": "square", "삼각형": "triangle", "마름모": "diamond", "십자가": "cross"}
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def load(root: Path, name: str, is_shape):
    xs, ys = [], []
    for line in (root / name).read_text().splitlines():
        row = json.loads(line)
        if not is_shape(row) or "image" not in row:
            continue
        answer = row["conversations"][1]["value"]
        picture = np.asarray(Image.open(root / row["image"]).convert("RGB"), np.float32) / 255.0
        xs.append((picture - MEAN) / STD)
        ys.append(KOREAN.get(answer, answer))
    return torch.tensor(np.stack(xs)).permute(0, 3, 1, 2), ys


class Probe(nn.Module):
    def __init__(self, patch: int, blocks: int, width: int = 64):
        super().__init__()
        self.width = width
        self.embed = nn.Conv2d(3, width, patch, patch, bias=False)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, 2 * width, 0.0, batch_first=True, norm_first=True)
            for _ in range(blocks)
        )
        self.merge = nn.Sequential(
            nn.LayerNorm(4 * width), nn.Linear(4 * width, 4 * width), nn.GELU(), nn.Linear(4 * width, 128)
        )
        self.query = nn.Parameter(torch.randn(128) * 0.02)
        self.out = nn.Linear(128, 5)

    def forward(self, x):
        h = self.embed(x)  # [b, w, g, g]
        b, g = h.shape[0], h.shape[-1]
        t = h.flatten(2).transpose(1, 2)
        for block in self.blocks:
            t = block(t)
        t = t.reshape(b, g // 2, 2, g // 2, 2, self.width).permute(0, 1, 3, 2, 4, 5)
        m = self.merge(t.reshape(b, (g // 2) ** 2, 4 * self.width))
        weights = torch.softmax(m @ self.query, 1)
        return self.out((weights[..., None] * m).sum(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a `nuri data shapes --level 1` directory")
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    x, y = load(args.data, "train.jsonl", lambda r: r.get("families") == ["shape"])
    xv, yv = load(args.data, "val.jsonl", lambda r: r.get("family") == "shape")
    classes = sorted(set(y))
    y = torch.tensor([classes.index(c) for c in y])
    yv = torch.tensor([classes.index(c) for c in yv])
    print(f"{len(y)} training and {len(yv)} validation pictures; classes {classes}")

    model = Probe(args.patch, args.blocks)
    opt = torch.optim.AdamW(model.parameters(), args.lr)
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, len(x), (16,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                accuracy = (model(xv).argmax(1) == yv).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.3f}  validation {100 * accuracy:.1f}%", flush=True)


if __name__ == "__main__":
    main()
