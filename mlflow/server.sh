#!/usr/bin/env bash
# Start the MLflow tracking server and UI for this project.
#
#   mlflow/server.sh [--port N] [--host H] [any other `mlflow server` option ...]
#
# Default: the embedded store next to this script (SQLite mlflow/mlflow.db, artifacts in
# mlflow/artifacts), bound to 127.0.0.1:5000. For a cluster, environment variables switch it to a
# shared store (flags win over environment variables):
#   MLFLOW_BACKEND_STORE_URI      e.g. postgresql://user:pw@db-host:5432/mlflow (needs psycopg 3: pip install "psycopg[binary]")
#   MLFLOW_ARTIFACTS_DESTINATION  shared folder or s3://bucket/prefix
#   MLFLOW_HOST, MLFLOW_PORT      e.g. 0.0.0.0 and 5000
#   MLFLOW_WORKERS                server worker processes (mlflow's default is 4)
#   MLFLOW_SERVER_PYTHON          the python that runs the server (default: the repo's .venv, else python3)
# Artifacts are served through the server (--serve-artifacts), so clients only need the server's
# URL, never direct access to the artifact store.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --port=*) port="${1#*=}"; shift ;;
        --host) host="${2:?--host needs a value}"; shift 2 ;;
        --host=*) host="${1#*=}"; shift ;;
        --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
            exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done

# The defaults are absolute, so the store is the same whatever directory the script is started from.
backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HERE/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$HERE/artifacts}"
if [[ "$artifacts" != *://* ]]; then
    mkdir -p "$artifacts"
fi

# The project's venv carries the pinned mlflow; fall back to whatever python3 has.
if [[ -n "${MLFLOW_SERVER_PYTHON:-}" ]]; then
    py="$MLFLOW_SERVER_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
    py="$REPO/.venv/bin/python"
else
    py="python3"
fi

workers=()
if [[ -n "${MLFLOW_WORKERS:-}" ]]; then
    workers=(--workers "$MLFLOW_WORKERS")
fi

# The backend store URI may hold a database password: it reaches the server through the environment
# (mlflow server reads MLFLOW_BACKEND_STORE_URI), never the command line, where `ps` shows it to every user.
export MLFLOW_BACKEND_STORE_URI="$backend"

# `python -m` puts the working directory first on sys.path; that is safe even in the repo root because
# mlflow/ here holds no Python files (a regular package in site-packages wins over a bare folder).
exec "$py" -m mlflow server \
    --serve-artifacts \
    --artifacts-destination "$artifacts" \
    --host "$host" \
    --port "$port" \
    "${workers[@]}" \
    "${extra[@]}"
