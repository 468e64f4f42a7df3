/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A program written only against <winscard.h>, as for pcsc-lite: lists the readers,
 * connects to the first one and reads the demo card's greeting file (EF 0001). Run it
 * with CALAIS_BACKENDS=sim to try it without hardware. */
#include <stdio.h>
#include <string.h>
#include <winscard.h>

/* Sends one APDU; returns the status word, or -1 after printing the PC/SC error. */
static long transmit(SCARDHANDLE card, DWORD proto, const BYTE *apdu, DWORD len, BYTE *resp,
                     DWORD *resp_len)
{
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	LONG rv = SCardTransmit(card, pci, apdu, len, NULL, resp, resp_len);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardTransmit: %s\n", pcsc_stringify_error(rv));
		return -1;
	}
	if (*resp_len < 2) {
		fprintf(stderr, "SCardTransmit: response without a status word\n");
		return -1;
	}
	*resp_len -= 2;
	return (long)resp[*resp_len] << 8 | resp[*resp_len + 1];
}

int main(void)
{
	static const BYTE select_ef[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
	static const BYTE read_binary[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 }; /* up to 256 */
	SCARDCONTEXT ctx;
	SCARDHANDLE card;
	DWORD proto, len;
	char readers[4096];
	BYTE resp[258];
	int status = 1;

	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardEstablishContext: %s\n", pcsc_stringify_error(rv));
		return 1;
	}
	len = sizeof(readers);
	rv = SCardListReaders(ctx, NULL, readers, &len);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardListReaders: %s\n", pcsc_stringify_error(rv));
		SCardReleaseContext(ctx);
		return 1;
	}
	for (const char *r = readers; *r; r += strlen(r) + 1)
		printf("Reader: %s\n", r);

	rv = SCardConnect(ctx, readers, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &card, &proto);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardConnect: %s\n", pcsc_stringify_error(rv));
		SCardReleaseContext(ctx);
		return 1;
	}
	printf("Connected to %s with T=%d\n", readers, proto == SCARD_PROTOCOL_T1 ? 1 : 0);

	len = sizeof(resp);
	long sw = transmit(card, proto, select_ef, sizeof(select_ef), resp, &len);
	if (sw >= 0 && sw != 0x9000)
		fprintf(stderr, "SELECT EF 0001: status word %04lX\n", sw);
	if (sw == 0x9000) {
		len = sizeof(resp);
		sw = transmit(card, proto, read_binary, sizeof(read_binary), resp, &len);
		/* 62 82: the file is shorter than the 256 bytes asked for; the data is whole. */
		if (sw == 0x9000 || sw == 0x6282) {
			printf("SW: %02lX %02lX\n", sw >> 8, sw & 0xFF);
			while (len && (resp[len - 1] == '\n' || resp[len - 1] == '\r'))
				len--;
			printf("Data: %.*s\n", (int)len, (const char *)resp);
			status = 0;
		} else if (sw >= 0) {
			fprintf(stderr, "READ BINARY: status word %04lX\n", sw);
		}
	}
	SCardDisconnect(card, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	return status;
}
