/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The conformance program: PC/SC behaviour as an application sees it, written against
 * <winscard.h> and <reader.h> alone and linked with libpcsclite.so.1. tests/conformance/run runs it
 * once on pcsc-lite (pcscd + vpcd) and once on Calais (the libpcsclite.so.1 build with
 * its vpcd backend), with the same virtual card, and compares the two traces line by
 * line. Each line is one observation: "<check>: <what was seen>". Only what both
 * implementations must agree on is printed (no timings but coarse bounds, no raw event
 * counters: their steps are printed instead). It covers pcsc-lite's
 * UnitaryTests/SCardBlockingBehaviourTest table (which calls wait for another handle's
 * transaction), what each call writes on failure, and every difference from pcsc-lite
 * that this setup can observe (the README's table; differences.txt names them).
 *
 *   conform <reader> <card pid file>
 *   conform --rows config <reader> <card pid file>   (the rows that need Calais settings)
 *
 * The card (tests/peers/vcard --retry) leaves on SIGUSR1 and comes back 1 s later
 * (longer than pcscd's 400 ms presence poll, so both managers see the removal). */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <reader.h>
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
/* Whether the last wait_for's first state with PRESENT carried the card's ATR. */
static bool present_with_atr;

/* Waits (up to ms) until the reader's state has `bit`; prints the outcome and how far
 * the event counter moved. */
static void wait_for(const char *check, DWORD bit, DWORD ms)
{
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	LONG rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	DWORD waited = 0;
	bool seen = false;
	for (;;) {
		if (rv == SCARD_S_SUCCESS && !seen && (rs.dwEventState & SCARD_STATE_PRESENT)) {
			seen = true;
			present_with_atr = rs.cbAtr > 0;
		}
		if (rv != SCARD_S_SUCCESS || (rs.dwEventState & bit) || waited >= ms)
			break;
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

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const BYTE select_mf[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
/* vcard's 80 DD P1 sleeps P1 x 10 ms before it answers. */
static const BYTE sleep500[] = { 0x80, 0xDD, 50, 0x00 };
static const BYTE sleep2550[] = { 0x80, 0xDD, 255, 0x00 };

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
	/* The length is printed on failure too: what each side writes there. */
	line(check, "rv %s len %lu data %s", rvs(rv), (unsigned long)len, hx);
}

static void *cancel_later(void *arg)
{
	(void)arg;
	usleep(300000);
	SCardCancel(ctx2);
	return NULL;
}

/* ---- which calls wait for another handle's transaction ------------------------------ */

/* Long enough for a call that does not wait to be over on a loaded machine. */
#define WINDOW_US 500000

enum bg_op {
	BG_RECONNECT, BG_GETATTRIB, BG_TRANSMIT, BG_STATUS, BG_CONNECT, BG_BEGIN, BG_CONTROL,
	BG_SETATTRIB, BG_END, BG_DISCONNECT_LEAVE, BG_DISCONNECT_RESET, BG_RECONNECT_EXCLUSIVE,
	BG_TRANSMIT_SLOW, /* vcard's 2.55 s command */
	BG_TRANSMIT_EMPTY,
};

struct bg {
	enum bg_op op;
	SCARDHANDLE h;
	DWORD proto;
	LONG rv;
	DWORD len;        /* BG_TRANSMIT_SLOW: the answer's length */
	double ended_ms;  /* when the call returned */
	atomic_bool done;
};

static void *bg_run(void *arg)
{
	struct bg *b = arg;
	BYTE buf[300];
	DWORD len = sizeof(buf), active;
	SCARDHANDLE hx;
	const BYTE one = 1;
	switch (b->op) {
	case BG_RECONNECT:
		b->rv = SCardReconnect(b->h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                       SCARD_LEAVE_CARD, &active);
		break;
	case BG_RECONNECT_EXCLUSIVE:
		b->rv = SCardReconnect(b->h, SCARD_SHARE_EXCLUSIVE,
		                       SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &active);
		break;
	case BG_GETATTRIB:
		len = MAX_BUFFER_SIZE; /* pcsc-lite refuses more */
		b->rv = SCardGetAttrib(b->h, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, buf, &len);
		break;
	case BG_TRANSMIT:
		b->rv = xmit(b->h, b->proto, select_mf, sizeof(select_mf), buf, &len);
		break;
	case BG_TRANSMIT_EMPTY:
		b->rv = xmit(b->h, b->proto, select_mf, 0, buf, &len);
		break;
	case BG_TRANSMIT_SLOW:
		b->rv = xmit(b->h, b->proto, sleep2550, sizeof(sleep2550), buf, &len);
		b->len = len;
		break;
	case BG_STATUS:
		b->rv = SCardStatus(b->h, NULL, NULL, NULL, NULL, NULL, NULL);
		break;
	case BG_CONNECT:
		b->rv = SCardConnect(ctx2, reader, SCARD_SHARE_SHARED,
		                     SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &hx, &active);
		if (b->rv == SCARD_S_SUCCESS)
			SCardDisconnect(hx, SCARD_LEAVE_CARD);
		break;
	case BG_BEGIN:
		b->rv = SCardBeginTransaction(b->h);
		if (b->rv == SCARD_S_SUCCESS)
			SCardEndTransaction(b->h, SCARD_LEAVE_CARD);
		break;
	case BG_CONTROL:
		b->rv = SCardControl(b->h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, buf, sizeof(buf), &len);
		break;
	case BG_SETATTRIB:
		b->rv = SCardSetAttrib(b->h, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, &one, 1);
		break;
	case BG_END:
		b->rv = SCardEndTransaction(b->h, SCARD_LEAVE_CARD);
		break;
	case BG_DISCONNECT_LEAVE:
		b->rv = SCardDisconnect(b->h, SCARD_LEAVE_CARD);
		break;
	case BG_DISCONNECT_RESET:
		b->rv = SCardDisconnect(b->h, SCARD_RESET_CARD);
		break;
	}
	b->ended_ms = now_ms();
	atomic_store(&b->done, true);
	return NULL;
}

/* Runs op on `other` (another context's handle) while `owner` holds a transaction:
 * whether it is still waiting after WINDOW_US (pcsc-lite's client polls every 100 ms), and
 * its result once the transaction ends. */
static void blocking(const char *check, enum bg_op op, SCARDHANDLE owner, SCARDHANDLE other,
                     DWORD proto)
{
	LONG rv = SCardBeginTransaction(owner);
	if (rv != SCARD_S_SUCCESS) {
		line(check, "begin failed: %s", rvs(rv));
		return;
	}
	struct bg b = { .op = op, .h = other, .proto = proto };
	pthread_t t;
	pthread_create(&t, NULL, bg_run, &b);
	usleep(WINDOW_US);
	bool waited = !atomic_load(&b.done);
	LONG end = SCardEndTransaction(owner, SCARD_LEAVE_CARD);
	pthread_join(t, NULL);
	line(check, "blocks %s rv %s (end %s)", waited ? "yes" : "no", rvs(b.rv), rvs(end));
}

/* Runs op on `h` and, after WINDOW_US, `release`s the obstacle: whether it waited. */
static void waits_for(const char *check, enum bg_op op, SCARDHANDLE h, void (*release)(void))
{
	struct bg b = { .op = op, .h = h };
	pthread_t t;
	pthread_create(&t, NULL, bg_run, &b);
	usleep(WINDOW_US);
	bool waited = !atomic_load(&b.done);
	release();
	pthread_join(t, NULL);
	line(check, "blocks %s rv %s", waited ? "yes" : "no", rvs(b.rv));
}

static SCARDHANDLE obstacle;
static void drop_obstacle(void)
{
	SCardDisconnect(obstacle, SCARD_LEAVE_CARD);
}
static void end_obstacle(void)
{
	SCardEndTransaction(obstacle, SCARD_LEAVE_CARD);
}

static void *cancel_ctx2_later(void *arg)
{
	(void)arg;
	usleep(300000);
	SCardCancel(ctx2);
	return NULL;
}

/* What SCardStatus writes on a failure or a short buffer: sentinels in, values out. */
static void status_outputs(const char *check, SCARDHANDLE h, DWORD name_cap, DWORD atr_cap)
{
	char name[256];
	BYTE atr[40];
	memset(name, 'x', sizeof(name));
	DWORD nl = name_cap, st = 0xA5A5A5A5u, pr = 0xA5A5A5A5u, al = atr_cap;
	LONG rv = SCardStatus(h, name, &nl, &st, &pr, atr, &al);
	line(check, "rv %s state 0x%lX protocol 0x%lX name len %lu atr len %lu name prefix %s",
	     rvs(rv), (unsigned long)(st & 0xFFFF), (unsigned long)pr, (unsigned long)nl,
	     (unsigned long)al,
	     name_cap && name_cap < 256 && strncmp(name, reader, name_cap) == 0 ? "yes" : "no");
}

/* What SCardGetAttrib leaves in the length (a NULL buffer is a size query). */
static void attrib_outputs(const char *check, SCARDHANDLE h, DWORD id, bool null_buf, DWORD cap)
{
	BYTE buf[400];
	DWORD len = cap;
	LONG rv = SCardGetAttrib(h, id, null_buf ? NULL : buf, &len);
	line(check, "rv %s len %lu", rvs(rv), (unsigned long)len);
}

/* The rows that need a setting of Calais' own, run as a process of their own: the run
 * gives only Calais CALAIS_TRANSACTION_TIMEOUT_MS=1500 and CALAIS_EXCHANGE_TIMEOUT_MS=1500
 * (pcsc-lite has neither setting). The card is in the reader before this starts. */
static int config_rows(void)
{
	line("config establish", "rv %s",
	     rvs(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx)));
	/* The first look at a reader whose card was there before: present, with its ATR. */
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	LONG rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	line("config first status", "rv %s state 0x%lX atr %s", rvs(rv),
	     (unsigned long)(rs.dwEventState & STATE_BITS), rs.cbAtr ? "yes" : "no");
	wait_for("config card present", SCARD_STATE_PRESENT, 5000);
	SCARDHANDLE h;
	DWORD proto = 0;
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h, &proto);
	line("config connect", "rv %s protocol %lu", rvs(rv), (unsigned long)proto);

	/* Idle-transaction timeout: the delay counts from the last card operation, so a
	 * transaction used every 600 ms stays, one idle for 2.5 s is ended with a reset. */
	line("config begin", "rv %s", rvs(SCardBeginTransaction(h)));
	usleep(600000);
	transmit_check("transaction used after 600 ms", h, proto, select_mf, sizeof(select_mf), 300);
	usleep(600000);
	transmit_check("transaction used after 600 ms more", h, proto, select_mf, sizeof(select_mf),
	               300);
	line("config end", "rv %s", rvs(SCardEndTransaction(h, SCARD_LEAVE_CARD)));
	line("config begin again", "rv %s", rvs(SCardBeginTransaction(h)));
	usleep(2500000);
	transmit_check("transaction idle for 2.5 s, then transmit", h, proto, select_mf,
	               sizeof(select_mf), 300);
	SCardEndTransaction(h, SCARD_LEAVE_CARD);
	DWORD active;
	line("reconnect after the idle transaction", "rv %s",
	     rvs(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));

	/* A call in progress when its card is pulled (300 ms into a 2.55 s command): how it
	 * ends, and whether within 1 s of the pull. */
	{
		struct bg sl = { .op = BG_TRANSMIT_SLOW, .h = h, .proto = proto };
		pthread_t t;
		pthread_create(&t, NULL, bg_run, &sl);
		usleep(300000);
		double pulled = now_ms();
		card_leaves();
		pthread_join(t, NULL);
		line("transmit when the card is pulled mid-command", "rv %s len %lu ended within 1 s %s",
		     rvs(sl.rv), (unsigned long)sl.len, sl.ended_ms - pulled < 1000 ? "yes" : "no");
	}
	wait_for("config card removed", SCARD_STATE_EMPTY, 5000);
	wait_for("config card back", SCARD_STATE_PRESENT, 5000);
	line("reconnect with the card back", "rv %s",
	     rvs(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));

	/* The exchange limit (1.5 s on Calais' side). */
	transmit_check("transmit a 0.5 s command", h, proto, sleep500, sizeof(sleep500), 300);
	transmit_check("transmit a 2.55 s command", h, proto, sleep2550, sizeof(sleep2550), 300);
	line("config disconnect", "rv %s", rvs(SCardDisconnect(h, SCARD_LEAVE_CARD)));
	/* Calais dropped the card at the limit (its stream is out of step); it comes back. */
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	for (int i = 0; i < 50 && rv == SCARD_S_SUCCESS && !(rs.dwEventState & SCARD_STATE_PRESENT);
	     i++) {
		usleep(100000);
		rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	}
	line("config card there after the limit", "rv %s state 0x%lX", rvs(rv),
	     (unsigned long)(rs.dwEventState & STATE_BITS));
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h, &proto);
	line("config connect again", "rv %s protocol %lu", rvs(rv), (unsigned long)proto);

	/* Last: pcscd hands an empty command to the driver, and with vpcd the call does not
	 * come back (the program then ends without waiting for it). */
	struct bg e = { .op = BG_TRANSMIT_EMPTY, .h = h, .proto = proto };
	pthread_t te;
	pthread_create(&te, NULL, bg_run, &e);
	for (int i = 0; i < 30 && !atomic_load(&e.done); i++)
		usleep(100000);
	if (!atomic_load(&e.done)) {
		line("transmit an empty command", "no answer after 3 s");
		_exit(0);
	}
	pthread_join(te, NULL);
	line("transmit an empty command", "rv %s", rvs(e.rv));
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	return 0;
}

int main(int argc, char **argv)
{
	bool config = argc == 5 && strcmp(argv[1], "--rows") == 0 && strcmp(argv[2], "config") == 0;
	if (argc != 3 && !config) {
		fprintf(stderr, "usage: conform [--rows config] <reader> <card pid file>\n");
		return 2;
	}
	reader = argv[argc - 2];
	card_pidfile = argv[argc - 1];
	if (config)
		return config_rows();
	const BYTE *select = select_mf;
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
	DWORD needed = 0;
	SCardListReaders(ctx, NULL, NULL, &needed);
	line("list readers small buffer length", "%s", nl == needed ? "the needed length" : "other");
	nl = SCARD_AUTOALLOCATE;
	rv = SCardListReaders(ctx, NULL, NULL, &nl);
	line("list readers autoallocate without pointer", "rv %s length %s", rvs(rv),
	     nl == needed ? "the needed length" : "other");
	nl = sizeof(names);
	line("list readers unknown group", "rv %s",
	     rvs(SCardListReaders(ctx, "Kiosk$Nothing\0", names, &nl)));
	{
		char groups[64];
		DWORD gl = sizeof(groups);
		rv = SCardListReaderGroups(ctx, groups, &gl);
		line("list groups", "rv %s len %lu first %s", rvs(rv), (unsigned long)gl,
		     rv == SCARD_S_SUCCESS ? groups : "-");
		gl = 3;
		rv = SCardListReaderGroups(ctx, groups, &gl);
		line("list groups small buffer", "rv %s len %lu", rvs(rv), (unsigned long)gl);
		gl = SCARD_AUTOALLOCATE;
		rv = SCardListReaderGroups(ctx, NULL, &gl);
		line("list groups autoallocate without pointer", "rv %s len %lu", rvs(rv),
		     (unsigned long)gl);
	}
	SCARDHANDLE h0;
	DWORD p0;
	line("connect unknown reader", "rv %s",
	     rvs(SCardConnect(ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                      &h0, &p0)));
	h0 = 0xA5A5A5A5u, p0 = 0xA5A5A5A5u;
	rv = SCardConnect(ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h0, &p0);
	line("connect unknown reader outputs", "rv %s handle %lu protocol 0x%lX", rvs(rv),
	     (unsigned long)h0, (unsigned long)p0);
	{
		char longname[140];
		memset(longname, 'n', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = 0;
		line("connect name too long", "rv %s",
		     rvs(SCardConnect(ctx, longname, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h0, &p0)));
	}
	line("connect bad share mode and no protocol", "rv %s",
	     rvs(SCardConnect(ctx, reader, 42, 0, &h0, &p0)));
	line("connect bad share mode", "rv %s",
	     rvs(SCardConnect(ctx, reader, 42, SCARD_PROTOCOL_T1, &h0, &p0)));

	/* The card. */
	wait_for("card present", SCARD_STATE_PRESENT, 5000);
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	char atrhex[80];
	hex(atrhex, sizeof(atrhex), rs.rgbAtr, rs.cbAtr);
	line("status change atr", "rv %s atr %s", rvs(rv), atrhex);
	rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	line("status change timeout", "rv %s", rvs(SCardGetStatusChange(ctx, 100, &rs, 1)));
	{
		SCARD_READERSTATE two[2] = {
			{ .szReader = reader },
			{ .szReader = reader, .dwCurrentState = SCARD_STATE_IGNORE,
			  .dwEventState = 0xA5A5A5A5u, .cbAtr = 7 },
		};
		rv = SCardGetStatusChange(ctx, 0, two, 2);
		line("status change ignored entry", "rv %s event 0x%lX cbAtr %lu", rvs(rv),
		     (unsigned long)two[1].dwEventState, (unsigned long)two[1].cbAtr);
		two[1].szReader = "No Such Reader 00 00";
		two[0].dwCurrentState = SCARD_STATE_UNAWARE;
		line("status change ignored unknown reader", "rv %s",
		     rvs(SCardGetStatusChange(ctx, 0, two, 2)));
		two[0].dwEventState = two[1].dwEventState = 0xA5A5A5A5u;
		two[0].dwCurrentState = two[1].dwCurrentState = SCARD_STATE_UNAWARE;
		rv = SCardGetStatusChange(ctx, 0, two, 2);
		line("status change unknown reader outputs", "rv %s entries %s", rvs(rv),
		     two[0].dwEventState == 0xA5A5A5A5u && two[1].dwEventState == 0xA5A5A5A5u
		             ? "untouched"
		             : "written");
	}

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
	status_outputs("status short name buffer", h1, 4, 40);
	status_outputs("status short atr buffer", h1, 256, 3);
	line("status buffer without its length", "rv %s",
	     rvs(SCardStatus(h1, sname, NULL, NULL, NULL, NULL, NULL)));

	/* Attributes: pcscd with vpcd answers none (vpcd zeroes the length of a tag it does
	 * not know, which also defeats pcscd's own friendly-name answer), so only the
	 * failure paths compare; tests/unit/test_outputs.c holds the rest. */
	attrib_outputs("getattrib unsupported size query", h1, SCARD_ATTR_MAX_IFSD, true, 5);
	attrib_outputs("getattrib unsupported", h1, SCARD_ATTR_MAX_IFSD, false, 32);
	attrib_outputs("getattrib buffer over 264 bytes", h1, SCARD_ATTR_MAX_IFSD, false, 300);
	{
		BYTE *p = NULL;
		DWORD l = SCARD_AUTOALLOCATE;
		rv = SCardGetAttrib(h1, SCARD_ATTR_MAX_IFSD, (LPBYTE)&p, &l);
		line("getattrib autoallocate unsupported", "rv %s len %lu pointer %s", rvs(rv),
		     (unsigned long)l, p ? "set" : "NULL");
		if (p)
			SCardFreeMemory(ctx, p);
		static BYTE big[MAX_BUFFER_SIZE + 1];
		line("setattrib over 264 bytes", "rv %s",
		     rvs(SCardSetAttrib(h1, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, big, sizeof(big))));
	}
	/* The descriptive attributes Calais' core answers for every reader (pcscd leaves them
	 * to the driver, and vpcd answers none): each one's code and length. */
	{
		static const struct {
			const char *check;
			DWORD id;
		} desc[] = {
			{ "getattrib vendor name", SCARD_ATTR_VENDOR_NAME },
			{ "getattrib vendor ifd version", SCARD_ATTR_VENDOR_IFD_VERSION },
			{ "getattrib channel id", SCARD_ATTR_CHANNEL_ID },
			{ "getattrib max input", SCARD_ATTR_MAXINPUT },
			{ "getattrib device unit", SCARD_ATTR_DEVICE_UNIT },
			{ "getattrib current protocol", SCARD_ATTR_CURRENT_PROTOCOL_TYPE },
			{ "getattrib atr", SCARD_ATTR_ATR_STRING },
			{ "getattrib icc presence", SCARD_ATTR_ICC_PRESENCE },
		};
		for (size_t i = 0; i < sizeof(desc) / sizeof(desc[0]); i++)
			attrib_outputs(desc[i].check, h1, desc[i].id, false, MAX_BUFFER_SIZE);
	}

	transmit_check("transmit select", h1, proto1, select, sizeof(select_mf), 300);
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
		transmit_check("transmit after a small buffer", h1, proto1, select, sizeof(select_mf), 300);
		transmit_check("transmit 1-byte buffer", h1, proto1, select, sizeof(select_mf), 1);
		transmit_check("transmit wrong protocol", h1,
		               proto1 == SCARD_PROTOCOL_T1 ? SCARD_PROTOCOL_T0 : SCARD_PROTOCOL_T1,
		               select, sizeof(select_mf), 300);
		static BYTE toolong[MAX_BUFFER_SIZE_EXTENDED + 1];
		len = 300;
		r = xmit(h1, proto1, toolong, sizeof(toolong), resp, &len);
		line("transmit command too long", "rv %s len %lu", rvs(r), (unsigned long)len);
		SCARD_IO_REQUEST recv = { .dwProtocol = 0xA5A5A5A5u, .cbPciLength = 0xA5A5A5A5u };
		len = sizeof(resp);
		r = SCardTransmit(h1, proto1 == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, select,
		                  sizeof(select_mf), &recv, resp, &len);
		line("transmit receive pci", "rv %s protocol 0x%lX length 0x%lX", rvs(r),
		     (unsigned long)recv.dwProtocol, (unsigned long)recv.cbPciLength);
	}

	/* Transactions. */
	line("end without begin", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("begin", "rv %s", rvs(SCardBeginTransaction(h1)));
	line("begin nested", "rv %s", rvs(SCardBeginTransaction(h1)));
	line("end nested", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("end", "rv %s", rvs(SCardEndTransaction(h1, SCARD_LEAVE_CARD)));
	line("end bad disposition", "rv %s", rvs(SCardEndTransaction(h1, 42)));
	line("end without transaction, reset", "rv %s",
	     rvs(SCardEndTransaction(h1, SCARD_RESET_CARD)));
	transmit_check("other handle after an end without transaction, reset", h2, proto2, select,
	               sizeof(select_mf), 300);
	{
		DWORD a1, a2;
		LONG r1 = SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                         SCARD_LEAVE_CARD, &a1);
		LONG r2 = SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                         SCARD_LEAVE_CARD, &a2);
		line("both reconnect", "rv %s %s", rvs(r1), rvs(r2));
	}

	/* pcsc-lite's UnitaryTests/SCardBlockingBehaviourTest.py, row by row, and the calls it
	 * leaves out: h1 holds a transaction, another context's handle makes the call. */
	blocking("blocking SCardReconnect", BG_RECONNECT, h1, h2, proto2);
	blocking("blocking SCardGetAttrib", BG_GETATTRIB, h1, h2, proto2);
	blocking("blocking SCardTransmit", BG_TRANSMIT, h1, h2, proto2);
	blocking("blocking SCardStatus", BG_STATUS, h1, h2, proto2);
	blocking("blocking SCardConnect", BG_CONNECT, h1, h2, proto2);
	blocking("blocking SCardBeginTransaction", BG_BEGIN, h1, h2, proto2);
	blocking("blocking SCardControl", BG_CONTROL, h1, h2, proto2);
	blocking("blocking SCardSetAttrib", BG_SETATTRIB, h1, h2, proto2);
	blocking("blocking SCardEndTransaction", BG_END, h1, h2, proto2);
	blocking("blocking SCardDisconnect, leave", BG_DISCONNECT_LEAVE, h1, h2, proto2);
	rv = SCardConnect(ctx2, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h2, &proto2);
	line("connect the other handle again", "rv %s protocol %lu", rvs(rv), (unsigned long)proto2);
	blocking("blocking SCardDisconnect, reset", BG_DISCONNECT_RESET, h1, h2, proto2);
	rv = SCardConnect(ctx2, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                  &h2, &proto2);
	line("connect the other handle once more", "rv %s protocol %lu", rvs(rv),
	     (unsigned long)proto2);
	{
		DWORD a1;
		line("reconnect after a resetting disconnect", "rv %s",
		     rvs(SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                        SCARD_LEAVE_CARD, &a1)));
	}

	/* Reset propagation. */
	DWORD active;
	line("reconnect reset", "rv %s",
	     rvs(SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_RESET_CARD, &active)));
	transmit_check("other handle after reset", h2, proto2, select, sizeof(select_mf), 300);
	transmit_check("other handle after reset, again", h2, proto2, select, sizeof(select_mf), 300);
	line("other handle reconnect", "rv %s",
	     rvs(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));
	transmit_check("other handle after reconnect", h2, proto2, select, sizeof(select_mf), 300);
	transmit_check("resetting handle", h1, proto1, select, sizeof(select_mf), 300);

	/* Removal propagation. */
	card_leaves();
	wait_for("card removed", SCARD_STATE_EMPTY, 5000);
	transmit_check("transmit after removal", h1, proto1, select, sizeof(select_mf), 300);
	status_outputs("status after removal", h1, 256, 40);
	present_with_atr = false;
	wait_for("card back", SCARD_STATE_PRESENT, 5000);
	line("insertion reported with its atr", "%s", present_with_atr ? "yes" : "no");
	transmit_check("old handle with the card back", h1, proto1, select, sizeof(select_mf), 300);
	line("old handle reconnect", "rv %s",
	     rvs(SCardReconnect(h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                        SCARD_LEAVE_CARD, &active)));
	transmit_check("after reconnect", h1, proto1, select, sizeof(select_mf), 300);

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
	transmit_check("transmit on a closed handle", h1, proto1, select, sizeof(select_mf), 300);
	status_outputs("status on a closed handle", h1, 256, 40);
	attrib_outputs("getattrib on a closed handle", h1, SCARD_ATTR_MAX_IFSD, false, 32);
	{
		BYTE out[16];
		DWORD ret = 0xA5A5A5A5u;
		rv = SCardControl(h1, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), &ret);
		line("control on a closed handle", "rv %s returned %lu", rvs(rv), (unsigned long)ret);
		DWORD a = 0xA5A5A5A5u;
		rv = SCardReconnect(h1, 42, 0, 42, &a);
		line("reconnect on a closed handle, bad values", "rv %s protocol 0x%lX", rvs(rv),
		     (unsigned long)a);
		line("end on a closed handle, bad disposition", "rv %s", rvs(SCardEndTransaction(h1, 42)));
		line("disconnect a closed handle, bad disposition", "rv %s", rvs(SCardDisconnect(h1, 42)));
	}
	line("disconnect other", "rv %s", rvs(SCardDisconnect(h2, SCARD_LEAVE_CARD)));

	/* Differences that need handles of their own. */
	{
		SCARDHANDLE hb;
		DWORD pa, pb;
		SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		             &obstacle, &pa);
		SCardConnect(ctx2, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		             &hb, &pb);
		waits_for("reconnect exclusive while another handle shares", BG_RECONNECT_EXCLUSIVE, hb,
		          drop_obstacle);
		SCardDisconnect(hb, SCARD_LEAVE_CARD);

		SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		             &obstacle, &pa);
		SCardConnect(ctx2, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		             &hb, &pb);
		/* SCardCancel on a context whose Begin waits; the transaction ends 300 ms later. */
		SCardBeginTransaction(obstacle);
		pthread_t t2;
		pthread_create(&t2, NULL, cancel_ctx2_later, NULL);
		struct bg b = { .op = BG_BEGIN, .h = hb };
		pthread_t t3;
		pthread_create(&t3, NULL, bg_run, &b);
		pthread_join(t2, NULL);
		usleep(300000);
		bool waited = !atomic_load(&b.done);
		end_obstacle();
		pthread_join(t3, NULL);
		line("cancel a blocked begin", "still waiting after the cancel %s rv %s",
		     waited ? "yes" : "no", rvs(b.rv));
		SCardDisconnect(obstacle, SCARD_LEAVE_CARD);
		SCardDisconnect(hb, SCARD_LEAVE_CARD);

		pid_t pid = fork();
		if (pid == 0) {
			alarm(5);
			_exit(SCardIsValidContext(ctx) == SCARD_S_SUCCESS ? 0 : 1);
		}
		int st = -1;
		waitpid(pid, &st, 0);
		line("fork, the parent's context in the child", "%s",
		     WIFEXITED(st) ? (WEXITSTATUS(st) == 0 ? "valid" : "invalid") : "child died");

		/* A null pointer pcsc-lite's client dereferences: in a child of its own. */
		pid = fork();
		if (pid == 0) {
			alarm(5);
			SCARDCONTEXT c;
			rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c);
			if (rv == SCARD_S_SUCCESS)
				rv = SCardListReaderGroups(c, NULL, NULL);
			line("list groups without its length", "rv %s", rvs(rv));
			_exit(0);
		}
		st = -1;
		waitpid(pid, &st, 0);
		if (!WIFEXITED(st))
			line("list groups without its length", "the call killed the program (signal %d)",
			     WIFSIGNALED(st) ? WTERMSIG(st) : -1);
	}
	line("release", "rv %s", rvs(SCardReleaseContext(ctx)));
	line("is valid after release", "rv %s", rvs(SCardIsValidContext(ctx)));
	line("release second", "rv %s", rvs(SCardReleaseContext(ctx2)));
	{
		SCARDHANDLE hh = 0xA5A5A5A5u;
		DWORD pp = 0xA5A5A5A5u;
		rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &hh, &pp);
		line("connect on a released context", "rv %s handle %lu protocol 0x%lX", rvs(rv),
		     (unsigned long)hh, (unsigned long)pp);
		line("status change on a released context, no entries", "rv %s",
		     rvs(SCardGetStatusChange(ctx, 0, NULL, 0)));
		DWORD l = 0xA5A5A5A5u;
		rv = SCardListReaders(ctx, NULL, NULL, &l);
		line("list readers on a released context", "rv %s len 0x%lX", rvs(rv), (unsigned long)l);
	}
	return 0;
}
