#!/usr/bin/env bash
# The five-minute tour of README.md, runnable: `make demo` (or `make run`
# until the daemon exists). Uses a throwaway home so your own is untouched.
set -euo pipefail
export DIZZY_HOME="${DIZZY_HOME:-$(mktemp -d)/alice}"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step dizzy init
step dizzy id
ENTITY=$(dizzy entity create --kind dataset --name "field survey")
echo "created entity $ENTITY"
step dizzy append "$ENTITY" note --data '{"text": "first visit", "site": 4}'
step dizzy append "$ENTITY" measurement --data '{"celsius": 21, "site": 4}'
step dizzy entity list
step dizzy log "$ENTITY"
step dizzy verify "$ENTITY"
PROOF="$(dirname "$DIZZY_HOME")/survey.proof"
step dizzy proof "$ENTITY" -o "$PROOF"
step dizzy verify --proof "$PROOF" --home "$(dirname "$DIZZY_HOME")/nobody"
BOB_HOME="$(dirname "$DIZZY_HOME")/bob"
dizzy init --home "$BOB_HOME" >/dev/null 2>&1
BOB=$(dizzy id --home "$BOB_HOME")
step dizzy grant "$ENTITY" "$BOB" --role writer
step dizzy members "$ENTITY"
step dizzy revoke "$ENTITY" "$BOB"
step dizzy quarantine list

# Files: Alice shares a folder, her daemon serves it, Bob fetches a verified copy.
WORK="$(dirname "$DIZZY_HOME")"
mkdir -p "$WORK/survey/raw"
printf 'site,celsius\n4,21\n' > "$WORK/survey/readings.csv"
head -c 3000000 /dev/urandom > "$WORK/survey/raw/scan.bin"
DATASET=$(dizzy share "$WORK/survey" --name "survey files" | cut -d' ' -f1)
step dizzy versions "$DATASET"
step dizzy ls "$DATASET"
dizzy peer run --port 0 > "$WORK/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    URL=$(grep -o 'http://[0-9.:]*' "$WORK/daemon.log" | head -n 1 || true)
    [ -n "$URL" ] && break
    sleep 0.1
done
step dizzy fetch "$DATASET" --to "$WORK/bob-copy" --peer "$URL" --home "$BOB_HOME"
step diff -r "$WORK/survey" "$WORK/bob-copy"
echo
echo "home used for this tour: $DIZZY_HOME"
