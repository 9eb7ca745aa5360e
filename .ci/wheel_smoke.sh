#!/usr/bin/env bash
# Tested as users install it: wheels of the core, every plugin under plugins/ and the example
# third-party plugin, installed non-editable into a fresh virtualenv, then run from there (never
# from the source tree), so a file missing from a wheel (migrations, templates, the dashboard's
# static files) fails here. Run alone with `.ci/wheel_smoke.sh`; needs PostgreSQL and Redis on
# 127.0.0.1 (PROSAAS_TEST_PG, PROSAAS_TEST_REDIS as for the tests) and uses Redis database
# $PROSAAS_SMOKE_REDIS_DB (default 6), flushed.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
PG="${PROSAAS_TEST_PG:-postgresql+psycopg2://postgres@127.0.0.1:5432}"
REDIS_DB="${PROSAAS_SMOKE_REDIS_DB:-6}"
REDIS_URL="${PROSAAS_TEST_REDIS:-redis://127.0.0.1:6379}/$REDIS_DB"
WORK="$(mktemp -d -t prosaas-wheels-XXXXXX)"
DB="prosaas_smoke_$$_$RANDOM"
VENV="$WORK/venv"
step() { printf '\n== wheel smoke: %s (%ss)\n' "$*" "$SECONDS"; }
cleanup() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$PG" "$DB" <<'PYEOF' || true
import sys
from sqlalchemy import create_engine, text
e = create_engine(f"{sys.argv[1]}/postgres", isolation_level="AUTOCOMMIT")
with e.connect() as c:
    c.execute(text(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)'))
PYEOF
  rm -rf "$WORK"
}
trap cleanup EXIT

step "build wheels"
# from clean copies: a stale build/ directory in the tree could put deleted files in a wheel
mkdir -p "$WORK/src" "$WORK/wheels"
projects=(. plugins/*/ examples/greetings)
for p in "${projects[@]}"; do
  dest="$WORK/src/$(basename "$(cd "$REPO/$p" && pwd)")"
  mkdir -p "$dest"
  (cd "$REPO/$p" && tar --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.git --exclude=plugins --exclude=examples \
    --exclude=tests --exclude=bench -cf - .) | tar -xf - -C "$dest"
done
"$PY" -m venv "$VENV"
# the build backend once (the projects' pyproject.toml pin), instead of one isolated env each
"$VENV/bin/pip" install -q "setuptools>=68" wheel
"$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w "$WORK/wheels" "$WORK"/src/*/ >/dev/null
ls "$WORK/wheels"

step "install the wheels (non-editable) into a fresh virtualenv"
core=$(ls "$WORK"/wheels/prosaas-[0-9]*.whl)
others=$(ls "$WORK"/wheels/*.whl | grep -v "^$core\$")
"$VENV/bin/pip" install -q "$core[testing]" $others
cd "$WORK"  # nothing of the source tree is importable from here
export PATH="$VENV/bin:$PATH"
unset RUN_MIGRATIONS ENABLE_SCHEDULERS PROSAAS_DISABLE_PLUGINS PROSAAS_DISABLE_SERVICES
python -c "import prosaas_core, sys; assert prosaas_core.__file__.startswith('$VENV'), prosaas_core.__file__"
prosaas --version

step "prosaas plugins: every plugin loads"
prosaas plugins --json > plugins.json
python - <<'PYEOF'
import json
data = json.load(open("plugins.json"))
names = sorted(p["name"] for p in data["plugins"])
want = ["broadcast", "core", "delete_leads", "greetings", "outbound_calls", "receipts", "recordings",
        "update_leads"]
assert names == want, names
assert data["failed"] == [] and data["incompatible"] == [], data
assert all(p["version"] for p in data["plugins"]), data
PYEOF

step "db upgrade on SQLite, and the demo"
mkdir sqlite && (cd sqlite && DATABASE_URL="sqlite:///$WORK/sqlite/smoke.db" prosaas db upgrade \
  && DATABASE_URL="sqlite:///$WORK/sqlite/smoke.db" prosaas db check)
mkdir demo && (cd demo && REDIS_URL="$REDIS_URL" prosaas demo > demo.log 2>&1 || { cat demo.log; exit 1; })
tail -n 3 demo/demo.log
redis-cli -u "$REDIS_URL" flushdb >/dev/null

step "the dashboard's templates and static files are in the wheel"
DATABASE_URL="sqlite:///$WORK/sqlite/smoke.db" python - <<'PYEOF'
from prosaas_core import create_app
client = create_app().test_client()
for path in ("/dashboard/login", "/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"):
    resp = client.get(path)
    assert resp.status_code == 200 and resp.data, (path, resp.status_code)
PYEOF

step "one job through a worker on PostgreSQL and Redis"
python - "$PG" "$DB" <<'PYEOF'
import sys
from sqlalchemy import create_engine, text
e = create_engine(f"{sys.argv[1]}/postgres", isolation_level="AUTOCOMMIT")
with e.connect() as c:
    c.execute(text(f'CREATE DATABASE "{sys.argv[2]}"'))
PYEOF
export DATABASE_URL="$PG/$DB" REDIS_URL
prosaas db upgrade
business=$(prosaas businesses create "Smoke" --json | python -c "import json,sys; print(json.load(sys.stdin)['id'])")
job=$(prosaas jobs enqueue delete_receipts_all --business "$business" --payload '{}' --json \
  | python -c "import json,sys; print(json.load(sys.stdin)['id'])")
PROSAAS_DISABLE_SERVICES=recording-worker,outbound-dialer prosaas worker --burst --queues maintenance
prosaas jobs show "$job" --json | python -c "
import json, sys
job = json.load(sys.stdin)
assert job['status'] == 'succeeded', job"
unset DATABASE_URL
redis-cli -u "$REDIS_URL" flushdb >/dev/null

step "the example plugin's tests, against its installed wheel"
cp -r "$REPO/examples/greetings/tests" example_tests
PROSAAS_TEST_REDIS_DB="$REDIS_DB" pytest -q -p no:cacheprovider example_tests
step "passed"
