/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * serial_com: the serial backend on a Windows COM port, through the PC/SC API only.
 * Built for Windows; tests/win32/run runs it under wine64 against tests/serial/gemtwin-sim
 * on a Linux pseudo-terminal mapped to a COM port ($WINEPREFIX/dosdevices/comN).
 *
 *   CALAIS_BACKENDS=serial CALAIS_SERIAL_READERS=COM5:gemtwin serial_com.exe
 *
 * Lists the reader, waits for the card, connects, reads the ATR and sends READ BINARY
 * 00 B0 00 00 10 (the simulated card answers bytes 00..0F and 90 00). TAP output; exit
 * 77 (skip) when CALAIS_SERIAL_READERS is not set, 1 when a check failed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <winscard.h>

static int n_test, n_failed;

static void check(bool ok, const char *what, LONG rv)
{
	n_test++;
	if (!ok)
		n_failed++;
	if (rv != SCARD_S_SUCCESS)
		printf("%s %d - %s: %s (0x%08lX)\n", ok ? "ok" : "not ok", n_test, what,
		       pcsc_stringify_error(rv), (unsigned long)rv);
	else
		printf("%s %d - %s\n", ok ? "ok" : "not ok", n_test, what);
	fflush(stdout);
}

static void hex(const char *label, const BYTE *b, DWORD n)
{
	printf("# %s:", label);
	for (DWORD i = 0; i < n; i++)
		printf(" %02X", b[i]);
	printf("\n");
}

int main(void)
{
	const char *decl = getenv("CALAIS_SERIAL_READERS");
	if (!decl || !*decl) {
		printf("1..0 # SKIP CALAIS_SERIAL_READERS is not set (tests/win32/run sets it)\n");
		return 77;
	}
	printf("1..8\n# CALAIS_SERIAL_READERS=%s\n", decl);

	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	check(rv == SCARD_S_SUCCESS, "SCardEstablishContext", rv);
	if (rv != SCARD_S_SUCCESS)
		return 1;

	char readers[1024];
	DWORD len = sizeof(readers);
	rv = SCardListReaders(ctx, NULL, readers, &len);
	bool one = rv == SCARD_S_SUCCESS && readers[0] && !readers[strlen(readers) + 1];
	check(one, "SCardListReaders lists one reader", rv);
	if (!one) {
		SCardReleaseContext(ctx);
		return 1;
	}
	printf("# reader: %s\n", readers);

	/* The port is opened and the reader greeted by the backend; the card shows up once
	 * the first slot status has come back over the line. */
	SCARD_READERSTATE st = { .szReader = readers, .dwCurrentState = SCARD_STATE_UNAWARE };
	for (int i = 0; i < 20; i++) {
		rv = SCardGetStatusChange(ctx, 500, &st, 1);
		if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT)
			break;
		if (st.dwEventState & SCARD_STATE_PRESENT)
			break;
		st.dwCurrentState = st.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	}
	check(st.dwEventState & SCARD_STATE_PRESENT, "card present", rv);
	printf("# state 0x%lX\n", (unsigned long)st.dwEventState);

	SCARDHANDLE card;
	DWORD proto = 0;
	rv = SCardConnect(ctx, readers, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &card, &proto);
	check(rv == SCARD_S_SUCCESS, "SCardConnect", rv);
	if (rv != SCARD_S_SUCCESS) {
		SCardReleaseContext(ctx);
		return 1;
	}
	printf("# protocol T=%d\n", proto == SCARD_PROTOCOL_T1 ? 1 : 0);

	BYTE atr[MAX_ATR_SIZE];
	DWORD atr_len = sizeof(atr), state, p;
	char name[256];
	DWORD name_len = sizeof(name);
	rv = SCardStatus(card, name, &name_len, &state, &p, atr, &atr_len);
	check(rv == SCARD_S_SUCCESS && atr_len >= 2 && (atr[0] == 0x3B || atr[0] == 0x3F),
	      "SCardStatus returns an ATR", rv);
	if (rv == SCARD_S_SUCCESS)
		hex("ATR", atr, atr_len);

	static const BYTE read_binary[] = { 0x00, 0xB0, 0x00, 0x00, 0x10 };
	BYTE resp[258];
	DWORD resp_len = sizeof(resp);
	rv = SCardTransmit(card, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0,
	                   read_binary, sizeof(read_binary), NULL, resp, &resp_len);
	bool good = rv == SCARD_S_SUCCESS && resp_len == 18 && resp[16] == 0x90 && resp[17] == 0x00;
	for (DWORD i = 0; good && i < 16; i++)
		good = resp[i] == i;
	check(good, "READ BINARY 00 B0 00 00 10 -> 00..0F 90 00", rv);
	if (rv == SCARD_S_SUCCESS)
		hex("response", resp, resp_len);

	rv = SCardDisconnect(card, SCARD_UNPOWER_CARD);
	check(rv == SCARD_S_SUCCESS, "SCardDisconnect", rv);
	rv = SCardReleaseContext(ctx);
	check(rv == SCARD_S_SUCCESS, "SCardReleaseContext", rv);
	printf("# %d of %d failed\n", n_failed, n_test);
	return n_failed ? 1 : 0;
}
