/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a GemPC Twin or Pinpad sends on its serial line (echoes,
 * NAKs, card movement bytes, time extensions, noise, answer frames), through the whole
 * serial backend and the CCID slot layer above it. See serial-fake.h for the input;
 * mode byte: bit 0 Pinpad, bit 1 no automatic echo (the input gives it), bit 7 T=1. */
#include "serial-fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	fz_reset(data + 1, size - 1, !(mode & 2), 0);
	struct calais__sreader *s = fz_reader(&models[mode & 1], false, NULL);
	if (s)
		fz_run(s, mode);
	return 0;
}
