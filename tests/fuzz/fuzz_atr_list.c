/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the smartcard_list.txt reader (lib/iso7816/atr-list.c). Input: an ATR
 * length byte (1 to 33), the ATR, an answer buffer size byte, then the file's text, read
 * through a memory stream. The description must fit the buffer, NUL-terminated. */
#include <stdio.h>

#include "calais-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t len = (size_t)(data[0] % MAX_ATR_SIZE) + 1;
	if (size < 2 + len)
		return 0;
	const uint8_t *atr = data + 1;
	size_t cap = (size_t)data[1 + len] + 1;
	data += 2 + len, size -= 2 + len;
	FILE *f = fmemopen(size ? (void *)data : (void *)"", size, "r");
	if (!f)
		return 0;
	char buf[257];
	memset(buf, 0x5A, sizeof(buf));
	LONG rv = calais__atr_lookup_file(f, atr, len, buf, cap);
	fclose(f);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_UNKNOWN_CARD)
		__builtin_trap();
	if (!memchr(buf, 0, cap) || buf[cap] != 0x5A)
		__builtin_trap(); /* unterminated, or written past cap */
	return 0;
}
