#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Boots the test guest under QEMU with two usb-ccid readers and drives it.

  reader EMUL: usb-ccid (id ccid0) + ccid-card-emulated (libcacard CAC card, NSS certs)
  reader PASS: usb-ccid (id ccid1) + ccid-card-passthru <-> vscard.py's scripted card

QEMU starts paused (-S). This script connects QMP and the VSCard socket, inserts the
scripted card (ATR 3B 08 "TESTCARD"), then lets the guest run. It copies the guest's
serial console to stdout line by line (its own lines start with "# ") and reacts to
markers that the guest program prints:
  SLOTWATCH-READY        0.5 s later the scripted card is pulled (VSC_CardRemove); 1 s
                         later it is inserted again with ATR 3B 88 80 01 "TESTCRD1" 7B
  HOTPLUG-READY          0.5 s later reader EMUL is unplugged (QMP device_del ccid0,
                         until DEVICE_DELETED), 1 s later plugged again (device_add
                         usb-ccid serial=EMUL, then ccid-card-emulated)
  HOST-CARD-REMOVE       the scripted card is pulled at once
  HOST-CARD-INSERT [ATR] the scripted card is inserted at once (ATR in hex; default
                         3B 08 "TESTCARD")
The guest's /init ends with the line "GUEST-EXIT <n> <token>" (the token is --token,
which only /init knows): the exit status of this script is n.
Otherwise: 124 when the guest has not finished within --timeout seconds (QEMU is
killed), 99 when QEMU could not be set up or stopped without GUEST-EXIT.
Only the standard library is used.
"""
import argparse
import ctypes
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vscard import VSCardClient, ATR_T0, ATR_T0_T1, connect_unix  # noqa: E402

T0 = time.monotonic()
OUT_LOCK = threading.Lock()
EXIT_TIMEOUT = 124
EXIT_ERROR = 99


def emit(line):
    with OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg):
    emit("# [%6.2fs] %s" % (time.monotonic() - T0, msg))


class QMP:
    def __init__(self, path, timeout=10):
        self.sock = connect_unix(path, timeout)
        self.f = self.sock.makefile("rwb", buffering=0)
        self.responses = queue.Queue()
        self.events = []
        self.cond = threading.Condition()
        self.wlock = threading.Lock()
        json.loads(self.f.readline())  # greeting
        threading.Thread(target=self._reader, daemon=True).start()
        self.cmd("qmp_capabilities")

    def _reader(self):
        try:
            for line in self.f:
                msg = json.loads(line)
                if "event" in msg:
                    with self.cond:
                        self.events.append(msg)
                        self.cond.notify_all()
                    log("qmp event %s %s" % (msg["event"], json.dumps(msg.get("data", {}))))
                else:
                    self.responses.put(msg)
        except (OSError, ValueError):
            pass

    def cmd(self, name, **args):
        m = {"execute": name}
        if args:
            m["arguments"] = args
        with self.wlock:  # one command at a time: answers come in order
            self.f.write((json.dumps(m) + "\n").encode())
            r = self.responses.get(timeout=30)
        if "error" in r:
            raise RuntimeError("%s: %s" % (name, r["error"]))
        return r.get("return")

    def wait_event(self, name, pred=lambda e: True, timeout=10, since=0):
        with self.cond:
            return self.cond.wait_for(
                lambda: any(e["event"] == name and pred(e) for e in self.events[since:]), timeout)


def set_pdeathsig():
    """QEMU dies with this script (prctl PR_SET_PDEATHSIG, SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--nssdb", required=True)
    ap.add_argument("--workdir", required=True, help="for the QMP and VSCard sockets (short path)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--memory", default="512")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--kappend", default="")
    ap.add_argument("--token", default="",
                    help="the word /init prints after GUEST-EXIT <n> (so the program cannot fake it)")
    ap.add_argument("--pcap", help="directory for usb-ccid's pcap files (Wireshark decodes CCID)")
    a = ap.parse_args()

    deadline = T0 + a.timeout
    qmp_path = os.path.join(a.workdir, "qmp.sock")
    vsc_path = os.path.join(a.workdir, "vscard.sock")
    certs = dict(backend="certificates", db="sql:" + a.nssdb, cert1="id-cert",
                 cert2="signing-cert", cert3="encryption-cert")
    pcap0 = pcap1 = ""
    if a.pcap:
        os.makedirs(a.pcap, exist_ok=True)
        pcap0 = ",pcap=" + os.path.join(a.pcap, "emul.pcap")
        pcap1 = ",pcap=" + os.path.join(a.pcap, "pass.pcap")
    append = "console=ttyS0 panic=-1 quiet calais.readers=2 " + a.kappend
    cmd = [a.qemu, "-M", "q35", "-m", a.memory, "-smp", a.smp, "-nodefaults",
           "-display", "none", "-no-reboot", "-cpu", "max", "-accel", a.accel,
           "-kernel", a.kernel, "-initrd", a.initrd, "-append", append.strip(),
           "-serial", "stdio", "-qmp", "unix:%s,server=on,wait=off" % qmp_path, "-S",
           "-device", "qemu-xhci,id=xhci",
           "-device", "usb-ccid,id=ccid0,bus=xhci.0,serial=EMUL" + pcap0,
           "-device", "ccid-card-emulated,id=card0,bus=ccid0.0," +
           ",".join("%s=%s" % kv for kv in certs.items()),
           "-chardev", "socket,id=vsc,path=%s,server=on,wait=off" % vsc_path,
           "-device", "usb-ccid,id=ccid1,bus=xhci.0,serial=PASS" + pcap1,
           "-device", "ccid-card-passthru,id=card1,bus=ccid1.0,chardev=vsc"]
    log("qemu: " + " ".join(cmd))
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=set_pdeathsig)
    except OSError as e:
        log("QEMU-ERROR: cannot start %s: %s" % (a.qemu, e))
        return EXIT_ERROR

    def stop(signum, frame):
        log("QEMU-ERROR: signal %d: killing QEMU" % signum)
        proc.kill()
        proc.wait()
        sys.exit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)

    def pump_stderr():
        for raw in proc.stderr:
            log("qemu stderr: " + raw.decode(errors="replace").rstrip())
    threading.Thread(target=pump_stderr, daemon=True).start()

    # the watchdog: QEMU is killed at the deadline, whatever the guest is doing
    timed_out = threading.Event()

    def watchdog():
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                timed_out.set()
                proc.kill()
                return
            time.sleep(0.2)
    threading.Thread(target=watchdog, daemon=True).start()

    try:
        qmp = QMP(qmp_path)
        vsc = VSCardClient(vsc_path, log=log)
        vsc.init()
        vsc.reader_add()
        vsc.insert(ATR_T0)
        qmp.cmd("cont")
        log("guest started (accel %s)" % a.accel)
    except Exception as e:
        log("QEMU-ERROR: setup failed: %r" % e)
        proc.kill()
        proc.wait()
        return EXIT_ERROR

    errors = []

    def in_thread(fn, *args):
        def run():
            try:
                fn(*args)
            except Exception as e:  # reported; the guest's own checks will fail
                log("host action failed: %r" % e)
                errors.append(repr(e))
        threading.Thread(target=run, daemon=True).start()

    def slot_events():
        time.sleep(0.5)
        log("host: pulling the scripted card (reader PASS)")
        vsc.remove()
        time.sleep(1.0)
        log("host: inserting it again, ATR %s" % ATR_T0_T1.hex(" "))
        vsc.insert(ATR_T0_T1)

    def hotplug():
        time.sleep(0.5)
        since = len(qmp.events)
        log("host: device_del ccid0 (reader EMUL)")
        qmp.cmd("device_del", id="ccid0")
        if not qmp.wait_event("DEVICE_DELETED",
                              lambda e: e.get("data", {}).get("device") == "ccid0",
                              timeout=10, since=since):
            raise RuntimeError("no DEVICE_DELETED for ccid0")
        time.sleep(1.0)
        log("host: device_add usb-ccid id=ccid0 serial=EMUL + ccid-card-emulated")
        qmp.cmd("device_add", driver="usb-ccid", id="ccid0", bus="xhci.0", serial="EMUL")
        qmp.cmd("device_add", driver="ccid-card-emulated", id="card0", bus="ccid0.0", **certs)
        log("host: reader EMUL and its card are back")

    def card_insert(hexatr):
        atr = bytes.fromhex(hexatr) if hexatr else ATR_T0
        log("host: inserting the scripted card, ATR %s" % atr.hex(" "))
        vsc.insert(atr)

    exit_re = re.compile(r"GUEST-EXIT (\d+)%s$" % ((" " + re.escape(a.token)) if a.token else ""))
    insert_re = re.compile(r"HOST-CARD-INSERT(?: ([0-9A-Fa-f]{2}(?: ?[0-9A-Fa-f]{2})*))?")
    status = None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
        emit(line)
        # markers are searched anywhere in the line: the program's stderr (log lines)
        # may share the console line with them
        if "SLOTWATCH-READY" in line:
            in_thread(slot_events)
        if "HOTPLUG-READY" in line:
            in_thread(hotplug)
        if "HOST-CARD-REMOVE" in line:
            in_thread(vsc.remove)
        m = insert_re.search(line)
        if m:
            in_thread(card_insert, (m.group(1) or "").replace(" ", ""))
        # searched, not matched: a last line of the program without a newline may come
        # first; the token tells /init's line from anything the program prints
        m = exit_re.search(line) if a.token else exit_re.match(line)
        if m:
            status = int(m.group(1))
            vsc.running = False  # QEMU closes the socket as it powers off
            break
    if status is not None:
        def drain():  # what the kernel still prints while powering off
            for rest in proc.stdout:
                emit(rest.decode(errors="replace").rstrip("\r\n"))
        threading.Thread(target=drain, daemon=True).start()
        try:
            proc.wait(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
    else:
        proc.wait()
    proc.wait()
    vsc.close()
    elapsed = time.monotonic() - T0
    if status is None:
        if timed_out.is_set():
            log("QEMU-TIMEOUT: the guest did not finish within %d s: QEMU killed" % a.timeout)
            return EXIT_TIMEOUT
        log("QEMU-ERROR: QEMU stopped (status %s) before the guest printed GUEST-EXIT"
            % proc.returncode)
        return EXIT_ERROR
    log("guest exit status %d after %.1f s (%d APDUs to the scripted card%s)"
        % (status, elapsed, vsc.apdus, ", host action errors: %s" % errors if errors else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
