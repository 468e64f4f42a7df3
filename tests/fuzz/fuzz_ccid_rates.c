/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: a CCID reader's GET_DATA_RATES answer, and the PPS choice made from
 * the list it gives. Input: the answer (up to the 256 bytes the backend reads) after a
 * length byte, then an ATR whose PPS request is built against that list. */
#include "ccid.h"
#include "iso7816/iso7816.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t len = data[0];
	data++, size--;
	if (len > size)
		len = size;
	uint8_t answer[256];
	memcpy(answer, data, len);
	uint32_t rates[64];
	size_t n = 0;
	LONG rv = calais__ccid_rates_parse("fuzz", answer, len, rates, 64, &n);
	if (rv != SCARD_S_SUCCESS && n)
		__builtin_trap();
	if (n > 64 || n > len / 4)
		__builtin_trap();
	for (size_t i = 0; i < n; i++)
		if (!rates[i])
			__builtin_trap();
	data += len, size -= len;
	struct calais__atr a;
	if (calais__atr_parse(data, size, &a) != SCARD_S_SUCCESS)
		return 0;
	struct calais__pps_caps caps = { .clock_khz = 4000, .max_rate_bps = 344086,
	                                 .rates_bps = n ? rates : NULL, .n_rates = n };
	struct calais__pps_result res;
	uint8_t req[4];
	size_t req_len = 0;
	uint8_t proto = (a.protocols & 2) ? 1 : 0;
	if (calais__pps_request(&a, proto, &caps, req, &req_len, &res) == SCARD_S_SUCCESS &&
	    req_len > sizeof(req))
		__builtin_trap();
	return 0;
}
