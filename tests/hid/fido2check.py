# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the python-fido2 checks share: the skip (exit 77) when python-fido2 is missing, one
line per check ("ok  "/"FAIL" for meson's exitcode tests, or TAP after tap(): "ok N - ..."
for scripts/test's counting), and the exit status."""
import sys

try:
    import fido2  # noqa: F401
except ImportError as e:
    print("skipped: python-fido2 not available (%s)" % e)
    sys.exit(77)

failures = []
tap_count = None  # checks so far in TAP mode; None: "ok  "/"FAIL" lines


def tap():
    """TAP lines from now on ("ok N - name", "not ok N - name", "1..N" at the end)."""
    global tap_count
    tap_count = 0


def check(name, cond, detail=""):
    global tap_count
    if tap_count is None:
        print("%s %s%s" % ("ok  " if cond else "FAIL", name, (": " + detail) if detail else ""))
    else:
        tap_count += 1
        print("%s %d - %s%s" % ("ok" if cond else "not ok", tap_count, name,
                                (" # " + detail) if detail else ""), flush=True)
    if not cond:
        failures.append(name)


def finish():
    if tap_count is None:
        print("%d failure(s)" % len(failures))
    else:
        print("1..%d" % tap_count)
        print("# %d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


def u2f_register_authenticate(ctap1, where):
    """A U2F REGISTER then AUTHENTICATE through ctap1 (a fido2.ctap1.Ctap1), each signature
    verified by python-fido2 (the attestation with the certificate's key, the assertion
    with the registered key), a signature over other data refused, the counter moving, and
    check-only and unknown key handles answered as U2F says."""
    import os
    from fido2.ctap1 import ApduError
    from cryptography.exceptions import InvalidSignature as CryptoInvalid
    from fido2.attestation.base import InvalidSignature as FidoInvalid
    InvalidSignature = (CryptoInvalid, FidoInvalid)

    client, app = os.urandom(32), os.urandom(32)
    reg = ctap1.register(client, app)
    try:
        reg.verify(app, client)
        check(where + "U2F REGISTER: attestation signature verified", True)
    except InvalidSignature:
        check(where + "U2F REGISTER: attestation signature verified", False)
    try:
        reg.verify(app, os.urandom(32))
        check(where + "U2F REGISTER: signature over another challenge refused", False)
    except InvalidSignature:
        check(where + "U2F REGISTER: signature over another challenge refused", True)
    counters = []
    for _ in range(2):
        client = os.urandom(32)
        sig = ctap1.authenticate(client, app, reg.key_handle)
        try:
            sig.verify(app, client, reg.public_key)
            ok = sig.user_presence & 1 == 1
        except InvalidSignature:
            ok = False
        counters.append(sig.counter)
        check(where + "U2F AUTHENTICATE: signature verified with the registered key", ok)
    check(where + "U2F AUTHENTICATE: counter moves", counters[1] == counters[0] + 1,
          repr(counters))
    try:
        ctap1.authenticate(client, app, reg.key_handle, check_only=True)
        check(where + "U2F check-only of a known handle: 6985", False)
    except ApduError as e:
        check(where + "U2F check-only of a known handle: 6985", e.code == 0x6985, "%04X" % e.code)
    try:
        ctap1.authenticate(client, os.urandom(32), reg.key_handle)
        check(where + "U2F handle of another application: 6A80", False)
    except ApduError as e:
        check(where + "U2F handle of another application: 6A80", e.code == 0x6A80, "%04X" % e.code)
