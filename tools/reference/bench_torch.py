"""The shapes of `nuri bench`, through transformers' Qwen2-VL in PyTorch (CPU, or a CUDA GPU
with `--device cuda`), for a side-by-side comparison. Offline: the model is built from a config.json that
`nuri bench --preset P --export-config DIR` writes; weights are random.

    cargo run --release -- bench --preset quickstart --export-config /tmp/qs-config
    python tools/reference/bench_torch.py --config /tmp/qs-config --json torch.json
    cargo run --release -- bench --preset quickstart --json nuri.json
    python tools/reference/bench_torch.py --compare nuri.json torch.json

Same defaults as `nuri bench`: batch 8 of one 112×112 image + 64 text tokens per training
step, 4 images at 224² and 1 at 448² for the vision encoder, a 256-token prefill, 64 decoded
tokens after a 64-token prompt at batch 1 and 8, 2 warm-up + 5 measured runs, as many
threads as `--threads` (default: the CPU count, as Burn's flex backend uses). On a GPU
(`--device cuda`, fp32 unless `--dtype bfloat16`) every timed run ends with a synchronize, and
the peak memory reported is the GPU's (`torch.cuda.max_memory_allocated`).
"""

import argparse
import json
import os
import resource
import statistics
import time

import torch


def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(warmup, runs, fn):
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def phase(name, unit, units, seconds, tokens=None):
    rates = sorted(units / s for s in seconds)
    return {
        "name": name,
        "unit": unit + "/s",
        "median": statistics.median(rates),
        "min": rates[0],
        "max": rates[-1],
        "tokens_per_s": None if tokens is None else statistics.median(rates) * tokens / units,
        "seconds": seconds,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--model", help="a checkpoint directory (any family transformers loads) instead of --config; "
                    "its loading is timed, the training step left out")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=112)
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--prefill-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    ap.add_argument("--matmul-size", type=int, default=1024)
    ap.add_argument("--no-vision", action="store_true", help="leave out the vision encoder phases")
    ap.add_argument("--json")
    ap.add_argument("--compare", nargs=2, metavar=("NURI_JSON", "TORCH_JSON"))
    a = ap.parse_args()
    if a.compare:
        return compare(*a.compare)

    from transformers import AutoModelForImageTextToText, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    phases = []
    if a.model:
        t0 = time.perf_counter()
        model = AutoModelForImageTextToText.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa").to(dev)
        sync()
        secs = time.perf_counter() - t0
        gb = sum(q.numel() * q.element_size() for q in model.parameters()) / 1e9
        phases.append(phase("load", "GB", gb, [secs]))
        config = model.config
    else:
        config = Qwen2VLConfig.from_pretrained(a.config)
        config._attn_implementation = "sdpa"
        model = Qwen2VLForConditionalGeneration(config).to(device=dev, dtype=dtype)
    vc = config.vision_config
    tc = config.text_config if hasattr(config, "text_config") else config
    p, m, t = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    patch_dim = vc.in_channels * t * p * p
    vocab = tc.vocab_size
    specials = {config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id}

    # The machine's fp32 matmul rate.
    n = a.matmul_size
    x, y = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    secs = timed(a.warmup, a.runs, lambda: (x @ y).sum().item())
    phases.append(phase(f"matmul {n}³ fp32", "GFLOP", 2 * n**3 / 1e9, secs))
    if dtype != torch.float32:
        xb, yb = x.to(dtype), y.to(dtype)
        secs = timed(a.warmup, a.runs, lambda: (xb @ yb).sum().item())
        phases.append(phase(f"matmul {n}³ {a.dtype}", "GFLOP", 2 * n**3 / 1e9, secs))

    def images(count, side):
        g = side // p
        return torch.randn(count * g * g, patch_dim, device=dev, dtype=dtype), torch.tensor([[1, g, g]] * count, device=dev)

    if not a.model:
        # Training step: forward + backward + AdamW.
        g = a.image // p
        pads = g * g // (m * m)
        gen = torch.Generator().manual_seed(0)
        rows = []
        for _ in range(a.batch):
            text = [i for i in torch.randint(0, vocab, (a.text_tokens * 2,), generator=gen).tolist() if i not in specials][: a.text_tokens]
            rows.append([config.vision_start_token_id] + [config.image_token_id] * pads + [config.vision_end_token_id] + text)
        ids = torch.tensor(rows, device=dev)
        # transformers 5 wants the modality of each token (1: image) for M-RoPE.
        mm_types = (ids == config.image_token_id).long()
        pixels, grid = images(a.batch, a.image)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        model.train()

        def step():
            out = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=mm_types, labels=ids)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        secs = timed(a.warmup, a.runs, step)
        phases.append(phase("train step", "samples", a.batch, secs, tokens=a.batch * ids.shape[1]))
    model.eval()

    with torch.inference_mode():
        for name, side, count in [("vision encoder 224²", 224, 4), ("vision encoder 448²", 448, 1)]:
            if side % (p * m) or a.no_vision:
                continue
            px, gr = images(count, side)
            secs = timed(a.warmup, a.runs, lambda: model.model.visual(px, grid_thw=gr))
            phases.append(phase(name, "images", count, secs))

        text_vocab = min(vocab, min(specials))
        prompt = torch.tensor([[(i * 7919 + 13) % text_vocab for i in range(a.prefill_tokens)]], device=dev)
        secs = timed(a.warmup, a.runs, lambda: model(input_ids=prompt, use_cache=False).logits.sum().item())
        phases.append(phase("prefill", "tokens", a.prefill_tokens, secs))

        for batch in (1, 8):
            k = a.decode_tokens
            flat = [(i * 7919 + 13) % text_vocab for i in range(batch * k)]
            prompt = torch.tensor(flat, device=dev).reshape(batch, k)

            mask = torch.ones(batch, k, dtype=torch.long, device=dev)

            def decode():
                # transformers' own greedy loop with its KV cache; the prompt's forward is
                # timed alone and subtracted.
                t0 = time.perf_counter()
                model(input_ids=prompt, attention_mask=mask, use_cache=True)
                sync()
                t_prefill = time.perf_counter() - t0
                t0 = time.perf_counter()
                model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=k + 1,
                               min_new_tokens=k + 1, do_sample=False, pad_token_id=0)
                sync()
                return time.perf_counter() - t0 - t_prefill

            for _ in range(a.warmup):
                decode()
            secs = [decode() for _ in range(a.runs)]
            phases.append(phase(f"decode, batch {batch}", "tokens", batch * k, secs))

    where = f"{a.threads} threads" if dev.type == "cpu" else f"{torch.cuda.get_device_name(dev)}, {a.dtype}"
    result = {
        "implementation": f"transformers (torch {torch.__version__}, {where})",
        "parameters": sum(q.numel() for q in model.parameters()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "phases": phases,
    }
    for ph in phases:
        print(f"{ph['name']:<22} {ph['median']:>10.1f} {ph['unit']:<12} ({ph['min']:.1f} – {ph['max']:.1f})")
        if ph["tokens_per_s"]:
            print(f"{'':<22} {ph['tokens_per_s']:>10.1f} tokens/s")
    print(f"peak resident memory   {result['peak_rss_mib']:.0f} MiB")
    if result["peak_gpu_mib"] is not None:
        print(f"peak GPU memory        {result['peak_gpu_mib']:.0f} MiB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


def compare(nuri_path, torch_path):
    nuri = json.load(open(nuri_path))
    ref = json.load(open(torch_path))
    by_name = {p["name"]: p for p in ref["phases"]}
    # The machine's fp32 matmul rate: the better of the two libraries' 1024³ matmul.
    peak_n = max(
        [p["median"] for p in nuri["phases"] + ref["phases"] if p["unit"] == "GFLOP/s"],
        default=None,
    )
    print(f"| phase | Nuri (median) | PyTorch (median) | Nuri / PyTorch | Nuri MFU (of {peak_n:.0f} GFLOP/s) |")
    print(f"|---|---|---|---|---|")
    for p in nuri["phases"]:
        r = by_name.get(p["name"])
        if r is None:
            continue
        ratio = p["median"] / r["median"]
        mfu = "-" if p["unit"] == "GFLOP/s" or not peak_n else f"{100 * p['gflop_per_s'] / peak_n:.1f}%"
        print(f"| {p['name']} | {p['median']:.1f} {p['unit']} | {r['median']:.1f} {r['unit']} | {ratio:.2f}× | {mfu} |")
        if p.get("tokens_per_s") and r.get("tokens_per_s"):
            print(f"| {p['name']} (tokens) | {p['tokens_per_s']:.0f} tokens/s | {r['tokens_per_s']:.0f} tokens/s | {p['tokens_per_s'] / r['tokens_per_s']:.2f}× | |")
    print(f"| peak resident memory | {nuri['peak_rss_mib']:.0f} MiB | {ref['peak_rss_mib']:.0f} MiB | {nuri['peak_rss_mib'] / ref['peak_rss_mib']:.2f}× | |")


if __name__ == "__main__":
    main()
