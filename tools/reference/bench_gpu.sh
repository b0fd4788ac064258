#!/usr/bin/env bash
# `nuri bench` on a GPU through wgpu (Vulkan), next to transformers' Qwen2-VL on the same GPU
# through CUDA, for the presets named (default: quickstart small-100m tiny).
#
#     tools/reference/bench_gpu.sh NURI_BINARY OUT_DIR [PRESET...]
#
# NURI_BINARY is a release build with `--features wgpu`; python3 must have torch (with CUDA)
# and transformers. Each preset writes OUT_DIR/nuri-wgpu-P.json and OUT_DIR/torch-cuda-P.json
# (fp32 both), and the log of everything goes to stdout. Each command is bounded by
# $BENCH_TIMEOUT seconds (default 150) so that one slow phase cannot take the whole run.
set -uo pipefail
nuri=$1
out=$2
shift 2
presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(quickstart small-100m tiny)
limit=${BENCH_TIMEOUT:-150}
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
for p in "${presets[@]}"; do
  echo "=== $p: nuri, wgpu ($(date -u +%T))"
  timeout "$limit" "$nuri" bench --device wgpu --preset "$p" --matmul-size 4096 \
    --json "$out/nuri-wgpu-$p.json" || echo "nuri $p: exit $?"
  echo "=== $p: transformers, cuda fp32 ($(date -u +%T))"
  cfg="$(mktemp -d)"
  "$nuri" bench --preset "$p" --export-config "$cfg" >/dev/null
  timeout "$limit" python3 "$here/bench_torch.py" --device cuda --config "$cfg" --matmul-size 4096 \
    --json "$out/torch-cuda-$p.json" || echo "torch $p: exit $?"
  if [ -f "$out/nuri-wgpu-$p.json" ] && [ -f "$out/torch-cuda-$p.json" ]; then
    python3 "$here/bench_torch.py" --compare "$out/nuri-wgpu-$p.json" "$out/torch-cuda-$p.json"
  fi
done
