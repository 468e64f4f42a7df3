/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A program written only against <winscard.h>, as for pcsc-lite: lists the readers,
 * connects to the first one and reads the demo card's greeting file. Run it with
 * CALAIS_BACKENDS=sim to try it without hardware. */
#include <stdio.h>
#include <winscard.h>

int main(void)
{
	SCARDCONTEXT ctx;
	SCARDHANDLE card;
	DWORD proto, len;
	char readers[1024];
	BYTE select[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 }; /* SELECT EF 0001 */
	BYTE read[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };               /* READ BINARY */
	BYTE resp[258];
	LONG rv;

	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
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
	printf("Reader: %s\n", readers);
	rv = SCardConnect(ctx, readers, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &card, &proto);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardConnect: %s\n", pcsc_stringify_error(rv));
		SCardReleaseContext(ctx);
		return 1;
	}
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	len = sizeof(resp);
	rv = SCardTransmit(card, pci, select, sizeof(select), NULL, resp, &len);
	if (rv == SCARD_S_SUCCESS && len == 2 && resp[0] == 0x90) {
		len = sizeof(resp);
		rv = SCardTransmit(card, pci, read, sizeof(read), NULL, resp, &len);
	}
	if (rv != SCARD_S_SUCCESS || len < 2) {
		fprintf(stderr, "SCardTransmit: %s\n", pcsc_stringify_error(rv));
	} else {
		printf("SW: %02X %02X\n", resp[len - 2], resp[len - 1]);
		printf("Data: %.*s", (int)(len - 2), (const char *)resp);
	}
	SCardDisconnect(card, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	return rv == SCARD_S_SUCCESS ? 0 : 1;
}
