/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the PPS answer check gets arbitrary card bytes after a request built
 * from a fixed T=1 ATR. It must give a code and sane parameters, never read too far. */
#include "iso7816/iso7816.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t atr[] = { 0x3B, 0xFA, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45, 0x4A,
		                       0x43, 0x4F, 0x50, 0x34, 0x31, 0x56, 0x32, 0x32, 0x31, 0x96 };
	struct calais__atr a;
	if (calais__atr_parse(atr, sizeof(atr), &a) != SCARD_S_SUCCESS)
		__builtin_trap();
	struct calais__pps_caps caps = { .clock_khz = 4000 };
	uint8_t req[4];
	size_t n;
	struct calais__pps_result r;
	calais__pps_request(&a, 1, &caps, req, &n, &r);
	if (calais__pps_check(req, n, data, size, &a, 4000, &r) == SCARD_S_SUCCESS &&
	    (!r.fi || !r.di || !r.etu_ns || r.protocol != 1))
		__builtin_trap();
	return 0;
}
