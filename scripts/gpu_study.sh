#!/usr/bin/env bash
# SmolLM2-135M LoRA studies on one CUDA GPU (an H200), in one prepared run; its CPU dry run is
# tests/test_scripts.py::test_gpu_study_dry_run.
#
# What it measures (files under $OUT, printed as each part ends):
#   scaling.json  one small study (16 trials, 1 epoch over 2000 training sentences, 500 validation sentences), fresh each
#                 time, with --workers 1, 4 and 8 sharing the one GPU: wall time, best val accuracy, the speedup of 4 and
#                 8 workers over 1 (aim: 5x with 8 workers at the same best accuracy). Runs first: it is short, and it
#                 picks the worker count of the study below.
#   study.json    the full-data study (30 trials, 16000 / 2000 sentences) with the fastest worker count above, then
#                 study.final --seeds 3 on the whole test split: the study's wall time, test accuracy (mean, std, 95% CI)
#                 (aim: >= 0.935 with the study in 5 minutes or less; a plain 3-epoch loop with hand-set parameters
#                 gave 0.925). report.json is study.final's own report.
#   setup.log, scaling.log, study.log (the commands' output), gpu.log (nvidia-smi dmon), errors.log (failed trials' tracebacks)
#
# The steps, in order, for a GPU machine that takes at most 64 MiB per transfer and keeps its files only between
# calls that follow each other closely (SmolLM2's 98 MB GGUF travels in two parts):
#   0. Here, in the repository root (PyPI reachable):   bash scripts/gpu_study.sh prepare
#   1. There, with .smol/a copied beside the checkout:   bash scripts/gpu_study.sh receive a
#      48 MiB: the GGUF's first part and the gguf wheel, into /root/smol. It prints the GPU, torch and pyarrow there and
#      the next call: 2, or first, where pyarrow there is older than 24 (datasets 5.2 needs 24; a 55 MB wheel):
#      bash scripts/gpu_study.sh receive p    (with .smol/p)
#   2. There, with .smol/b, .whl and .gpu:                bash scripts/gpu_study.sh run
#      58 MiB: the second part, the wheels the GPU image lacks, the data. It joins and checks the GGUF, converts it to a
#      plain HF folder, runs both parts and stops itself by GPU_STUDY_DEADLINE=540 s. A call that says the first part
#      is missing came too late: the machine had gone back; begin again at 1.
#   About 10 minutes in all on the GPU.
#
# Sizes (each overridable by the environment variable named):
#   GPU_STUDY_BATCH=128   One process's training step on the H200 is mostly launch overhead, not arithmetic (docs/speed.md:
#                         SmolLM2 LoRA at batch 64 took 40 s an epoch with its evaluations, ~0.15 s a step; GPT-2-124M at
#                         batch 512, 3.4 s an epoch, 0.11 s a step), so fewer, bigger batches buy speed with optimizer
#                         steps, which LoRA needs for accuracy. 128 keeps 125 steps an epoch, and memory: at ~0.7 MiB of
#                         activations a token (docs/speed.md: 3952 MiB peak at batch 64) the longest batch of 128 needs ~8 GiB,
#                         so 8 workers fit in the 139 GiB where 8 at batch 512 (the bench: 32 GiB each) would not.
#   GPU_STUDY_EPOCHS=2    250 steps a trial, ~50 s alone (estimated from the above); 30 trials, about half of whose steps
#                         the median pruner saves (docs/speed.md: 35-70 % run), are ~12 minutes of one process: ~3 minutes at the
#                         hoped-for 4-5x of 8 workers. A third epoch would not leave study.final's 3 retrains (~2.5 min)
#                         inside the run. The study stops starting trials when the time left would not hold them
#                         (--timeout, from GPU_STUDY_DEADLINE), and says how many finished.
#   GPU_STUDY_TRIALS=30 GPU_STUDY_SEEDS=3 GPU_STUDY_WORKERS (default: the fastest of the scaling part)
#   GPU_STUDY_SCALE="1 4 8" GPU_STUDY_SCALE_TRIALS=16 GPU_STUDY_SCALE_TRAIN=2000 GPU_STUDY_SCALE_EVAL=500: one
#                         epoch, ~4 s a trial alone, so that 1 worker takes ~70 s and the three runs ~2.5 minutes.
#
# DRY_RUN=1 runs the whole `run` verb on a CPU with tiny sizes: GPU_STUDY_MODEL (a model folder; also skips the GGUF on
# a GPU), GPU_STUDY_DATA, GPU_STUDY_WORK (scratch folder), OUT and PYTHON, as tests/test_scripts.py does.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOL=${GPU_STUDY_SMOL:-/root/smol}  # where `receive` puts the parts on the GPU machine (outside the copied tree)
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256_PREFIX=b179c9523d0e6a0f  # ../shared/tools/smollm2-for-device's header
# gpu_bench.sh's six wheels, plus what study.run's storage module (sqlalchemy) and study.final (optuna-dashboard,
# bottle) import. No alembic: the studies use journal files, not SQLite.
WHEELS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 optuna==5.0.0 colorlog==6.12.0 jsonargparse==4.53.0 sqlalchemy==2.1.9
        optuna-dashboard==0.21.0 bottle==0.13.4)

pip_download() {  # wheels for the GPU machine's Python 3.12
    "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
}

prepare() {
    local shared root=$PWD scratch
    shared=$(cd "${SHARED:-../shared}" && pwd)
    # A fresh .whl: gpu_bench.sh shares it, and a pyarrow wheel left there by it would not fit beside the GGUF part.
    rm -rf .whl .smol .gpu/emotion
    mkdir -p .whl .gpu
    pip_download -d .whl "${WHEELS[@]}"
    cp -r "$shared/data/emotion" .gpu/emotion
    chmod -R u+w .gpu
    # The tool runs outside any checkout: in a git worktree its own exclude line fails (.git is a file there); the
    # excludes are written below, where git says they live.
    scratch=$(mktemp -d)
    (cd "$scratch" && "$shared/tools/smollm2-for-device" "$root/.smol")
    rmdir "$scratch"
    mkdir -p .smol/p
    pip_download -d .smol/p pyarrow==26.0.1  # only carried if the GPU image's pyarrow is older than 24
    local exclude ignored
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    for ignored in /.whl/ /.gpu/ /.smol/; do
        grep -qx "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
    done
    # Each call carries the working tree (tracked and untracked-not-ignored files) plus its carry: at most 64 MiB.
    local tree a run
    tree=$(git ls-files -z -co --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
    a=$(( tree + $(du -sb .smol/a | cut -f1) ))
    run=$(( tree + $(du -cb .smol/b .whl .gpu | tail -1 | cut -f1) ))
    echo "call 1 carries $(( a >> 20 )) MiB, call 2 $(( run >> 20 )) MiB (limit 64)"
    if (( a > 64 << 20 || run > 64 << 20 )); then echo "error: over 64 MiB" >&2; exit 1; fi
    echo 'now, one right after the other:'
    echo '  bash scripts/gpu_study.sh receive a    (with .smol/a beside the checkout)'
    echo '  bash scripts/gpu_study.sh run          (with .smol/b, .whl and .gpu)'
}

receive() {
    local part=${1:?usage: bash scripts/gpu_study.sh receive a|p}
    mkdir -p "$SMOL"
    cp ".smol/$part"/* "$SMOL"/
    ls -l "$SMOL"
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
    # What the run needs from the image, checked now while the next call can still bring it.
    python3 - "$SMOL" <<'EOF'
import glob, sys
import pyarrow, torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers",
      transformers.__version__, "pyarrow", pyarrow.__version__)
if int(pyarrow.__version__.split(".")[0]) < 24 and not glob.glob(f"{sys.argv[1]}/pyarrow-*.whl"):
    print('NEXT: bash scripts/gpu_study.sh receive p (with .smol/p), then the run')
else:
    print('NEXT: bash scripts/gpu_study.sh run (with .smol/b, .whl and .gpu)')
EOF
}

now_s() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

model_from_gguf() {  # SmolLM2 as a plain HF folder in $1, from the two parts
    cat "$SMOL/part.aa" .smol/b/part.ab > "$SMOL/$GGUF"
    local sum
    sum=$(sha256sum "$SMOL/$GGUF" | cut -c1-16)
    [ "$sum" = "$GGUF_SHA256_PREFIX" ] || { echo "error: $GGUF has sha256 $sum..., not $GGUF_SHA256_PREFIX..." >&2; exit 3; }
    # As ../shared/tools/prepare-smollm2 does: the GGUF's weights come dequantized; without its quantizer and
    # quantization_config the saved folder loads as a plain model (LoRA here; QLoRA would refuse them).
    python3 - "$SMOL" "$1" <<'EOF'
import sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
started = time.perf_counter()
src, out = sys.argv[1], sys.argv[2]
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
model.hf_quantizer = None
if getattr(model.config, "quantization_config", None) is not None:
    del model.config.quantization_config
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"SmolLM2 converted to {out} in {time.perf_counter() - started:.1f} s")
EOF
}

setup() {  # the wheels, the checks, the model in $1 (it runs in a pipeline, a subshell: it sets nothing)
    if [ -z "${GPU_STUDY_MODEL:-}" ] && [ ! -f "$SMOL/part.aa" ]; then  # before anything else costs device time
        echo "error: $SMOL/part.aa is missing: the GPU machine went back after 'receive a' (it stays 30 s). Call receive a, then run, at once." >&2
        exit 3
    fi
    if [ "$dry" != 1 ]; then  # the wheels are for the GPU machine's Python 3.12; the dry run has the project's venv
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            $(ls "$SMOL"/*.whl 2>/dev/null)
    fi
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
    python3 - <<'EOF'
import os, sys
import datasets, optuna, optuna_dashboard, peft, pyarrow, sqlalchemy, torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "datasets", datasets.__version__, "optuna", optuna.__version__, "pyarrow", pyarrow.__version__)
if int(pyarrow.__version__.split(".")[0]) < 24:
    sys.exit("pyarrow < 24 here: bash scripts/gpu_study.sh receive p (with .smol/p) before the run")
assert torch.cuda.is_available() or os.environ.get("DRY_RUN") == "1", "no GPU visible"
# final --seeds N (the chosen trial retrained with N seeds: mean, std and 95% CI of test accuracy) is the study's
# result: without it the run would measure half of what it is for.
from study.final import COMMAND
if "--seeds" not in COMMAND.parser().format_help():
    sys.exit("error: this checkout's final command has no --seeds flag")
EOF
    if [ -z "${GPU_STUDY_MODEL:-}" ]; then model_from_gguf "$1"; fi
}

# One fresh study.run of study $1; its JSON line goes to $2, its output to $3 (a log); $4 workers; the rest are
# study.run's flags.
run_study() {
    local name=$1 lines=$2 log=$3 workers=$4 started code=0
    shift 4
    rm -rf "$work/$name.journal" "$work"/storage/*/"$name"-*  # a fresh study each time the script runs
    started=$(now_s)
    python3 -m study.run --variant lora --model "$model" --data "$data" --batch-size "$batch" --workers "$workers" --patience 0 \
        --study-name "$name" --storage "$work/$name.journal" --output-dir "$work/storage" "$@" 2>&1 | tee -a "$log" || code=$?
    # The JSON line to the file; its summary line (stderr) shows here.
    python3 scripts/gpu_study_summary.py study "$work/$name.journal" "$name" "$(since "$started")" "$workers" "$code" >> "$lines"
}

monitor=  # nvidia-smi dmon's pid, stopped when the script ends
trap '[ -z "$monitor" ] || kill "$monitor" 2>/dev/null || true' EXIT

run() {
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    dry=${DRY_RUN:-0}
    out=${OUT:-/tmp/gpu-study-out} work=${GPU_STUDY_WORK:-/tmp/gpu-study} data=${GPU_STUDY_DATA:-.gpu/emotion}
    local python=${PYTHON:-python3}
    python3() { command "$python" "$@"; }
    batch=${GPU_STUDY_BATCH:-128}
    local epochs=${GPU_STUDY_EPOCHS:-2} trials=${GPU_STUDY_TRIALS:-30} seeds=${GPU_STUDY_SEEDS:-3}
    local scale=${GPU_STUDY_SCALE:-1 4 8} scale_trials=${GPU_STUDY_SCALE_TRIALS:-16}
    local scale_train=${GPU_STUDY_SCALE_TRAIN:-2000} scale_eval=${GPU_STUDY_SCALE_EVAL:-500}
    local deadline=${GPU_STUDY_DEADLINE:-540}
    if [ "$dry" = 1 ]; then  # tiny: a few trials, 2 workers where 8 would be
        batch=16 epochs=1 trials=3 seeds=2 scale="1 2" scale_trials=3 scale_train=96 scale_eval=32
    fi
    local start=$SECONDS
    mkdir -p "$out" "$work"
    export PYTHONPATH=$PWD
    if [ "$dry" != 1 ]; then PYTHONPATH=/tmp/site:$PWD; fi  # setup installs the wheels there
    # The GPU's use while the parts run: whether 8 workers keep it busier than 1.
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi dmon -s um -d 2 -o T > "$out/gpu.log" 2>&1 &
        monitor=$!
    fi
    model=${GPU_STUDY_MODEL:-$work/smollm2-135m}
    setup "$model" 2>&1 | tee "$out/setup.log"

    echo "== scaling: $scale_trials trials, 1 epoch over $scale_train sentences, batch $batch, workers $scale"
    rm -f "$work/scaling.jsonl"
    local k
    for k in $scale; do
        # A guard, not the plan: 1 worker should finish in well under it; a run it cuts short gets no speedup.
        run_study "smollm2-lora-w$k" "$work/scaling.jsonl" "$out/scaling.log" "$k" --trials "$scale_trials" --epochs 1 \
            --max-train-samples "$scale_train" --max-eval-samples "$scale_eval" --timeout 150
    done
    python3 scripts/gpu_study_summary.py scaling "$work/scaling.jsonl" "$out/scaling.json" "$scale_trials"

    local workers=${GPU_STUDY_WORKERS:-$(python3 scripts/gpu_study_summary.py fastest "$out/scaling.json")}
    # Leave study.final its retrains (~25 s an epoch each, estimated) and the trials still running at the timeout
    # (up to a whole trial, ~2x slower while the workers share the GPU) inside the deadline: the test accuracy is
    # the result, so the study gives way to it.
    # (awk: --epochs may be a fraction.)
    local no_new_after
    no_new_after=$(awk -v left=$(( deadline - (SECONDS - start) )) -v seeds="$seeds" -v epochs="$epochs" \
        'BEGIN { t = left - (seeds * epochs * 25 + 20) - epochs * 50; printf "%d", t < 60 ? 60 : t }')
    echo "== study: $trials trials, $epochs epochs over all training sentences, batch $batch, $workers workers, no new trial after $no_new_after s"
    rm -f "$work/study.jsonl"
    run_study smollm2-lora-gpu "$work/study.jsonl" "$out/study.log" "$workers" --trials "$trials" --epochs "$epochs" --timeout "$no_new_after"
    echo "== final: study.final --seeds $seeds"
    local left=$(( deadline - (SECONDS - start) )) started code=0
    (( left >= 30 )) || left=30
    started=$(now_s)
    timeout -s INT "$left" "$python" -m study.final --seeds "$seeds" --storage "$work/smollm2-lora-gpu.journal" \
        --study-name smollm2-lora-gpu --output-dir "$work/storage" 2>&1 | tee -a "$out/study.log" || code=$?
    local report
    report=$(ls "$work"/storage/*/smollm2-lora-gpu-*/final/report.json 2>/dev/null | head -n 1)  # <output-dir>/<storage>/<study>-<hash>/
    [ -n "$report" ] && cp "$report" "$out/report.json"
    python3 scripts/gpu_study_summary.py final "$work/study.jsonl" "$report" "$(since "$started")" "$code" "$out/study.json"
    cat "$work"/storage/*/*/errors.log > "$out/errors.log" 2>/dev/null || rm -f "$out/errors.log"
    echo "== done in $(( SECONDS - start )) s; files in $out: $(ls "$out" | tr '\n' ' ')"
    [ "$code" = 0 ]
}

case "${1:-}" in
    prepare) prepare ;;
    receive) receive "${2:-}" ;;
    run) run ;;
    *) echo "usage: bash scripts/gpu_study.sh prepare | receive a|p | run" >&2; exit 2 ;;
esac
