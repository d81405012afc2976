#!/usr/bin/env bash
# Set up (first run) and run the photoacoustic DVC pipeline end to end on the embedded default data.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
dvc repro "$@"
dvc metrics show
