# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the bench/*/report.py scripts share: the percentile and the ratio's format."""
import math


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
