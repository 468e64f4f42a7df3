/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Calais' FIDO reader as a PC/SC card for a client in another process: the hid backend
 * runs on the HID simulator (a virtual authenticator behind the HID seam), and APDUs read
 * from stdin go through SCardTransmit() to the FIDO reader's card. For check-fido2-pcsc.py
 * (python-fido2's CtapPcscDevice). Framing on the pipe: a request is a 2-byte big-endian
 * length and an APDU (length 0: the ATR is asked); the answer is the 4-byte big-endian
 * PC/SC result, a 2-byte length and the bytes. Usage:
 *   fido-pcsc-bridge [caps-hex] [keepalives] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <winscard.h>
#include <calais/calais.h>

#include "hidsim.h"

static int read_all(uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = read(0, p, n);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int answer(LONG rv, const uint8_t *data, size_t n)
{
	uint8_t hdr[6] = { (uint8_t)((uint32_t)rv >> 24), (uint8_t)((uint32_t)rv >> 16),
	                   (uint8_t)((uint32_t)rv >> 8), (uint8_t)rv, (uint8_t)(n >> 8), (uint8_t)n };
	if (fwrite(hdr, 1, sizeof(hdr), stdout) != sizeof(hdr) ||
	    fwrite(data, 1, n, stdout) != n || fflush(stdout) != 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	hidsim_install();
	struct hidsim_cfg k = { .path = "/dev/hidraw0", .vid = 0x1050, .pid = 0x0407,
	                        .serial = "42", .manufacturer = "Yubico", .product = "YubiKey",
	                        .caps = argc > 1 ? (uint8_t)strtoul(argv[1], NULL, 16) : 0x05 };
	hidsim_dev *d = hidsim_add(&k);
	static struct vauth real; /* real U2F keys and signatures (vauth-u2f.c) */
	vauth_init(&real, 0);
	vauth_use_u2f(&real);
	hidsim_u2f(d, real.u2f, real.u2f_ctx);
	hidsim_cbor_keepalives(d, argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 0);
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "hid";
	cfg.poll_interval_ms = 50;
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
	DWORD proto;
	char name[MAX_READERNAME];
	DWORD len = sizeof(name);
	if (calais_start(&cfg) != SCARD_S_SUCCESS ||
	    SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx) != SCARD_S_SUCCESS ||
	    SCardListReaders(ctx, NULL, name, &len) != SCARD_S_SUCCESS ||
	    SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto) !=
	            SCARD_S_SUCCESS) {
		fprintf(stderr, "fido-pcsc-bridge: no FIDO reader\n");
		return 1;
	}
	fprintf(stderr, "fido-pcsc-bridge: %s\n", name);
	static uint8_t apdu[65536], resp[65538];
	for (;;) {
		uint8_t l[2];
		if (read_all(l, 2) != 0)
			break;
		size_t n = (size_t)l[0] << 8 | l[1];
		if (read_all(apdu, n) != 0)
			break;
		LONG rv;
		DWORD rl = sizeof(resp);
		if (n == 0) {
			DWORD state, nl = 0;
			rv = SCardStatus(h, NULL, &nl, &state, &proto, resp, &rl);
		} else {
			rv = SCardTransmit(h, SCARD_PCI_T1, apdu, (DWORD)n, NULL, resp, &rl);
		}
		if (answer(rv, resp, rv == SCARD_S_SUCCESS ? rl : 0) != 0)
			break;
	}
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	calais_shutdown();
	hidsim_reset();
	return 0;
}
