#!/usr/bin/env bash
# Set up (first run) and run the photoacoustic DVC pipeline (./dvc.yaml) end to end on the built-in phantoms.
# The benchmark pipelines under pipelines/ are separate: run them with `dvc repro pipelines/NAME/dvc.yaml`.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
# One torch thread per process unless the caller says otherwise: the README's timings use it, and on a shared
# 2-core machine two threads ran several times slower than one. params.yaml gives each prior training two
# (cpu_threads), and the stages with a prior two worker processes, since nothing else runs beside them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
dvc repro dvc.yaml "$@"
cat outputs/report/results.md
