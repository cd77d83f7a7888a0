# Shared by bin/start and bin/test: a .venv with the project installed, and the tools it runs.
# Idempotent: a second run with nothing changed takes about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
  local cand
  for cand in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

# ensure_venv EXTRAS: create .venv and (re)install the project when setup.cfg or the extras changed.
ensure_venv() {
  local extras="$1" py stamp
  if [ ! -x "$VENV/bin/python" ]; then
    py="$(find_python)" || die "Python 3.11 or newer with venv is required (apt-get install python3-venv)"
    say "creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  stamp="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)-$extras-$("$VENV/bin/python" -V 2>&1)"
  if [ "$(cat "$VENV/.mlops-stamp" 2>/dev/null)" = "$stamp" ] && "$VENV/bin/python" -c 'import mlops_local' 2>/dev/null; then
    say "Python dependencies up to date (.venv)"
    return 0
  fi
  say "installing mlops-local and its Python dependencies into .venv (first run: a few minutes)"
  # constraints.txt: the exact versions the test suite passed with (setup.cfg keeps the ranges).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" \
    -e "$ROOT[$extras]"
  printf '%s' "$stamp" > "$VENV/.mlops-stamp"
}

ensure_prometheus() {
  say "checking for a Prometheus binary"
  local path
  path="$("$VENV/bin/mlops-local" --log-level WARNING install prometheus)" || die "could not get Prometheus (see above)"
  say "Prometheus: $path"
}

ensure_chromium() {
  local bin="${MLOPS_CHROMIUM:-/usr/bin/chromium}"
  if [ -x "$bin" ]; then say "Chromium: $bin"; return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium for the browser tests (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
    [ -x "$bin" ] && { say "Chromium: $bin"; return 0; }
  fi
  die "Chromium not found at $bin: install it (Debian: apt-get install chromium) or set MLOPS_CHROMIUM"
}

# with_store_extras EXTRAS: EXTRAS plus `postgres` (its driver) when MLOPS_BACKEND_STORE_URI is PostgreSQL.
with_store_extras() {
  case "${MLOPS_BACKEND_STORE_URI:-}" in
    postgresql*) printf '%s,postgres' "$1" ;;
    *) printf '%s' "$1" ;;
  esac
}

# The tests' throwaway PostgreSQL clusters need Debian's server binaries (initdb, pg_ctl).
ensure_postgresql() {
  local initdb
  initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$initdb" ]; then say "PostgreSQL: $(dirname "$initdb")"; return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's postgresql for the PostgreSQL store tests (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    # No system-wide cluster (nor a server left running): the tests create and stop their own.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/mlops-local.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null \
      && { say "PostgreSQL installed"; return 0; }
  fi
  say "PostgreSQL not installed and cannot be installed here: the PostgreSQL store tests will be skipped"
}
