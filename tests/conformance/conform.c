/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The conformance program: PC/SC behaviour as an application sees it, written against
 * <winscard.h> alone and linked with libpcsclite.so.1. tests/conformance/run runs it
 * once on pcsc-lite (pcscd + vpcd) and once on Calais (the libpcsclite.so.1 build with
 * its vpcd backend), with the same virtual card, and compares the two traces line by
 * line. Each line is one observation: "<check>: <what was seen>". Only what both
 * implementations must agree on is printed (no timings, no raw event counters: their
 * steps are printed instead).
 *
 *   conform <reader> <card pid file>
 *
 * The card (tests/peers/vcard --retry) leaves on SIGUSR1 and comes back 1 s later
 * (longer than pcscd's 400 ms presence poll, so both managers see the removal). */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <winscard.h>

static const char *reader;
static const char *card_pidfile;
static SCARDCONTEXT ctx, ctx2;

static void line(const char *check, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void line(const char *check, const char *fmt, ...)
{
	va_list ap;
	printf("%s: ", check);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static const char *rvs(LONG rv)
{
	static char b[4][32];
	static int i;
	i = (i + 1) % 4;
	snprintf(b[i], sizeof(b[i]), "0x%08lX", (unsigned long)(DWORD)rv);
	return b[i];
}

static void hex(char *out, size_t cap, const BYTE *b, DWORD n)
{
	size_t o = 0;
	out[0] = 0;
	for (DWORD i = 0; i < n && o + 3 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%02X", b[i]);
}

/* The state bits both must agree on (the event counter is compared by its steps). */
#define STATE_BITS                                                                       \
	(SCARD_STATE_IGNORE | SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE |             \
	 SCARD_STATE_EMPTY | SCARD_STATE_PRESENT | SCARD_STATE_EXCLUSIVE |                \
	 SCARD_STATE_INUSE | SCARD_STATE_MUTE)

static DWORD counter;

/* Waits (up to ms) until the reader's state has `bit`; prints the outcome and how far
 * the event counter moved. */
static void wait_for(const char *check, DWORD bit, DWORD ms)
{
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	LONG rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	DWORD waited = 0;
	while (rv == SCARD_S_SUCCESS && !(rs.dwEventState & bit) && waited < ms) {
		rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		rv = SCardGetStatusChange(ctx, 500, &rs, 1);
		waited += 500;
		if (rv == SCARD_E_TIMEOUT)
			rv = SCARD_S_SUCCESS;
	}
	DWORD c = rs.dwEventState >> 16;
	line(check, "rv %s state 0x%lX counter moved %s", rvs(rv),
	     (unsigned long)(rs.dwEventState & STATE_BITS),
	     c != counter ? "yes" : "no");
	counter = c;
}

static void card_leaves(void)
{
	FILE *f = fopen(card_pidfile, "r");
	int pid = 0;
	if (!f || fscanf(f, "%d", &pid) != 1 || kill(pid, SIGUSR1) != 0) {
		line("card control", "cannot signal the card");
		exit(2);
	}
	fclose(f);
}

static LONG xmit(SCARDHANDLE h, DWORD proto, const BYTE *apdu, DWORD n, BYTE *resp, DWORD *len)
{
	return SCardTransmit(h, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, apdu, n,
	                     NULL, resp, len);
}

static void transmit_check(const char *check, SCARDHANDLE h, DWORD proto, const BYTE *apdu,
                           DWORD n, DWORD cap)
{
	BYTE resp[300];
	DWORD len = cap;
	LONG rv = xmit(h, proto, apdu, n, resp, &len);
	char hx[700];
	hex(hx, sizeof(hx), resp, rv == SCARD_S_SUCCESS ? len : 0);
	line(check, "rv %s len %lu data %s", rvs(rv),
	     rv == SCARD_S_SUCCESS ? (unsigned long)len : 0ul, hx);
}

static void *cancel_later(void *arg)
{
	(void)arg;
	usleep(300000);
	SCardCancel(ctx2);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: conform <reader> <card pid file>\n");
		return 2;
	}
	reader = argv[1];
	card_pidfile = argv[2];
	static const BYTE select[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
	BYTE echo[5 + 16 + 1] = { 0x80, 0xEE, 0x00, 0x00, 16 };
	for (int i = 0; i < 16; i++)
		echo[5 + i] = (BYTE)(0xA0 + i);
	static const BYTE source255[] = { 0x80, 0xEF, 0x00, 0xFF, 0x00 };

	/* Contexts. */
	line("establish", "rv %s", rvs(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx)));
	line("establish second", "rv %s",
	     rvs(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx2)));
	line("is valid", "rv %s", rvs(SCardIsValidContext(ctx)));
	line("establish bad scope", "rv %s",
	     rvs(SCardEstablishContext(0x1234, NULL, NULL, &(SCARDCONTEXT){ 0 })));

	/* Readers. */
	char names[1024];
	DWORD nl = sizeof(names);
	LONG rv = SCardListReaders(ctx, NULL, names, &nl);
	bool found = false;
	for (const char *p = names; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1)
		found |= strcmp(p, reader) == 0;
	line("list readers", "rv %s our reader listed %s", rvs(rv), found ? "yes" : "no");
	nl = 0;
	line("list readers size query", "rv %s", rvs(SCardListReaders(ctx, NULL, NULL, &nl)));
	nl = 3;
	line("list readers small buffer", "rv %s", rvs(SCardListReaders(ctx, NULL, names, &nl)));
	SCARDHANDLE h0;
	DWORD p0;
	line("connect unknown reader", "rv %s",
	     rvs(SCardConnect(ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                      &h0, &p0)));

	/* The card. */
	wait_for("card present", SCARD_STATE_PRESENT, 5000);
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	char atrhex[80];
	hex(atrhex, sizeof(atrhex), rs.rgbAtr, rs.cbAtr);
	line("status change atr", "rv %s atr %s", rvs(rv), atrhex);
	rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	line("status change timeout", "rv %s", rvs(SCardGetStatusChange(ctx, 100, &rs, 1)));

	SCARDHANDLE h1, h2;
	DWORD proto1 = 0, proto2 = 0;
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h1, &proto1);
	line("connect shared", "rv %s protocol %lu", rvs(rv), (unsigned long)proto1);
	rv = SCardConnect(ctx2, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h2, &proto2);
	line("connect shared again", "rv %s protocol %lu", rvs(rv), (unsigned long)proto2);
	line("connect exclusive while shared", "rv %s",
	     rvs(SCardConnect(ctx, reader, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h0, &p0)));

	char sname[256];
	BYTE atr[40];
	DWORD snl = sizeof(sname), state = 0, sproto = 0, al = sizeof(atr);
	rv = SCardStatus(h1, sname, &snl, &state, &sproto, atr, &al);
	hex(atrhex, sizeof(atrhex), atr, al);
	line("status", "rv %s name %s protocol %lu atr %s", rvs(rv),
	     strcmp(sname, reader) == 0 ? "same" : sname, (unsigned long)sproto, atrhex);
	wait_for("state in use", SCARD_STATE_INUSE, 0);

	transmit_check("transmit select", h1, proto1, select, sizeof(select), 300);
	transmit_check("transmit echo", h1, proto1, echo, sizeof(echo), 300);
	transmit_check("transmit 255 bytes", h1, proto1, source255, sizeof(source255), 300);
	transmit_check("transmit unknown ins", h1, proto1, (const BYTE[]){ 0x80, 0x10, 0, 0 }, 4,
	               300);
	{
		/* A receive buffer too small for the answer: the code, and the length left. */
		BYTE resp[300];
		DWORD len = 100;
		LONG r = xmit(h1, proto1, source255, sizeof(source255), resp, &len);
		line("transmit small buffer", "rv %s len %lu", rvs(r), (unsigned long)len);
		transmit_check("transmit after a small buffer", h1, proto1, select, sizeof(select), 300);
	}

	/* Transactions. */
	line("end without begin", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("begin", "rv %s", rvs(SCardBeginTransaction(h1)));
	line("begin nested", "rv %s", rvs(SCardBeginTransaction(h1)));
	line("end nested", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("end", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("end bad disposition", "rv %s", rvs(SCardEndTransaction(h1, 42)));

	/* Reset propagation. */
	DWORD active;
	line("reconnect reset", "rv %s",
	     rvs(SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_RESET_CARD, &active)));
	transmit_check("other handle after reset", h2, proto2, select, sizeof(select), 300);
	transmit_check("other handle after reset, again", h2, proto2, select, sizeof(select), 300);
	line("other handle reconnect", "rv %s",
	     rvs(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));
	transmit_check("other handle after reconnect", h2, proto2, select, sizeof(select), 300);
	transmit_check("resetting handle", h1, proto1, select, sizeof(select), 300);

	/* Removal propagation. */
	card_leaves();
	wait_for("card removed", SCARD_STATE_EMPTY, 5000);
	transmit_check("transmit after removal", h1, proto1, select, sizeof(select), 300);
	wait_for("card back", SCARD_STATE_PRESENT, 5000);
	transmit_check("old handle with the card back", h1, proto1, select, sizeof(select), 300);
	line("old handle reconnect", "rv %s",
	     rvs(SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));
	transmit_check("after reconnect", h1, proto1, select, sizeof(select), 300);

	/* Cancel. */
	pthread_t t;
	pthread_create(&t, NULL, cancel_later, NULL);
	SCARD_READERSTATE wait = { .szReader = reader };
	wait.dwCurrentState = SCARD_STATE_UNAWARE;
	SCardGetStatusChange(ctx2, 0, &wait, 1);
	wait.dwCurrentState = wait.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	line("cancel a wait", "rv %s", rvs(SCardGetStatusChange(ctx2, INFINITE, &wait, 1)));
	pthread_join(t, NULL);

	/* Disconnects and handles that are no more. */
	line("disconnect bad disposition", "rv %s", rvs(SCardDisconnect(h1, 42)));
	line("disconnect", "rv %s", rvs(SCardDisconnect(h1, SCARD_LEAVE_CARD)));
	line("disconnect again", "rv %s", rvs(SCardDisconnect(h1, SCARD_LEAVE_CARD)));
	transmit_check("transmit on a closed handle", h1, proto1, select, sizeof(select), 300);
	line("disconnect other", "rv %s", rvs(SCardDisconnect(h2, SCARD_LEAVE_CARD)));
	line("release", "rv %s", rvs(SCardReleaseContext(ctx)));
	line("is valid after release", "rv %s", rvs(SCardIsValidContext(ctx)));
	line("release second", "rv %s", rvs(SCardReleaseContext(ctx2)));
	return 0;
}
