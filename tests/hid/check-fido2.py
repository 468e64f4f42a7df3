#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The virtual authenticator (tests/hid/vauth.c, run as vauth-pipe) against python-fido2's
CTAPHID client (fido2.hid.CtapHidDevice over a connection object on the pipe): channel
allocation with python-fido2's own random nonce, PING, WINK, U2F VERSION, REGISTER and
AUTHENTICATE through CTAPHID_MSG (real P-256 keys, signatures verified), CTAP2 getInfo, keepalives seen by the client, a device error,
and a cancel answered with KEEPALIVE_CANCEL. Exit 77 (skipped) without python-fido2.
Usage: check-fido2.py path/to/vauth-pipe"""
import select
import subprocess
import sys
import threading

from fido2check import check, finish, u2f_register_authenticate  # first: it skips without python-fido2
from fido2.ctap import CtapError, STATUS
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2
from fido2.hid import CAPABILITY, CTAPHID, CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

VAUTH = sys.argv[1]


class PipeConnection(CtapHidConnection):
    """64-byte reports to and from a vauth-pipe child; every read bounded (5 s)."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([VAUTH] + list(args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def write_packet(self, data):
        assert len(data) == 64, len(data)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_packet(self):
        out = b""
        while len(out) < 64:
            ready, _, _ = select.select([self.proc.stdout], [], [], 5)
            if not ready:
                raise TimeoutError("no report from vauth-pipe within 5 s")
            chunk = self.proc.stdout.read1(64 - len(out))
            if not chunk:
                raise EOFError("vauth-pipe ended")
            out += chunk
        return out

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(5)


def device(*args):
    return CtapHidDevice(HidDescriptor("vauth", 0x1050, 0x0407, 64, 64),
                         PipeConnection(*args))


def main():
    dev = device("05")
    check("INIT: channel allocated, nonce echoed", dev._channel_id not in (0, 0xFFFFFFFF))
    check("INIT: CTAPHID version 2, device 1.2.3", dev.version == 2 and
          dev.device_version == (1, 2, 3))
    check("INIT: capabilities WINK|CBOR", dev.capabilities == CAPABILITY.WINK | CAPABILITY.CBOR)
    msg = bytes((i * 7) & 0xFF for i in range(1000))
    check("PING of 1000 bytes", dev.ping(msg) == msg)
    dev.wink()
    check("WINK", True)
    ctap1 = Ctap1(dev)
    check("U2F VERSION", ctap1.get_version() == "U2F_V2")
    u2f_register_authenticate(ctap1, "")
    info = Ctap2(dev).get_info()
    check("CTAP2 getInfo", info.versions == ["FIDO_2_0"] and len(info.aaguid) == 16,
          repr(info.versions))
    dev.close()

    dev = device("05", "3")
    seen = []
    resp = dev.call(CTAPHID.CBOR, b"\x01\xa0", on_keepalive=seen.append)
    check("CBOR after keepalives", resp == b"\x00\x01\xa0", resp.hex())
    check("keepalive status seen", seen == [STATUS.UPNEEDED], repr(seen))
    dev.close()

    dev = device("05", "0", "error=7f")
    try:
        dev.call(CTAPHID.CBOR, b"\x04")
        check("ERROR 7F raised", False)
    except CtapError as e:
        check("ERROR 7F raised", e.code == CtapError.ERR.OTHER, repr(e.code))
    dev.close()

    dev = device("05", "0", "keepalive-forever")
    event = threading.Event()
    timer = threading.Timer(0.3, event.set)
    timer.start()
    resp = dev.call(CTAPHID.CBOR, b"\x01\xa0", event=event)
    check("cancel answered with KEEPALIVE_CANCEL", resp == b"\x2d", resp.hex())
    dev.close()

    finish()


main()
