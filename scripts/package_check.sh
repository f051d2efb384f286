#!/usr/bin/env bash
# The wheel as a user installs it (`make package-check`; CI runs it): built from this checkout,
# installed into a fresh virtual environment outside the repository with only its declared
# dependencies (at the lock's versions), then used from an empty folder: every module of the
# package imports, `experiments` does not exist, `jaxrobust --help`, `jaxrobust evaluate` on
# published weights and `jaxrobust train` on the synthetic set run. Fails if any step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)

"$PY" -m pip wheel --no-deps --disable-pip-version-check -q -w "$TMP/dist" "$ROOT" 2>&1 | grep -v "is ignored" || true
WHEEL=$(ls "$TMP"/dist/jaxrobust-*.whl)
python3 -m venv "$TMP/venv"
# The lock pins versions (constraints, without its hashes: pip takes no hashes in a constraints
# file); only what the wheel declares is installed.
grep -v '^ *--hash\|^ *#' "$ROOT/requirements.lock" | sed 's/ *\\$//' > "$TMP/constraints.txt"
"$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile -c "$TMP/constraints.txt" "$WHEEL" 2>&1 \
  | grep -v "is ignored" || true

mkdir "$TMP/empty" && cd "$TMP/empty"
V="$TMP/venv/bin"
"$V/python" - <<'EOF'
import importlib, pkgutil, jaxrobust
mods = [m.name for m in pkgutil.walk_packages(jaxrobust.__path__, 'jaxrobust.')]
for m in mods:
  importlib.import_module(m)
print(f'imported {len(mods)} modules of jaxrobust {jaxrobust.__version__} from the wheel')
EOF
if "$V/python" -c 'import experiments' 2>/dev/null; then
  echo 'package-check: the installed wheel ships a package named experiments' >&2
  exit 1
fi
"$V/jaxrobust" --help > /dev/null
# The two commands side by side (each compiles on one core most of the time).
"$V/jaxrobust" train --config=regular:synthetic --workdir=run --set train.num_steps=3 --quiet > train.log 2>&1 &
trained=$!
"$V/jaxrobust" evaluate --model="$ROOT/results/published/fashion_mnist/pgd_at" --num_test=8 \
  --steps_scale=0.05 --suite=study --quiet
if ! wait "$trained"; then
  cat train.log >&2
  echo 'package-check: jaxrobust train failed' >&2
  exit 1
fi
tail -1 train.log
echo "package-check: passed in $(( $(date +%s) - start )) s"
