#!/bin/bash
# The long fuzz run of issue 19: the schemathesis CLI (all phases, valid and invalid data)
# against a running `herald serve` (seeded: `herald seed --clients 300`), once with an
# operator_cc session and once with an admin session. Left out: the operations that end or
# weaken the session itself and the login (a fuzzer that learns the login names locks them,
# and a lock ends the session it fuzzes with); tests/test_fuzz_api.py covers those, e.g.
#   FUZZ_VALID=100 FUZZ_INVALID=100 FUZZ_ONLY='auth|roles|users' pytest tests/test_fuzz_api.py
# Usage: URL=http://127.0.0.1:8080 SECONDS_PER_ROLE=600 scripts/fuzz-long.sh
# Only ever point it at a Herald of your own on this machine.
set -u
URL=${URL:-http://127.0.0.1:8080}
for who in "operator.cc:Herald-Occ-2026!" "admin:Herald-Adm-2026!"; do
  login=${who%%:*}; password=${who#*:}
  token=$(curl -s -XPOST "$URL/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"login\":\"$login\",\"password\":\"$password\"}" \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['token'])")
  echo "== $login"
  st run "$URL/api/v1/openapi.json" -H "Authorization: Bearer $token" \
    -n "${EXAMPLES:-100}" --checks not_a_server_error --phases examples,coverage,fuzzing,stateful \
    --mode all --seed "${SEED:-19}" -w 2 --request-timeout 30 --max-time "${SECONDS_PER_ROLE:-600}" \
    --no-shrink --continue-on-failure --suppress-health-check all --warnings off \
    --exclude-operation-id post_api_v1_auth_login --exclude-operation-id post_api_v1_auth_logout \
    --exclude-operation-id post_api_v1_auth_password \
    --exclude-operation-id put_api_v1_roles_role_permissions \
    --exclude-operation-id patch_api_v1_users_user_id \
    --exclude-operation-id post_api_v1_users_user_id_password \
    --exclude-path-regex '/stream$' \
    --report ndjson --report-dir "fuzz-report-$login"
done
