#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Unmodified python-fido2 in the QEMU guest (tests/qemu/guest-pyfido.sh runs it, with the
virtual authenticator tests/hid/vauth-uhid a USB FIDO key on /dev/uhid): its PC/SC client,
fido2.pcsc.CtapPcscDevice, over pyscard over Calais' libpcsclite.so.1 (hid backend on
hidapi's hidraw backend): the [FIDO] reader listed, getInfo, U2F VERSION, REGISTER and
AUTHENTICATE with both signatures verified by python-fido2; then python-fido2's own CTAPHID
client (fido2.hid on /dev/hidraw*) against the same key, validating the authenticator on the
kernel's HID stack. TAP output. Usage: check-fido2-guest.py CALAIS-LIBDIR (the directory
Calais' libpcsclite.so.1 must be mapped from)."""
import os
import sys

import fido2check
from fido2check import check, finish, u2f_register_authenticate  # first: it skips without python-fido2

fido2check.tap()
LIBDIR = os.path.realpath(sys.argv[1]) if len(sys.argv) > 1 else None


def mapped(part):
    """The paths of the files this process mapped whose name holds part."""
    with open("/proc/self/maps") as f:
        return sorted({line.split(None, 5)[5].strip() for line in f
                       if len(line.split(None, 5)) == 6 and part in line})


def is_calais(path):
    """Whether the PC/SC library at path is Calais: its pcsc_stringify_error() of the code
    CALAIS__SELF_MARK (lib/calais-internal.h) starts with "Calais"; pcsc-lite's reads
    "Unknown error"."""
    import ctypes
    f = ctypes.CDLL(path).pcsc_stringify_error
    f.restype = ctypes.c_char_p
    f.argtypes = [ctypes.c_long]
    return f(0x43414C53).startswith(b"Calais")


def step(name, fn):
    """fn(), or a failed check named name with the exception."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- every failure is one "not ok" line
        check(name, False, "%s: %s" % (type(e).__name__, e))
        return None


def pcsc():
    from smartcard.System import readers
    from fido2.ctap1 import Ctap1
    from fido2.ctap2 import Ctap2
    from fido2.pcsc import CtapPcscDevice

    try:  # which library pyscard loaded is checked even when it cannot list readers
        names, err = [str(r) for r in readers()], ""
    except Exception as e:  # noqa: BLE001
        names, err = [], "%s: %s" % (type(e).__name__, e)
    libs = mapped("libpcsclite")
    check("pyscard mapped one libpcsclite.so.1, from %s (%s)" % (LIBDIR, ", ".join(libs) or "none"),
          LIBDIR is not None and len(libs) == 1 and os.path.dirname(libs[0]) == LIBDIR)
    check("it is Calais: pcsc_stringify_error(self mark) says so", len(libs) == 1 and
          is_calais(libs[0]))
    fido = [n for n in names if "[FIDO]" in n]
    check("pyscard lists one [FIDO] reader", len(fido) == 1, err or repr(names))
    if not fido:
        return
    devs = list(CtapPcscDevice.list_devices(fido[0]))
    check("CtapPcscDevice.list_devices() opens it", len(devs) == 1, fido[0])
    if not devs:
        return
    dev = devs[0]
    info = Ctap2(dev).get_info()
    check("PC/SC: CTAP2 getInfo, versions hold FIDO_2_0", "FIDO_2_0" in info.versions and
          len(info.aaguid) == 16, repr(info.versions))
    ctap1 = Ctap1(dev)
    check("PC/SC: U2F VERSION", ctap1.get_version() == "U2F_V2")
    u2f_register_authenticate(ctap1, "PC/SC: ")
    dev.close()


def ctaphid():
    from fido2.ctap1 import Ctap1
    from fido2.ctap2 import Ctap2
    from fido2.hid import CAPABILITY, CtapHidDevice

    devs = list(CtapHidDevice.list_devices())
    ours = [d for d in devs if (d.descriptor.vid, d.descriptor.pid) == (0x1209, 0xCA15)]
    check("CTAPHID: fido2.hid lists the key on hidraw",
          len(ours) == 1, repr([d.descriptor.path for d in devs]))
    if not ours:
        return
    dev = ours[0]
    check("CTAPHID: INIT, version 2, device 1.2.3, WINK|CBOR",
          dev.version == 2 and dev.device_version == (1, 2, 3) and
          dev.capabilities == CAPABILITY.WINK | CAPABILITY.CBOR,
          "%s %r %r" % (dev.descriptor.path, dev.device_version, dev.capabilities))
    msg = bytes((i * 7) & 0xFF for i in range(1000))
    check("CTAPHID: PING of 1000 bytes", dev.ping(msg) == msg)
    info = Ctap2(dev).get_info()
    check("CTAPHID: CTAP2 getInfo, versions hold FIDO_2_0", "FIDO_2_0" in info.versions,
          repr(info.versions))
    ctap1 = Ctap1(dev)
    check("CTAPHID: U2F VERSION", ctap1.get_version() == "U2F_V2")
    u2f_register_authenticate(ctap1, "CTAPHID: ")
    dev.close()


step("python-fido2 over pyscard over Calais", pcsc)
step("python-fido2's CTAPHID client on hidraw", ctaphid)
finish()
