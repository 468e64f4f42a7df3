/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the ATR parser, the length of an ATR read byte by byte, the protocol
 * choice and the decoder get arbitrary
 * bytes, as from a broken card or a hostile backend. They must return a code, never
 * read past the buffer, and keep their invariants. */
#include <string.h>

#include "calais/atr.h"
#include "iso7816/iso7816.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct calais__atr a;
	LONG rv = calais__atr_parse(data, size, &a);
	if (rv == SCARD_S_SUCCESS) {
		if (size < 2 || size > MAX_ATR_SIZE || !a.fi || !a.di || !a.protocols)
			__builtin_trap();
		if (a.hist_offset + a.hist_len > a.len || a.n_groups > CALAIS__ATR_MAX_GROUPS)
			__builtin_trap();
	} else if (!a.reason || !a.reason[0]) {
		__builtin_trap(); /* every rejection says why */
	}
	/* Reading an ATR byte by byte (direct UART readers) must agree with the parser. */
	size_t want = 2;
	for (size_t k = 1; k <= size && k <= MAX_ATR_SIZE + 1; k++) {
		want = calais__atr_expected(data, k);
		if (want <= k)
			break;
	}
	if (rv == SCARD_S_SUCCESS && data[0] == 0x3B && want != size &&
	    !(a.unexpected_tck && want + 1 == size))
		__builtin_trap();
	struct calais__atr_info ai;
	if (calais__atr_protocols(data, size, &ai) == SCARD_S_SUCCESS &&
	    (!ai.protocols || !(ai.protocols & ai.default_proto)))
		__builtin_trap();
	char text[512];
	calais_atr_describe(data, size, text, sizeof(text));
	if (memchr(text, '\0', sizeof(text)) == NULL)
		__builtin_trap();
	return 0;
}
