#!/bin/busybox sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# /init of the test guest (tests/qemu/run builds the initramfs): busybox, the USB host
# controller and HID modules, systemd-udevd, and one test program. It mounts what a libusb
# program needs (sysfs, devtmpfs for /dev/bus/usb, /run/udev), waits for the CCID
# interfaces, runs the program once and prints its exit status on the last line:
#   GUEST-EXIT <status> <token>
# (the token, from /etc/guest.token, tells it from anything the program prints), then
# powers the machine off. Lines meant for humans start with "# guest:".
# Kernel command line: calais.readers=N (CCID interfaces to wait for).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /dev/pts /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
# only emergencies on the console: it carries the test program's output
echo 1 >/proc/sys/kernel/printk
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "# guest: $*"; }
say "init at $(up)s, kernel $(uname -r)"

want=2
for a in $(cat /proc/cmdline); do
	case "$a" in
	calais.readers=*) want=${a#calais.readers=} ;;
	esac
done

for m in $(cat /lib/modules/load.order); do
	insmod "/lib/modules/$m" || say "insmod $m failed"
done

# libusb (Debian's, built with udev support) hears of hot-plugged devices only from
# udevd's netlink broadcasts, so udevd runs; without rules it still rebroadcasts.
if [ -x /lib/systemd/systemd-udevd ]; then
	mkdir -p /run/udev /etc/udev/rules.d
	/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/dev/null || say "systemd-udevd failed"
else
	say "no systemd-udevd: libusb hotplug events will not come"
fi

n=0
i=0
while [ $i -lt 200 ]; do
	n=$(cat /sys/bus/usb/devices/*/bInterfaceClass 2>/dev/null | grep -c '^0b$')
	[ "$n" -ge "$want" ] && break
	sleep 0.05
	i=$((i + 1))
done
# coldplug: let udevd record the devices that came before it (as on a booted system)
udevadm trigger --subsystem-match=usb --action=add 2>/dev/null
udevadm settle -t 5 2>/dev/null
say "$n CCID interface(s) at $(up)s"
for d in /sys/bus/usb/devices/[0-9]*-*; do
	case "$d" in *:*) continue ;; esac
	[ -f "$d/idVendor" ] || continue
	say "usb $(basename "$d") $(cat "$d/idVendor"):$(cat "$d/idProduct") /dev/bus/usb/$(printf %03d "$(cat "$d/busnum")")/$(printf %03d "$(cat "$d/devnum")") '$(cat "$d/product" 2>/dev/null)' serial '$(cat "$d/serial" 2>/dev/null)'"
done

# the program and its arguments (one a line), and the environment the host passed on
[ -f /etc/guest.env ] && . /etc/guest.env
prog=$(cat /etc/guest.prog)
set --
while IFS= read -r a; do
	set -- "$@" "$a"
done </etc/guest.args
say "running $prog${*:+ $*} at $(up)s"
cd /tmp
"$prog" "$@"
rc=$?
say "$prog exited with status $rc at $(up)s"
if [ "$rc" != 0 ]; then
	dmesg | grep -i -E 'error|fail|warn|segfault|trap|timeout|reset|disconnect|unable' | tail -30 |
		sed 's/^/# guest dmesg: /'
fi
echo "GUEST-EXIT $rc $(cat /etc/guest.token)"
sync
poweroff -f
