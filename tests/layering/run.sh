#!/bin/sh
# The layering check (scripts/check-layers.py) passes on the tree, and fails
# on a copy of it into which an upward include was planted (so the check
# itself cannot silently stop checking).
# Usage: run.sh SOURCE_DIR
set -eu
src=$1
python3 "$src/scripts/check-layers.py" "$src"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/scripts" "$work/base" "$work/mm"
cp "$src/scripts/check-layers.py" "$work/scripts/"
printf '#include "mm/bo.h"\n' > "$work/base/planted.c"
printf '/* nothing */\n' > "$work/mm/bo.h"
if python3 "$work/scripts/check-layers.py" "$work" >"$work/out"; then
	echo "FAIL: a planted upward include (base -> mm) was not reported"
	exit 1
fi
grep -q "base/planted.c:1: base/ (layer 0) includes mm/bo.h" "$work/out" || {
	echo "FAIL: the report does not name the planted include:"; cat "$work/out"; exit 1; }
echo "layering: ok (and a planted upward include is caught)"
