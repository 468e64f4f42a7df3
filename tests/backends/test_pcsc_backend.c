/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC passthrough backend against the real thing: a private pcscd with vsmartcard's
 * vpcd readers and our virtual card (tests/peers/, started by with-peer around this
 * program). Listing, connecting, transmitting, attributes, card movement seen by a
 * waiter, transactions and exclusive connections holding off another client of the
 * service (pcsc-lite's own library, loaded in this same process), pcscd absent at
 * start-up, pcscd killed and restarted mid-use, and refusing to load Calais itself. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

#include "backend-test.h"
#include "peer-test.h"

static const uint8_t ATR[] = { 0x3B, 0x8E, 0x01, 0x43, 0x61, 0x6C, 0x61, 0x69, 0x73,
	                       0x54, 0x65, 0x73, 0x74, 0x43, 0x61, 0x72, 0x64, 0xB8 };
#define R0 "Virtual PCD 00 00"
#define R1 "Virtual PCD 00 01"

static SCARDCONTEXT ctx;


static void remove_card(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/card.pid", getenv("PEER_DIR"));
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "no card pid file");
	int pid = 0;
	cr_assert_eq(fscanf(f, "%d", &pid), 1);
	fclose(f);
	cr_assert_eq(kill(pid, SIGUSR1), 0);
}

static unsigned count_readers(void)
{
	char buf[2048];
	DWORD len = sizeof(buf);
	LONG rv = SCardListReaders(ctx, NULL, buf, &len);
	if (rv != SCARD_S_SUCCESS)
		return 0;
	unsigned n = 0;
	for (const char *p = buf; *p; p += strlen(p) + 1)
		n++;
	return n;
}

/* Waits until the reader shows `bit` (up to ms). */
static bool wait_state(const char *name, DWORD bit, long ms)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	long until = bt_now_ms() + ms;
	while (bt_now_ms() < until) {
		LONG rv = SCardGetStatusChange(ctx, 200, &rs, 1);
		if (rv == SCARD_S_SUCCESS && (rs.dwEventState & bit))
			return true;
		if (rv == SCARD_S_SUCCESS)
			rs.dwCurrentState = rs.dwEventState;
		else
			usleep(50000);
	}
	return false;
}

static bool wait_readers(unsigned n, long ms)
{
	long until = bt_now_ms() + ms;
	while (count_readers() != n && bt_now_ms() < until)
		usleep(20000);
	return count_readers() == n;
}

static void start(void)
{
	calais_shutdown();
	/* The peer may have been left stopped by a test that failed half-way. */
	if (peer("status") != 0)
		peer("start");
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "pcsc";
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	cr_assert(wait_readers(2, 5000), "the service's two readers");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the virtual card");
}

static void stop(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
}

static SCARDHANDLE connect_r0(DWORD share, DWORD *proto)
{
	SCARDHANDLE h;
	assert_rv(SCardConnect(ctx, R0, share, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, proto),
	          SCARD_S_SUCCESS);
	return h;
}

static LONG xmit(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *resp, DWORD *len)
{
	return SCardTransmit(h, SCARD_PCI_T1, apdu, (DWORD)n, NULL, resp, len);
}

TestSuite(pcsc, .init = start, .fini = stop, .timeout = 60);

Test(pcsc, readers_keep_the_service_names)
{
	char buf[1024];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(ctx, NULL, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq(buf, R0);
	cr_assert_str_eq(buf + strlen(R0) + 1, R1);
}

Test(pcsc, connect_status_transmit)
{
	DWORD proto;
	SCARDHANDLE h = connect_r0(SCARD_SHARE_SHARED, &proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	char name[256];
	uint8_t atr[40];
	DWORD nl = sizeof(name), state, p, al = sizeof(atr);
	assert_rv(SCardStatus(h, name, &nl, &state, &p, atr, &al), SCARD_S_SUCCESS);
	cr_assert_str_eq(name, R0);
	cr_assert(al == sizeof(ATR) && memcmp(atr, ATR, al) == 0);

	uint8_t resp[300];
	DWORD rl = sizeof(resp);
	const uint8_t select[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
	assert_rv(xmit(h, select, sizeof(select), resp, &rl), SCARD_S_SUCCESS);
	cr_assert(rl == 2 && resp[0] == 0x90 && resp[1] == 0x00);

	uint8_t echo[5 + 200 + 1] = { 0x80, 0xEE, 0x00, 0x00, 200 };
	for (int i = 0; i < 200; i++)
		echo[5 + i] = (uint8_t)(i * 5);
	rl = sizeof(resp);
	assert_rv(xmit(h, echo, sizeof(echo), resp, &rl), SCARD_S_SUCCESS);
	cr_assert(rl == 202 && memcmp(resp, echo + 5, 200) == 0);

	const uint8_t source[] = { 0x80, 0xEF, 0x00, 0xFF, 0x00 };
	rl = sizeof(resp);
	assert_rv(xmit(h, source, sizeof(source), resp, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 257, "255 bytes and the SW");
	for (int i = 0; i < 255; i++)
		cr_assert_eq(resp[i], (uint8_t)i);
	rl = 100; /* too small: the service's answer */
	assert_rv(xmit(h, source, sizeof(source), resp, &rl), SCARD_E_INSUFFICIENT_BUFFER);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(pcsc, attributes)
{
	DWORD proto;
	SCARDHANDLE h = connect_r0(SCARD_SHARE_SHARED, &proto);
	uint8_t v[300];
	DWORD vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == sizeof(ATR) && memcmp(v, ATR, vl) == 0);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_FRIENDLY_NAME, v, &vl), SCARD_S_SUCCESS);
	cr_assert_str_eq((char *)v, R0);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_CURRENT_PROTOCOL_TYPE, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == 4 && *(uint32_t *)v == SCARD_PROTOCOL_T1, "4 bytes, little-endian");
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(pcsc, card_removal_and_insertion_reach_a_waiter)
{
	SCARD_READERSTATE rs = { .szReader = R0, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	rs.dwCurrentState = rs.dwEventState;
	long t0 = bt_now_ms();
	remove_card();
	assert_rv(SCardGetStatusChange(ctx, 5000, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_log_info("removal seen after %ld ms", bt_now_ms() - t0);
	rs.dwCurrentState = rs.dwEventState;
	assert_rv(SCardGetStatusChange(ctx, 5000, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	cr_assert(rs.cbAtr == sizeof(ATR) && memcmp(rs.rgbAtr, ATR, rs.cbAtr) == 0);
}

/* ---- another client of the service, in this process ------------------------------- */

struct other {
	void *lib;
	LONG (*establish)(DWORD, LPCVOID, LPCVOID, LPSCARDCONTEXT);
	LONG (*release)(SCARDCONTEXT);
	LONG (*connect)(SCARDCONTEXT, LPCSTR, DWORD, DWORD, LPSCARDHANDLE, LPDWORD);
	LONG (*disconnect)(SCARDHANDLE, DWORD);
	LONG (*begin)(SCARDHANDLE);
	LONG (*end)(SCARDHANDLE, DWORD);
	const char *(*stringify)(LONG);
	SCARDCONTEXT c;
	SCARDHANDLE h;
	LONG begin_rv;
	long begin_done_ms;
};

static void other_open(struct other *o)
{
	/* pcsc-lite's own library, loaded next to Calais' SCard* (which must stay ours). */
	o->lib = dlopen("libpcsclite.so.1", RTLD_NOW | RTLD_LOCAL);
	cr_assert_not_null(o->lib, "%s", dlerror());
	*(void **)&o->establish = dlsym(o->lib, "SCardEstablishContext");
	*(void **)&o->release = dlsym(o->lib, "SCardReleaseContext");
	*(void **)&o->connect = dlsym(o->lib, "SCardConnect");
	*(void **)&o->disconnect = dlsym(o->lib, "SCardDisconnect");
	*(void **)&o->begin = dlsym(o->lib, "SCardBeginTransaction");
	*(void **)&o->end = dlsym(o->lib, "SCardEndTransaction");
	*(void **)&o->stringify = dlsym(o->lib, "pcsc_stringify_error");
	cr_assert(o->establish && o->connect && o->begin && o->end && o->stringify);
	cr_assert(o->establish != SCardEstablishContext, "pcsc-lite's own, not ours");
	assert_rv(o->establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &o->c), SCARD_S_SUCCESS);
	DWORD proto;
	assert_rv(o->connect(o->c, R0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &o->h, &proto),
	          SCARD_S_SUCCESS);
}

static void other_close(struct other *o)
{
	o->disconnect(o->h, SCARD_LEAVE_CARD);
	o->release(o->c);
	dlclose(o->lib);
}

static void *other_begin(void *arg)
{
	struct other *o = arg;
	o->begin_rv = o->begin(o->h);
	o->begin_done_ms = bt_now_ms();
	if (o->begin_rv == SCARD_S_SUCCESS)
		o->end(o->h, SCARD_LEAVE_CARD);
	return NULL;
}

/* The other client's BeginTransaction runs while ours holds; it must wait until
 * release() and no longer. */
static void held_off(struct other *o, SCARDHANDLE mine, void (*release)(SCARDHANDLE))
{
	pthread_t t;
	o->begin_done_ms = 0;
	cr_assert_eq(pthread_create(&t, NULL, other_begin, o), 0);
	usleep(500000);
	cr_assert_eq(__atomic_load_n(&o->begin_done_ms, __ATOMIC_SEQ_CST), 0,
	             "the other client got in while we held the card");
	long released = bt_now_ms();
	release(mine);
	pthread_join(t, NULL);
	assert_rv(o->begin_rv, SCARD_S_SUCCESS);
	long late = o->begin_done_ms - released;
	cr_assert_lt(late, 2000, "the other client waited %ld ms after the release", late);
	cr_log_info("the other client got the card %ld ms after the release", late);
}

static void end_tx(SCARDHANDLE h)
{
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

static void disconnect(SCARDHANDLE h)
{
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(pcsc, transaction_holds_off_other_service_clients)
{
	struct other o;
	other_open(&o);
	/* Our SCard* are Calais', the library's its own. */
	cr_assert_eq(strncmp(pcsc_stringify_error((LONG)0x43414C53), "Calais", 6), 0);
	cr_assert_neq(strncmp(o.stringify((LONG)0x43414C53), "Calais", 6), 0);
	DWORD proto;
	SCARDHANDLE h = connect_r0(SCARD_SHARE_SHARED, &proto);
	assert_rv(SCardBeginTransaction(h), SCARD_S_SUCCESS);
	uint8_t resp[8];
	DWORD rl = sizeof(resp);
	const uint8_t select[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
	assert_rv(xmit(h, select, sizeof(select), resp, &rl), SCARD_S_SUCCESS);
	held_off(&o, h, end_tx);
	/* Without a transaction, sharing is back to normal. */
	other_begin(&o);
	assert_rv(o.begin_rv, SCARD_S_SUCCESS);
	disconnect(h);
	other_close(&o);
}

Test(pcsc, exclusive_connection_holds_off_other_service_clients)
{
	struct other o;
	other_open(&o);
	DWORD proto;
	SCARDHANDLE h = connect_r0(SCARD_SHARE_EXCLUSIVE, &proto);
	held_off(&o, h, disconnect);
	other_close(&o);
}

/* Starts anew with the passthrough backend on `library` (NULL: the platform's); returns
 * how long start-up took, in ms. */
static long restart_with(const char *library)
{
	stop();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "pcsc";
	cfg.pcsc_library = library;
	long t0 = bt_now_ms();
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	long took = bt_now_ms() - t0;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	return took;
}

Test(pcsc, pcscd_killed_and_restarted_mid_use)
{
	DWORD proto;
	SCARDHANDLE h = connect_r0(SCARD_SHARE_SHARED, &proto);
	SCARD_READERSTATE pnp = { .szReader = "\\\\?PnP?\\Notification" };
	LONG rv0 = SCardGetStatusChange(ctx, 0, &pnp, 1);
	cr_assert(rv0 == SCARD_S_SUCCESS || rv0 == SCARD_E_TIMEOUT);
	pnp.dwCurrentState = pnp.dwEventState;
	cr_assert_eq(peer("restart"), 0);
	/* The readers went away (the waiter is told), then came back. */
	assert_rv(SCardGetStatusChange(ctx, 10000, &pnp, 1), SCARD_S_SUCCESS);
	uint8_t resp[8];
	DWORD rl = sizeof(resp);
	const uint8_t select[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
	LONG rv = xmit(h, select, sizeof(select), resp, &rl);
	cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_W_REMOVED_CARD,
	          "old handle: 0x%lX", (unsigned long)rv);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	cr_assert(wait_readers(2, 10000), "the readers come back with the service");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 10000), "and the card");
	h = connect_r0(SCARD_SHARE_SHARED, &proto);
	rl = sizeof(resp);
	assert_rv(xmit(h, select, sizeof(select), resp, &rl), SCARD_S_SUCCESS);
	disconnect(h);
}

Test(pcsc, pcscd_absent_at_startup)
{
	cr_assert_eq(peer("stop"), 0);
	long took = restart_with(NULL);
	cr_assert_lt(took, 1000, "start-up took %ld ms without pcscd", took);
	cr_assert_eq(count_readers(), 0);
	cr_assert_eq(peer("start"), 0);
	cr_assert(wait_readers(2, 10000), "readers once pcscd is there");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 10000));
}

Test(pcsc, refuses_to_load_calais_itself)
{
	restart_with(CALAIS_FAKE_OTHER_CALAIS);
	usleep(300000);
	cr_assert_eq(count_readers(), 0, "no readers through another Calais");
}

Test(pcsc, missing_library_gives_no_readers)
{
	cr_assert_lt(restart_with("/nonexistent/libpcsclite.so.1"), 1000);
	cr_assert_eq(count_readers(), 0);
}
