# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the python-fido2 checks share: the skip (exit 77) when python-fido2 is missing, one
line per check, and the exit status."""
import sys

try:
    import fido2  # noqa: F401
except ImportError as e:
    print("skipped: python-fido2 not available (%s)" % e)
    sys.exit(77)

failures = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", name, (": " + detail) if detail else ""))
    if not cond:
        failures.append(name)


def finish():
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)
