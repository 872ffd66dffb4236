#!/usr/bin/env bash
# A prepared GPU check for whoever has a GPU: at most 8 minutes on one GPU. Times ML and
# adversarial steps of both generators on the previous path (32-true, the previous PixelCNN
# sampler) and the current one (bf16-mixed, channels-last, the current sampler) on
# CIFAR-10-shaped data, compares bf16-mixed discriminator logits with float32 ones, times
# sampling of 64 and 1,000 images with both PixelCNN samplers and with the current one replayed
# as a CUDA graph, and runs 2-process DDP when there are two GPUs; writes
# benchmarks/results/gpu.json (see benchmarks/gpu_check.py).
# Not part of CI. Usage: bash benchmarks/gpu_check.sh [--batch-size N]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU is visible to torch on this machine; nothing was measured." \
         "Run benchmarks/gpu_check.sh on a machine with a GPU (it is not needed for CI)." >&2
    exit 2
fi
exec timeout --signal=INT --kill-after=20 480 python benchmarks/gpu_check.py "$@"
