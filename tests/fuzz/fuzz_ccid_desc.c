/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: arbitrary bytes as a CCID class descriptor, then the strategy. */
#include "ccid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct calais__ccid_desc d;
	if (calais__ccid_desc_parse(data, size, &d) != SCARD_S_SUCCESS)
		return 0;
	struct calais__ccid_strategy s;
	calais__ccid_strategy(&d, &s);
	if (s.slots < 1 || s.slots > 256 || s.max_apdu < 5)
		__builtin_trap();
	/* APDU-level readers never need the host's protocol work. */
	if ((s.level == CALAIS__CCID_SHORT_APDU || s.level == CALAIS__CCID_EXTENDED_APDU) &&
	    (s.host_pps || s.set_parameters || s.ifsd_request))
		__builtin_trap();
	return 0;
}
