/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the core's ATR walker gets arbitrary bytes, as from a broken card
 * or a hostile backend. It must return a code, never read past the buffer. */
#include "calais-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct calais__atr_info ai;
	LONG rv = calais__atr_protocols(data, size, &ai);
	if (rv == SCARD_S_SUCCESS) {
		/* Invariants the protocol choice relies on. */
		if (!ai.protocols || !(ai.protocols & ai.default_proto))
			__builtin_trap();
		if (size < 2 || size > MAX_ATR_SIZE)
			__builtin_trap();
	}
	return 0;
}
