#!/usr/bin/env bash
# The GPU speed figures that the README's reconstruction-speed table still lacks, as one device call:
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS]
#
# Runs benchmarks/recon.py on the GPU profile's 128×128 geometry with CUDA graphs, cheapest check first, each under
# its own time limit and all within SECONDS (default 540), so that a slow compile cannot take the others' time:
#   channels_last   single-scan MAP (both priors, with the starts) with channels-last weights
#   lbfgs           single-scan MAP by L-BFGS, after the float64 check that graph and op-by-op iterates agree
#   batch_posterior conditional MAP of 16 scans together (steps, and apart their latent start) and 100 posterior samples
#   compiled        single-scan MAP with the priors' passes compiled (the conditional prior's compile took over
#                   230 s on an H200 host, so it goes last)
# It needs torch with CUDA, numpy, scipy, h5py, yaml and tqdm, not mlflow, dask or dvc, and uses the working tree
# without installing it. OUT_DIR gets <check>.json per check, log.txt (every check's output) and gpu.txt.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS]}
budget=${2:-540}
device=${PA_RECON_BENCH_DEVICE:-cuda}  # "cpu" (op by op) only to try the script itself on a machine without a GPU
mode=graph
[[ $device == cpu ]] && mode=eager
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt"
start=$SECONDS

check() {  # check NAME SECONDS ARGS...: one benchmarks/recon.py run, cut to what is left of the budget
    local name=$1 limit=$2 left=$((budget - (SECONDS - start)))
    shift 2
    if ((left < 30)); then
        echo "== $name: not run, $left s of the budget left" | tee -a "$out/log.txt"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at most $limit s): benchmarks/recon.py $*" | tee -a "$out/log.txt"
    timeout "$limit" python -u benchmarks/recon.py --params profiles/gpu.yaml --devices "$device" --modes "$mode" \
        "$@" --json "$out/$name.json" 2>&1 | tr '\r' '\n' | grep -v '%|' >> "$out/log.txt"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s in all" | tee -a "$out/log.txt"
}

check channels_last 90 --parts map --channels-last --no-check
check lbfgs 120 --parts map --optimizer lbfgs
check batch_posterior 180 --parts batch posterior --no-check
check compiled 420 --parts map --compile --no-check
