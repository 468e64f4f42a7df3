/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: what a CCID reader sends on its interrupt-IN pipe (NotifySlotChange,
 * HardwareError, anything else), as the backend's interrupt thread parses it. The first
 * input byte is the reader's slot count (1 to 256), the rest one message of at most the
 * 64 bytes the backend reads. Each slot reported must be one the message covers. */
#include "ccid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t n_slots = (size_t)data[0] + 1;
	data++, size--;
	if (size > 64)
		size = 64;
	uint8_t msg[64];
	memcpy(msg, data, size); /* the backend's buffer: nothing past it is readable */
	uint8_t bits[256];
	memset(bits, 0xAA, sizeof(bits));
	size_t k = calais__ccid_intr_parse("fuzz", msg, size, n_slots, bits);
	if (k > n_slots || (k && (size < 2 || k > (size - 1) * 4)))
		__builtin_trap();
	for (size_t i = 0; i < k; i++)
		if (bits[i] > 3)
			__builtin_trap();
	for (size_t i = k; i < sizeof(bits); i++)
		if (bits[i] != 0xAA)
			__builtin_trap(); /* written past the slots it reported */
	return 0;
}
