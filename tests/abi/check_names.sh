#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Fails, listing them, if a name pcsc-lite's public headers declare is missing from
# ours, or has no entry in abi_list.h (so the ABI test would not compare it).
#
# usage: check_names.sh [PCSCLITE_INCLUDE_DIR [OUR_INCLUDE_DIR [ABI_LIST]]]
#   PCSCLITE_INCLUDE_DIR  where pcsc-lite's winscard.h is (default: pkg-config's
#                         includedir for libpcsclite, else /usr/include/PCSC)
#   OUR_INCLUDE_DIR       default: include/calais/pcsc of this source tree
#   ABI_LIST              default: abi_list.h next to this script
# The C preprocessor ($CC, default cc) strips comments and resolves the headers'
# #if branches for this platform; the names are then read from its -dD output.
# Exit status: 0 all present, 1 names missing, 77 pcsc-lite's headers not found (the
# "skipped" code of meson and automake), 2 other errors.

set -u

here=$(cd "$(dirname "$0")" && pwd) || exit 2
theirs=${1:-}
if [ -z "$theirs" ]; then
	theirs=$(pkg-config --variable=includedir libpcsclite 2>/dev/null) || theirs=
	[ -n "$theirs" ] || theirs=/usr/include/PCSC
fi
ours=${2:-$here/../../include/calais/pcsc}
abi_list=${3:-$here/abi_list.h}
cc=${CC:-cc}

if [ ! -f "$theirs/winscard.h" ] || [ ! -f "$theirs/reader.h" ]; then
	echo "check_names: pcsc-lite headers not found in $theirs; skipped" >&2
	exit 77
fi
for f in winscard.h pcsclite.h reader.h wintypes.h; do
	[ -f "$ours/$f" ] || { echo "check_names: $ours/$f missing" >&2; exit 2; }
done
[ -f "$abi_list" ] || { echo "check_names: $abi_list missing" >&2; exit 2; }

# Absolute, so that the preprocessor's line markers can be matched against them.
theirs=$(cd "$theirs" && pwd) || exit 2
ours=$(cd "$ours" && pwd) || exit 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_names.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT HUP INT TERM

# Prints one line per declared name, from the headers under directory $1 only:
#   macro NAME        object-like macro
#   fmacro NAME       function-like macro
#   typedef NAME
#   function NAME
#   object NAME       extern data object
#   member TYPE.NAME  member of a typedef'd struct
names() {
	printf '#include <winscard.h>\n#include <reader.h>\n' |
		"$cc" -std=c11 -E -dD -I"$1" -x c - >"$tmp/pp" ||
		{ echo "check_names: $cc -E failed on $1" >&2; exit 2; }
	awk -v dir="$1/" '
	function trim(s) { gsub(/^[[:space:]]+|[[:space:]]+$/, "", s); return s }
	# The identifier a declarator declares: the last one, outside any [...] or (...).
	function declared(d) {
		gsub(/\[[^]]*\]/, "", d)
		gsub(/\([^()]*\)/, "", d)
		if (match(d, /[A-Za-z_][A-Za-z0-9_]*[ \t*]*$/) == 0)
			return ""
		d = substr(d, RSTART)
		gsub(/[ \t*]/, "", d)
		return d
	}
	/^# [0-9]+ "/ {
		f = $3; gsub(/"/, "", f)
		mine = (index(f, dir) == 1)
		next
	}
	!mine { next }
	/^#[[:space:]]*define[[:space:]]/ {
		line = $0
		sub(/^#[[:space:]]*define[[:space:]]+/, "", line)
		match(line, /^[A-Za-z_][A-Za-z0-9_]*/)
		n = substr(line, 1, RLENGTH)
		# Include guards are not API.
		if (n ~ /^__.*_h__$/)
			next
		print (substr(line, RLENGTH + 1, 1) == "(" ? "fmacro " : "macro ") n
		next
	}
	/^#/ { next }
	{ text = text " " $0 }
	END {
		# Walk the declarations, pulling struct bodies out whole: their ";" must not
		# end the statement.
		depth = 0; stmt = ""; body = ""
		for (i = 1; i <= length(text); i++) {
			c = substr(text, i, 1)
			if (c == "{") { depth++; if (depth == 1) { body = ""; stmt = stmt "{}"; continue } }
			if (c == "}") { depth--; if (depth == 0) continue }
			if (depth > 0) { body = body c; continue }
			if (c != ";") { stmt = stmt c; continue }
			emit(trim(stmt), body)
			stmt = ""; body = ""
		}
	}
	function emit(s, body,    parts, n, k, first, name, mem, m) {
		if (s == "")
			return
		if (s ~ /^typedef[[:space:]]/) {
			sub(/^typedef[[:space:]]+/, "", s)
			# Only the declarators after a struct body.
			if (index(s, "{}"))
				s = substr(s, index(s, "{}") + 2)
			n = split(s, parts, ",")
			for (k = 1; k <= n; k++) {
				name = declared(parts[k])
				if (name == "")
					continue
				print "typedef " name
				if (k == 1 && first == "")
					first = name
			}
			if (first != "" && body != "") {
				m = split(body, mem, ";")
				for (k = 1; k <= m; k++) {
					name = declared(trim(mem[k]))
					if (name != "")
						print "member " first "." name
				}
			}
			return
		}
		if (s ~ /\(/) {
			name = declared(substr(s, 1, index(s, "(") - 1))
			if (name != "")
				print "function " name
			return
		}
		n = split(s, parts, ",")
		for (k = 1; k <= n; k++) {
			name = declared(parts[k])
			if (name != "")
				print "object " name
		}
	}' "$tmp/pp" | sort -u
}

names "$theirs" >"$tmp/theirs" || exit 2
names "$ours" >"$tmp/ours" || exit 2

status=0

# 1. Everything pcsc-lite declares, we declare, as the same kind of thing.
comm -23 "$tmp/theirs" "$tmp/ours" >"$tmp/missing"
if [ -s "$tmp/missing" ]; then
	echo "Names pcsc-lite's headers ($theirs) declare and ours ($ours) do not:"
	sed 's/^/  /' "$tmp/missing"
	status=1
fi

# 2. Every macro, typedef and member of pcsc-lite's has an ABI_* entry in abi_list.h,
# so the ABI test compares its value, size or offset. Not comparable as numbers:
# PCSC_API (expands to nothing), functions and objects (abi_protos.c checks those).
grep '^[[:space:]]*ABI_[A-Z_]*(' "$abi_list" >"$tmp/list"
while read -r kind name; do
	case $kind in
	function | object) continue ;;
	esac
	[ "$name" = PCSC_API ] && continue
	case $kind in
	member)
		t=${name%%.*}
		m=${name#*.}
		grep -q "^[[:space:]]*ABI_[A-Z_]*($t, $m)" "$tmp/list" && continue
		;;
	*)
		grep -q "[(*& ]${name}[), (]" "$tmp/list" && continue
		;;
	esac
	echo "$kind $name" >>"$tmp/unlisted"
done <"$tmp/theirs"
if [ -s "$tmp/unlisted" ]; then
	echo "Names of pcsc-lite's with no ABI_* entry in $abi_list:"
	sed 's/^/  /' "$tmp/unlisted"
	status=1
fi

if [ $status -eq 0 ]; then
	echo "check_names: all $(wc -l <"$tmp/theirs" | tr -d ' ') pcsc-lite names" \
		"($theirs) are in our headers and in abi_list.h"
fi
exit $status
