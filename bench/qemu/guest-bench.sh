#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest side of bench/qemu/run: tests/qemu/run boots its guest with this script as
# the program (/init has mounted sysfs, devtmpfs and /run, and started systemd-udevd).
#
#   guest-bench.sh ROUNDS N WARMUP
#
# Each round runs both sides once, one after the other, never at the same time, so only
# one of them holds the reader's USB interface: Calais (ccid_bench_calais: the CCID
# backend in process, on libusb) and pcsc-lite (pcscd started for the round with
# libccid, ccid_bench_pcsclite talking to it; pcscd is stopped and gone before the
# next step). Odd rounds start with Calais, even rounds with pcscd. Each side does
# WARMUP untimed and N timed SELECTs on reader (PASS); its round trips go to
# /tmp/<side>.us. Output: the BENCH-ROUND lines of ccid_bench, then one
#   BENCH-POOLED label=<side> n=.. median_us=.. p99_us=.. mean_us=..
# per side over all its rounds. Exit status: the number of failed steps.
rounds=${1:-5}
n=${2:-500}
warmup=${3:-20}
B=/bench
fails=0
rm -f /tmp/calais.us /tmp/pcscd.us
# pcscd reads its serial readers' configuration here (none) and puts its socket in /run
mkdir -p /etc/reader.conf.d /run/pcscd

echo "BENCH-INFO $(/usr/sbin/pcscd -v 2>&1 | head -n 1)"

side_calais() {
	"$B/ccid_bench_calais" -l calais -n "$n" -w "$warmup" -o /tmp/calais.us || fails=$((fails + 1))
}

side_pcscd() {
	# -f: in the foreground (a child of this shell), logging errors to stdout
	/usr/sbin/pcscd -f -e >/tmp/pcscd.log 2>&1 &
	pid=$!
	if ! "$B/ccid_bench_pcsclite" -l pcscd -n "$n" -w "$warmup" -o /tmp/pcscd.us; then
		fails=$((fails + 1))
		sed 's/^/# pcscd: /' /tmp/pcscd.log | tail -n 20
	fi
	# stop pcscd and wait until it is gone: libccid releases the interface as it exits
	kill -TERM "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "# guest: pcscd did not stop within 10 s: killed"
		kill -KILL "$pid"
		fails=$((fails + 1))
	fi
	wait "$pid" 2>/dev/null
	rm -f /run/pcscd/*
}

r=1
while [ "$r" -le "$rounds" ]; do
	if [ $((r % 2)) = 1 ]; then
		side_calais
		side_pcscd
	else
		side_pcscd
		side_calais
	fi
	r=$((r + 1))
done

# nearest-rank percentiles over all rounds, as ccid_bench computes them for one
for side in calais pcscd; do
	[ -s "/tmp/$side.us" ] || continue
	sort -n "/tmp/$side.us" | awk -v side="$side" '
		function rank(p,   k) { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; return v[k] }
		{ v[NR] = $1; s += $1 }
		END { printf "BENCH-POOLED label=%s n=%d median_us=%d p99_us=%d mean_us=%.0f\n",
		      side, NR, rank(50), rank(99), s / NR }'
done
exit "$fails"
