/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the reader list (a multi-string) the platform's PC/SC service hands
 * the passthrough backend. The input is the list as SCardListReaders wrote it, its
 * length the one the service reported; only those bytes are readable. Every name taken
 * must lie inside them, end there, fit a reader name and be taken once. */
#include <stdlib.h>

#include "calais-internal.h"
#include "../../backends/pcsc/pcsc-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1); /* exactly the bytes the service gave */
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	const char *names[64];
	size_t n = calais__pcsc_names(buf, size, names, 64);
	if (n > 64)
		__builtin_trap();
	for (size_t i = 0; i < n; i++) {
		if (names[i] < buf || names[i] >= buf + size)
			__builtin_trap();
		const char *nul = memchr(names[i], 0, (size_t)(buf + size - names[i]));
		if (!nul || nul == names[i] || nul - names[i] >= MAX_READERNAME)
			__builtin_trap();
		for (size_t j = 0; j < i; j++)
			if (strcmp(names[i], names[j]) == 0)
				__builtin_trap();
	}
	free(buf);
	return 0;
}
