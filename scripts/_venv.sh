# Sourced by the other scripts: make .venv exist and match pyproject.toml, then activate it.
# Re-installs only when pyproject.toml changes, so repeated runs start fast. The set-up runs in a
# subshell at the repository root, so the caller stays in the directory the user ran it from and
# relative paths in its arguments (--data-dir, --config) mean what the user meant.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(
    cd "$root"
    py="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        "$py" -m venv .venv
    fi
    stamp=".venv/.sluice-installed"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".[dev]"
        echo "$want" > "$stamp"
    fi
)
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
