# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the bench/*/report.py scripts share: the percentile, the ratio's format, and the
key=value fields of the guests' BENCH-* lines (bench/qemu, bench/fido)."""
import math
import re
import sys

KV = re.compile(r"(\w+)=(\S+)")


def pct(sorted_v, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_v:
        return float("nan")
    k = max(0, min(len(sorted_v) - 1, math.ceil(p / 100.0 * len(sorted_v)) - 1))
    return sorted_v[k]


def fratio(r):
    if r != r:
        return "–"
    if r >= 10:
        return "%.0f×" % r
    return "%.1f×" % r if r >= 0.95 else "%.2g×" % r


def fields(line, tag):
    """The key=value pairs after "TAG " in line, or None when the tag is not there."""
    i = line.find(tag + " ")
    return dict(KV.findall(line[i + len(tag):])) if i >= 0 else None


def ms(us):
    return "%.2f ms" % (float(us) / 1000.0)


def write_section(path, lines):
    """A part's markdown section: to path and to stdout."""
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    sys.stdout.write(text)
