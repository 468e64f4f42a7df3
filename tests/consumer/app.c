/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A consumer written only against <winscard.h>: lists readers and reads the demo card's
 * greeting file. Built by tests/consumer/run through Meson and through pkg-config. */
#include <stdio.h>
#include <string.h>
#include <winscard.h>

int main(void)
{
	SCARDCONTEXT ctx;
	SCARDHANDLE card;
	DWORD proto, len;
	char readers[1024];
	BYTE select[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
	BYTE read[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
	BYTE resp[258];
	LONG rv;

	if ((rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx)) != SCARD_S_SUCCESS)
		return fprintf(stderr, "establish: %s\n", pcsc_stringify_error(rv)), 1;
	len = sizeof(readers);
	if ((rv = SCardListReaders(ctx, NULL, readers, &len)) != SCARD_S_SUCCESS)
		return fprintf(stderr, "list: %s\n", pcsc_stringify_error(rv)), 1;
	printf("reader: %s\n", readers);
	rv = SCardConnect(ctx, readers, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &card, &proto);
	if (rv != SCARD_S_SUCCESS)
		return fprintf(stderr, "connect: %s\n", pcsc_stringify_error(rv)), 1;
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	len = sizeof(resp);
	rv = SCardTransmit(card, pci, select, sizeof(select), NULL, resp, &len);
	if (rv != SCARD_S_SUCCESS || len != 2 || resp[0] != 0x90)
		return fprintf(stderr, "select: %s\n", pcsc_stringify_error(rv)), 1;
	len = sizeof(resp);
	rv = SCardTransmit(card, pci, read, sizeof(read), NULL, resp, &len);
	if (rv != SCARD_S_SUCCESS || len < 2)
		return fprintf(stderr, "read: %s\n", pcsc_stringify_error(rv)), 1;
	printf("file: %.*s", (int)(len - 2), (const char *)resp);
	SCardDisconnect(card, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	return 0;
}
