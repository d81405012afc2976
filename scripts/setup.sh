# Sourced by the other scripts: creates .venv on first use, installs pa_recon with its test extra, activates it.
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PA_RECON_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.pa_recon-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[test]"
    touch "$stamp"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
cd "$root"
