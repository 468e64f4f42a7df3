/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A kiosk-style program for the resident-memory measurement: starts Calais with the
 * simulated backend (one reader holding the demo card), connects, reads the greeting
 * file, then waits for a card event. It prints "waiting <pid>" when it blocks so
 * bench/scale/run can read /proc/<pid>/status meanwhile.
 *
 *   calais-kiosk WAIT_MS          the kiosk
 *   calais-kiosk WAIT_MS baseline the same binary, Calais never called (the reference) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <calais/calais.h>

static int fail(const char *what, LONG rv)
{
	fprintf(stderr, "calais-kiosk: %s: %s\n", what, pcsc_stringify_error(rv));
	return 1;
}

int main(int argc, char **argv)
{
	unsigned wait_ms = argc > 1 ? (unsigned)atoi(argv[1]) : 2000;
	if (argc > 2 && strcmp(argv[2], "baseline") == 0) {
		printf("waiting %ld\n", (long)getpid());
		fflush(stdout);
		struct timespec ts = { .tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
		return 0;
	}

	static const BYTE select_ef[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
	static const BYTE read_binary[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "sim";
	LONG rv = calais_start(&cfg);
	if (rv != SCARD_S_SUCCESS)
		return fail("calais_start", rv);

	SCARDCONTEXT ctx;
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS)
		return fail("SCardEstablishContext", rv);
	char readers[1024];
	DWORD len = sizeof(readers);
	rv = SCardListReaders(ctx, NULL, readers, &len);
	if (rv != SCARD_S_SUCCESS)
		return fail("SCardListReaders", rv);
	SCARDHANDLE card;
	DWORD proto;
	rv = SCardConnect(ctx, readers, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &card, &proto);
	if (rv != SCARD_S_SUCCESS)
		return fail("SCardConnect", rv);
	BYTE resp[258];
	len = sizeof(resp);
	rv = SCardTransmit(card, SCARD_PCI_T1, select_ef, sizeof(select_ef), NULL, resp, &len);
	if (rv != SCARD_S_SUCCESS)
		return fail("SCardTransmit (SELECT)", rv);
	len = sizeof(resp);
	rv = SCardTransmit(card, SCARD_PCI_T1, read_binary, sizeof(read_binary), NULL, resp, &len);
	if (rv != SCARD_S_SUCCESS || len < 2)
		return fail("SCardTransmit (READ BINARY)", rv);

	SCARD_READERSTATE rs = { .szReader = readers, .dwCurrentState = SCARD_STATE_UNAWARE };
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	if (rv != SCARD_S_SUCCESS)
		return fail("SCardGetStatusChange", rv);
	rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	printf("waiting %ld\n", (long)getpid());
	fflush(stdout);
	rv = SCardGetStatusChange(ctx, wait_ms, &rs, 1);
	if (rv != SCARD_E_TIMEOUT && rv != SCARD_S_SUCCESS)
		return fail("SCardGetStatusChange (wait)", rv);

	SCardDisconnect(card, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	calais_shutdown();
	return 0;
}
