#!/usr/bin/env bash
# Set up (first run) and run the whole test suite.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
python -m pytest -q "$@"
