#!/usr/bin/env bash
# The bench on a CUDA GPU (an H100 or H200), with a GPT-2-124M-shaped random model built there from the real GPT-2 tokenizer,
# on the real emotion data. Two steps:
#
#   1. Here, in the repository root (a machine with PyPI):   bash scripts/gpu_bench.sh prepare
#      It puts into git-ignored folders what the GPU machine lacks (its image has torch, transformers, peft, accelerate,
#      pandas, pyarrow, scikit-learn, psutil; not datasets, optuna or bitsandbytes):
#        .whl/  datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19, optuna 5.0.0, colorlog 6.12.0   (about 1.4 MB)
#        .gpu/  gpt2-tokenizer/ (copy of ../shared/models/gpt2-tokenizer) and emotion/ (copy of ../shared/data/emotion)
#      datasets 5.2 needs pyarrow >= 24; if the GPU image's is older, the run says so and stops: then run
#      `WITH_PYARROW=1 bash scripts/gpu_bench.sh prepare` (adds a 55 MB pyarrow wheel; the carry stays under 64 MiB).
#   2. On the GPU machine, in a copy of the checkout with .whl/ and .gpu/ beside it: bash scripts/gpu_bench.sh run
#      About 5-7 minutes (the compiled trials' compile time is the unknown). The JSON files and logs come back from
#      $OUT; the output's last lines summarise them.
#
# What it measures (one epoch over the 16k training sentences, 2k validation sentences evaluated twice per epoch):
#   lora_b512.json  naive (pad to 128, fp32, batch 16) against the project at batch 512, plain and compiled (two trials
#                   each: the first compiled one pays for compiling): epoch times, speedups, whether compiling pays for
#                   a 3-epoch trial; and the head with and without the feature cache
#   lora_b32.json   the same naive trial against the project at its default batch 32
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local python=${PYTHON:-python3}
    local shared=${SHARED:-../shared}
    mkdir -p .whl .gpu
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 optuna==5.0.0 colorlog==6.12.0 jsonargparse==4.53.0
    if [ "${WITH_PYARROW:-0}" = 1 ]; then
        "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 -d .whl pyarrow==26.0.1
    fi
    rm -rf .gpu/gpt2-tokenizer .gpu/emotion
    cp -r "$shared/models/gpt2-tokenizer" .gpu/gpt2-tokenizer
    cp -r "$shared/data/emotion" .gpu/emotion
    chmod -R u+w .gpu
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    for ignored in /.whl/ /.gpu/; do
        grep -qx "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
    done
    du -sh .whl .gpu
    echo 'now, on the GPU machine with .whl/ and .gpu/ copied there: bash scripts/gpu_bench.sh run'
}

run() {
    # DRY_RUN=1 tries the whole script on a CPU with a few sentences (PYTHON picks the interpreter there; GPU_BENCH_TOKENIZER
    # and GPU_BENCH_DATA another tokenizer and data folder, as tests/test_scripts.py does).
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    export GPU_BENCH_TOKENIZER=${GPU_BENCH_TOKENIZER:-.gpu/gpt2-tokenizer}
    local out=${OUT:-/tmp/gpu-bench-out} python3=${PYTHON:-python3} train=16000 eval=2000 data=${GPU_BENCH_DATA:-.gpu/emotion}
    local work=${GPU_BENCH_WORK:-/tmp}
    if [ "${DRY_RUN:-0}" = 1 ]; then train=64 eval=32; fi
    mkdir -p "$out"
    python3() { command "$python3" "$@"; }
    if [ "${DRY_RUN:-0}" != 1 ]; then  # the wheels are for the GPU machine's Python 3.12
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    fi
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 - <<'EOF'
import sys
import pyarrow, torch, transformers, peft, accelerate, datasets, optuna
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "accelerate", accelerate.__version__, "datasets", datasets.__version__, "optuna", optuna.__version__, "pyarrow", pyarrow.__version__)
if int(pyarrow.__version__.split(".")[0]) < 24:
    sys.exit("pyarrow < 24 here: rerun `WITH_PYARROW=1 bash scripts/gpu_bench.sh prepare` and carry .whl again")
import os
assert torch.cuda.is_available() or os.environ.get("DRY_RUN") == "1", "no GPU visible"
EOF
    # GPT-2-124M's shape (12 layers, 768 wide, 50257 tokens), random weights, the real tokenizer.
    python3 - "$work/gpt2-124m" <<'EOF'
import os, sys, torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(os.environ["GPU_BENCH_TOKENIZER"])
shape = dict(n_layer=2, n_embd=64, n_head=2) if os.environ.get("DRY_RUN") == "1" else {}
GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **shape)).save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
print("built", sys.argv[1])
EOF
    local common=(--model "$work/gpt2-124m" --data "$data" --variant lora --max-train-samples "$train" --max-eval-samples "$eval"
                  --epochs 1 --output-dir "$work/bench-storage")
    # The batch-512 run first: it holds the main numbers, should the time run out during the second.
    python3 -m study.bench "${common[@]}" --batch-size 512 --repeats 2 --compare-compile --parts throughput head \
        --json "$out/lora_b512.json" 2>&1 | tee "$out/lora_b512.log" || echo "the batch-512 bench failed: see lora_b512.log"
    python3 -m study.bench "${common[@]}" --batch-size 32 --repeats 2 --parts throughput --json "$out/lora_b32.json" \
        2>&1 | tee "$out/lora_b32.log" || echo "the batch-32 bench failed: see lora_b32.log"
    python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path
for name in ("lora_b512", "lora_b32"):
    path = Path(sys.argv[1]) / f"{name}.json"
    if not path.is_file():
        print(name, "missing")
        continue
    r = json.loads(path.read_text())
    keys = ("naive_epoch_s", "project_epoch_s", "speedup", "compiled_epoch_s", "compiled_speedup", "compile_overhead_s",
            "compile_pays_for_first_trial", "compile_error", "head_cache_speedup", "naive_peak_memory_mib", "project_peak_memory_mib")
    print(name, {k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in keys if k in r})
EOF
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash scripts/gpu_bench.sh prepare|run" >&2; exit 2 ;;
esac
