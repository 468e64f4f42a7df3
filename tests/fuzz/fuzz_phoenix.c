/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a card sends on a Phoenix / Smartmouse line (the wiring
 * probe's echo, the ATR in either convention, parity-marked bytes as the UART gives them
 * (FF 00 c, FF FF), T=0 procedure bytes and T=1 blocks, PPS answers), through the whole
 * serial backend's character-level reader and the CCID slot layer above it. See
 * serial-fake.h for the input; mode byte: bit 0 Smartmouse, bit 1 no automatic echo,
 * bits 2-3 the detect option (none, cts, !dsr, cd), bit 4 the modem lines cannot be
 * read, bits 5-6 the lines' state, bit 7 T=1. */
#include "serial-fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const char *const opts[4] = { "none", "cts", "!dsr", "cd" };
	uint8_t mode = data[0];
	fz_reset(data + 1, size - 1, !(mode & 2),
	         (mode & 0x10) | ((mode >> 5) & 3) | ((mode & 0x40) ? 4 : 0));
	struct calais__sreader *s = fz_reader(NULL, mode & 1, opts[(mode >> 2) & 3]);
	if (s)
		fz_run(s, mode);
	return 0;
}
