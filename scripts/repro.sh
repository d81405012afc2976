#!/usr/bin/env bash
# Set up (first run) and run the photoacoustic DVC pipeline (./dvc.yaml) end to end on the built-in phantoms.
# The benchmark pipelines under pipelines/ are separate: run them with `dvc repro pipelines/NAME/dvc.yaml`.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
dvc repro dvc.yaml "$@"
cat outputs/report/results.md
