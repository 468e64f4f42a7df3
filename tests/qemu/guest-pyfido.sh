#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest program of the python-fido2 test (tests/qemu/run runs it in the guest, under
# busybox sh): starts the virtual authenticator (tests/hid/vauth-uhid) as a USB FIDO key on
# /dev/uhid, waits for the hidraw node the kernel makes for it, runs
# tests/hid/check-fido2-guest.py (python-fido2 over pyscard over Calais' libpcsclite.so.1,
# then python-fido2's CTAPHID client) and exits with its status. Usage:
#   guest-pyfido.sh VAUTH-UHID CALAIS-LIBDIR CHECK-SCRIPT
# CALAIS-LIBDIR holds Calais' libpcsclite.so.1 (first on LD_LIBRARY_PATH: pyscard dlopens
# "libpcsclite.so.1"). Prints TAP lines; a failure of this launcher is a "not ok" line.
vauth=$1 libdir=$2 script=$3
n=0
fail() {
	echo "not ok $((n + 1)) - $*"
	echo "1..$((n + 1))"
	exit 1
}
[ $# -eq 3 ] || fail "usage: guest-pyfido.sh VAUTH-UHID CALAIS-LIBDIR CHECK-SCRIPT"

# vauth-uhid reads commands on stdin and quits at its end: a fifo held open by fd 3
mkfifo /tmp/vauth.ctl || fail "mkfifo failed"
"$vauth" 05 </tmp/vauth.ctl >/tmp/vauth.out 2>/tmp/vauth.err &
vpid=$!
exec 3>/tmp/vauth.ctl
stop_vauth() {
	echo quit >&3 2>/dev/null
	exec 3>&-
	i=0
	while kill -0 "$vpid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -9 "$vpid" 2>/dev/null
}

# "ready" within 5 s, then hid-generic's hidraw node within 5 s
i=0
while ! grep -qx ready /tmp/vauth.out 2>/dev/null; do
	[ $i -lt 100 ] || { sed 's/^/# vauth-uhid: /' /tmp/vauth.err; stop_vauth; fail "$vauth did not say ready within 5 s"; }
	sleep 0.05
	i=$((i + 1))
done
node=
i=0
while [ -z "$node" ]; do
	for u in /sys/class/hidraw/*/device/uevent; do
		grep -q '^HID_NAME=Calais vauth' "$u" 2>/dev/null && node=/dev/$(basename "$(dirname "$(dirname "$u")")")
	done
	[ -n "$node" ] && [ -e "$node" ] && break
	node=
	[ $i -lt 100 ] || { stop_vauth; fail "no hidraw node for the virtual authenticator within 5 s"; }
	sleep 0.05
	i=$((i + 1))
done
n=$((n + 1))
echo "ok $n - $vauth on /dev/uhid, hid-generic bound it: $node"

# Numbering goes on after the launcher's own line: the script's "ok N" restarts at 1, so it
# is shifted by n (TAP consumers count the lines; the numbers stay unique).
export CALAIS_BACKENDS="${CALAIS_BACKENDS:-hid}" LD_LIBRARY_PATH="$libdir" PYTHONDONTWRITEBYTECODE=1
timeout 120 python3 "$script" "$libdir" >/tmp/check.out 2>/tmp/check.err
rc=$?
stop_vauth
awk -v n=$n '
	/^ok [0-9]+ / { $2 = $2 + n; print; next }
	/^not ok [0-9]+ / { $3 = $3 + n; print; next }
	/^1\.\.[0-9]+$/ { sub(/^1\.\./, ""); print "1.." ($0 + n); next }
	{ print "# " $0 }' /tmp/check.out
sed 's/^/# stderr: /' /tmp/check.err | tail -40
case $rc in
0) ;;
77) echo "not ok $((n + 1)) - python-fido2 or pyscard is missing in the guest (the script skipped)"; rc=1 ;;
143 | 124) echo "not ok $((n + 1)) - $script did not finish within 120 s"; rc=1 ;;
esac
exit $rc
