#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest side of bench/fido/run: tests/qemu/run boots its guest with this script as
# the program (/init has loaded hid, uhid and hid-generic, mounted sysfs and devtmpfs).
#
#   guest-bench.sh ROUNDS N WARMUP
#
# Starts the virtual authenticator (/bench/vauth-uhid: a FIDO key on /dev/uhid) and keeps
# it for the whole run; each round runs both sides of /bench/fido_bench once, one after the
# other, each its own process (odd rounds Calais first, even rounds the floor first). Per
# side and round and exchange, one line
#   BENCH-ROUND label=<side> op=<version|getinfo> n=.. median_us=..
# and over all rounds
#   BENCH-POOLED label=<side> op=.. n=.. median_us=.. p99_us=.. mean_us=..
# Exit status: the number of failed steps.
rounds=${1:-5}
n=${2:-500}
warmup=${3:-20}
B=/bench
fails=0
rm -f /tmp/*.us
mkfifo /tmp/vauth.ctl
"$B/vauth-uhid" 05 </tmp/vauth.ctl >/tmp/vauth.out &
vpid=$!
exec 3>/tmp/vauth.ctl # its stdin stays open until the end
i=0
while ! grep -q '^ready' /tmp/vauth.out 2>/dev/null && [ $i -lt 100 ]; do
	sleep 0.05
	i=$((i + 1))
done
if ! grep -q '^ready' /tmp/vauth.out; then
	echo "BENCH-ERROR vauth-uhid did not start: $(cat /tmp/vauth.out)"
	exit 1
fi

# nearest-rank percentiles of a file of samples (one a line)
stats() {
	sort -n "$1" | awk '
		function rank(p,   k) { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; return v[k] }
		{ v[NR] = $1; s += $1 }
		END { if (NR) printf "n=%d median_us=%.1f p99_us=%.1f mean_us=%.1f", NR, rank(50), rank(99), s / NR }'
}

side() {
	rm -f /tmp/round/*.us
	mkdir -p /tmp/round
	if "$B/fido_bench" -s "$1" -n "$n" -w "$warmup" -o /tmp/round; then
		for op in version getinfo; do
			echo "BENCH-ROUND label=$1 op=$op $(stats "/tmp/round/$1-$op.us")"
			cat "/tmp/round/$1-$op.us" >>"/tmp/$1-$op.us"
		done
	else
		fails=$((fails + 1))
	fi
}

r=1
while [ "$r" -le "$rounds" ]; do
	if [ $((r % 2)) = 1 ]; then
		side calais
		side floor
	else
		side floor
		side calais
	fi
	r=$((r + 1))
done
for s in calais floor; do
	for op in version getinfo; do
		[ -s "/tmp/$s-$op.us" ] && echo "BENCH-POOLED label=$s op=$op $(stats "/tmp/$s-$op.us")"
	done
done
echo quit >&3
exec 3>&-
wait "$vpid"
exit "$fails"
