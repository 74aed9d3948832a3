#!/bin/sh
# The exports of libugpu.so.0 are exactly the functions the public headers
# declare, each in the version node src/libugpu.map gives it.
#
# Usage: abi.sh LIBRARY VERSION_SCRIPT INCLUDE_DIR...
#   LIBRARY         libugpu.so.0 (built or installed)
#   VERSION_SCRIPT  src/libugpu.map
#   INCLUDE_DIR     directories holding ugpu/*.h (the source tree's include/
#                   and the build's include/ for the generated version.h, or
#                   an installed prefix's include/)
#
# Three sets, compared pairwise; any difference fails with the names:
#   headers  every UGPU_API declaration in INCLUDE_DIR/ugpu/*.h. The headers
#            are read by the compiler, not by a regex over their text:
#            `cc -E` of a file that includes each of them expands UGPU_API
#            to its visibility("default") attribute and drops comments and
#            #if'd-out code; the line markers keep only the text that comes
#            from the public headers (not from libc's). The text is cut into
#            declarations at ';', '{' and '}'; one carrying the attribute
#            declares the identifier before its first '(' (after skipping
#            other __attribute__((...))-style words), or its last identifier
#            when it has no '(' (an exported variable). A declaration of a
#            ugpu_*() function without UGPU_API is reported too: it would be
#            hidden, so no caller could link it. Not understood: a function
#            returning a function pointer without a typedef (none exists).
#   map      the names under `global:` in each node of VERSION_SCRIPT, with
#            their node; a pattern there (*, ?, [) is an error, since it
#            would export whatever matches.
#   library  `nm -D --defined-only LIBRARY`, with each symbol's version node
#            from `objdump -T`. The node names themselves (absolute symbols
#            the linker adds) are not exports.
# Needs: sh, awk, sort, comm, cc (or $CC), nm and objdump (binutils).
set -eu

[ $# -ge 3 ] || { echo "usage: $0 LIBRARY VERSION_SCRIPT INCLUDE_DIR..." >&2; exit 2; }
lib=$1
map=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the headers ------------------------------------------------------------
dirs=""
cflags=""
for d in "$@"; do
	d=$(cd "$d" && pwd)
	dirs="$dirs|$d"
	cflags="$cflags -I$d"
	for h in "$d"/ugpu/*.h; do
		[ -e "$h" ] && echo "#include <ugpu/${h##*/}>" >> "$work/all.c"
	done
done
[ -s "$work/all.c" ] || { echo "FAIL: no ugpu/*.h under: $*"; exit 1; }
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -E $cflags "$work/all.c" > "$work/all.i"

awk -v dirs="${dirs#|}" -v out_api="$work/headers" -v out_bad="$work/hidden" '
BEGIN { nd = split(dirs, dir, "|") }
/^# [0-9]+ "/ {
	f = $3
	gsub(/"/, "", f)
	keep = 0
	for (i = 1; i <= nd; i++)
		if (index(f, dir[i] "/ugpu/") == 1)
			keep = 1
	next
}
/^#/ { next }
keep { text = text " " $0 }

# The first identifier followed by "(" that is not a __word__ (attributes,
# __extension__): skip such a word with its balanced parentheses.
function callee(s,    name, depth, i, c) {
	while (match(s, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
		name = substr(s, RSTART, RLENGTH)
		sub(/[ \t]*\($/, "", name)
		if (name !~ /^__/)
			return name
		s = substr(s, RSTART + RLENGTH)
		depth = 1
		for (i = 1; depth > 0 && i <= length(s); i++) {
			c = substr(s, i, 1)
			depth += (c == "(") - (c == ")")
		}
		s = substr(s, i)
	}
	return ""
}

END {
	n = split(text, decl, /[;{}]/)
	for (k = 1; k <= n; k++) {
		s = decl[k]
		api = (s ~ /visibility[ \t]*\([ \t]*"default"[ \t]*\)/)
		name = callee(s)
		if (api && name == "") {
			# An exported object: its last identifier, before any
			# [bound] or = initialiser.
			sub(/[ \t]*(\[.*|=.*)$/, "", s)
			if (match(s, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)) {
				name = substr(s, RSTART, RLENGTH)
				sub(/[ \t]+$/, "", name)
			}
		}
		if (api)
			print (name == "" ? "?unparsed: " s : name) > out_api
		else if (name ~ /^ugpu_/ && s !~ /^[ \t]*(typedef|static)[ \t]/)
			print name > out_bad
	}
	close(out_api)
	close(out_bad)
}' "$work/all.i"
touch "$work/headers" "$work/hidden"
sort -u -o "$work/headers" "$work/headers"
sort -u -o "$work/hidden" "$work/hidden"

# --- the version script -----------------------------------------------------
# Strip /* */ comments, then walk the tokens: "NODE {", "global:", "local:",
# "name;", "} [PARENT];".
awk -v out="$work/map" -v out_err="$work/map_err" '
{ text = text " " $0 }
END {
	while (match(text, /\/\*/)) {
		rest = substr(text, RSTART + 2)
		e = index(rest, "*/")
		text = substr(text, 1, RSTART - 1) " " (e ? substr(rest, e + 2) : "")
	}
	gsub(/[{};:]/, " & ", text)
	n = split(text, t, /[ \t\n]+/)
	node = ""; sect = ""; haslocal = 0
	for (i = 1; i <= n; i++) {
		w = t[i]
		if (w == "")
			continue
		if (node == "" && t[i + 1] == "{") { node = w; i++; sect = "global"; continue }
		if (w == "}") { node = ""; continue }
		if (node == "" || w == ";")
			continue
		if ((w == "global" || w == "local") && t[i + 1] == ":") { sect = w; i++; continue }
		if (sect == "local") { haslocal += (w == "*"); continue }
		if (w ~ /[*?\[]/)
			print "a pattern in node " node ": \"" w "\" (name each function)" > out_err
		else
			print w, node > out
	}
	if (!haslocal)
		print "no \"local: *;\": unlisted symbols would be exported" > out_err
	close(out); close(out_err)
}' "$map"
touch "$work/map" "$work/map_err"
sort -u -o "$work/map" "$work/map"
cut -d' ' -f1 "$work/map" | sort -u > "$work/map_names"
cut -d' ' -f2 "$work/map" | sort -u > "$work/map_nodes"

# --- the library ------------------------------------------------------------
nm -D --defined-only "$lib" | awk '{ sub(/@.*/, "", $3); print $2, $3 }' > "$work/nm"
# Node symbols: absolute, named like a node of the map.
awk 'NR == FNR { node[$1] = 1; next } !($1 == "A" && ($2 in node)) { print $2 }' \
	"$work/map_nodes" "$work/nm" | sort -u > "$work/lib_names"
objdump -T "$lib" | awk '$NF != "" && $0 !~ /\*UND\*/ && NF >= 6 && $(NF - 1) ~ /^\(?[A-Za-z]/ {
	v = $(NF - 1); gsub(/[()]/, "", v); print $NF, v }' | sort -u > "$work/lib_versions"

# --- compare ----------------------------------------------------------------
fail=0
# report TITLE FILE: print the lines of FILE under TITLE when there are any.
report() {
	if [ -s "$2" ]; then
		echo "FAIL: $1:"
		sed 's/^/    /' "$2"
		fail=1
	fi
}
grep '^?' "$work/headers" > "$work/unparsed" || true
sed -i '/^?/d' "$work/headers"
report "UGPU_API declarations this script cannot parse" "$work/unparsed"
report "ugpu_* functions declared in the public headers without UGPU_API (hidden, so no caller can link them)" "$work/hidden"
report "errors in $map" "$work/map_err"
comm -23 "$work/headers" "$work/lib_names" > "$work/d"
report "declared UGPU_API in the headers but not exported by $lib" "$work/d"
comm -13 "$work/headers" "$work/lib_names" > "$work/d"
report "exported by $lib but declared in no public header" "$work/d"
comm -23 "$work/headers" "$work/map_names" > "$work/d"
report "declared UGPU_API in the headers but not listed in $map (add them to the node of this release)" "$work/d"
comm -13 "$work/headers" "$work/map_names" > "$work/d"
report "listed in $map but declared in no public header" "$work/d"
# Node for node: the version each export carries is the node that lists it.
awk 'NR == FNR { want[$1] = $2; next } ($1 in want) && want[$1] != $2 {
	print $1 ": exported in " $2 ", listed in " want[$1] }' \
	"$work/map" "$work/lib_versions" > "$work/d"
report "exports bound to another version node than the map's" "$work/d"
grep -v '^ugpu_' "$work/lib_names" > "$work/d" || true
report "unprefixed symbols exported by $lib" "$work/d"
# The library's thread-locals are initial-exec (-ftls-model, CMakeLists.txt):
# a general-dynamic access goes through glibc's DTV, which lives in the
# program's heap, where shared virtual memory may have taken it to VRAM (a
# fault handler would then fault on its own lookup: docs/svm.md).
nm -D --undefined-only "$lib" | grep -w '__tls_get_addr' > "$work/d" || true
report "thread-locals reached through __tls_get_addr (the DTV) in $lib" "$work/d"

nhdr=$(wc -l < "$work/headers")
nlib=$(wc -l < "$work/lib_names")
nmap=$(wc -l < "$work/map_names")
if [ "$fail" -ne 0 ]; then
	echo "abi: FAILED ($nhdr declared, $nlib exported, $nmap in the version script)"
	exit 1
fi
echo "abi: ok: $nhdr functions declared UGPU_API = $nlib exported by ${lib##*/} = $nmap in ${map##*/} ($(tr '\n' ' ' < "$work/map_nodes"| sed 's/ $//'))"
