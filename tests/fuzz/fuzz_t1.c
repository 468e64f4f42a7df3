/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the T=1 receive path. The input is a sequence of card blocks, each
 * prefixed by a length byte; the engine sends a chained command and takes whatever
 * comes back. It must end with a code, never loop for ever or read too far. */
#include <string.h>

#include "iso7816/iso7816.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct feed {
	const uint8_t *p;
	size_t left;
	unsigned calls;
};

static LONG feed_xfer(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
                      uint32_t timeout_ms)
{
	struct feed *f = user;
	(void)blk, (void)n, (void)timeout_ms;
	if (++f->calls > 10000)
		__builtin_trap(); /* the engine must give up long before */
	if (!f->left || f->calls > 1000)
		return SCARD_E_TIMEOUT; /* a card that falls silent, however long the input */
	size_t len = f->p[0];
	f->p++, f->left--;
	if (len > f->left)
		len = f->left;
	if (len > *rx_len)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(rx, f->p, len);
	*rx_len = len;
	f->p += len, f->left -= len;
	return SCARD_S_SUCCESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct feed f = { data, size, 0 };
	struct calais__t1 t;
	memset(&t, 0, sizeof(t));
	calais__t1_init(&t, NULL);
	t.user = &f;
	t.xfer = feed_xfer;
	t.bwt_ms = 1;
	t.crc = size && (data[0] & 1);
	if (size && (data[0] & 2))
		t.ifsc = 0xFF; /* a reserved IFSC left by a rejected ATR: must stay bounded */
	static uint8_t cmd[300], resp[70000];
	size_t len = sizeof(resp);
	LONG rv = calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len);
	if (rv == SCARD_S_SUCCESS && len > sizeof(resp))
		__builtin_trap();
	return 0;
}
