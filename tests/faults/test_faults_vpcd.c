/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix on Calais' vpcd backend: two readers, the faulty card in reader 0
 * (tests/peers/vcard.c run as a child with its fault options), a well-behaved card that
 * this test plays itself put in reader 1 while reader 0 is stuck. Rows: a mute card at
 * power-up (also at start-up, and a peer that withholds its ATR in a loop), a card
 * silent in mid-exchange (the exchange limit), the card's process killed in mid-exchange,
 * the card pulled in mid-transaction. Each checks the code, the bound and the neighbour
 * (faults.h). vpcd has no WTX or time extension, and its readers are never unplugged. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <winscard.h>
#include <calais/calais.h>

#include "backends/backend-test.h"
#include "backends/ports-test.h"
#include "faults.h"
#include "vpcd-card.h"

#ifndef VCARD_PATH
#error "VCARD_PATH: the path of tests/peers' vcard executable"
#endif

#define R0 "Virtual PCD 00 00"
#define R1 "Virtual PCD 00 01"
/* The backend's bound for a card's ATR (ATR_TIMEOUT_MS in backends/vpcd/vpcd.c) and for
 * start-up's wait for connecting cards (STARTUP_GRACE_MS). */
#define ATR_BOUND_MS 5000
#define STARTUP_GRACE_MS 150
/* The exchange limit the silent-card row runs with (CALAIS_EXCHANGE_TIMEOUT_MS). */
#define LIMIT_MS 1000

static const uint8_t ATR[] = { 0x3B, 0x8E, 0x01, 0x43, 0x61, 0x6C, 0x61, 0x69, 0x73,
	                       0x54, 0x65, 0x73, 0x74, 0x43, 0x61, 0x72, 0x64, 0xB8 };
static const uint8_t SELECT[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };

static SCARDCONTEXT ctx;
static int port0; /* reader i listens on port0 + i */
static pid_t card = -1;

/* ---- the log: which vpcd lines came --------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned n_connected, n_no_atr;

static void on_log(enum calais_log_level level, const char *domain, const char *message,
                   void *user)
{
	(void)user;
	if (getenv("CALAIS_TEST_LOG"))
		fprintf(stderr, "[%d] %s: %s\n", (int)level, domain, message);
	if (strcmp(domain, "vpcd") != 0)
		return;
	pthread_mutex_lock(&log_lock);
	n_connected += strstr(message, R0 "\": card connected") != NULL;
	n_no_atr += strstr(message, "did not answer GET ATR") != NULL;
	pthread_mutex_unlock(&log_lock);
}

static unsigned count_of(unsigned *n)
{
	pthread_mutex_lock(&log_lock);
	unsigned v = *n;
	pthread_mutex_unlock(&log_lock);
	return v;
}

/* Waits up to ms (stretched) for the counter to reach want. */
static bool wait_count(unsigned *n, unsigned want, long ms)
{
	long until = fm_now_ms() + (long)(ms * fm_slow());
	while (count_of(n) < want && fm_now_ms() < until)
		usleep(5000);
	return count_of(n) >= want;
}

/* ---- ports, the manager, the faulty card --------------------------------------------- */

/* Two free ports in a row from 39300 on (test_vpcd_backend uses 36400 to 39199). */
static void pick_ports(void)
{
	port0 = bt_pick_ports(39300, 1200, 2);
}

/* The faulty card: vcard on reader 0 with its fault options (a NULL-terminated list);
 * with --retry when retry is non-zero (an int: va_start needs an unpromoted type). */
static void card_run(int retry, ...)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", port0);
	const char *argv[16] = { VCARD_PATH, "-P", p, "-t", "60" };
	int n = 5;
	if (retry)
		argv[n++] = "--retry";
	va_list ap;
	va_start(ap, retry);
	for (const char *o; n < 15 && (o = va_arg(ap, const char *));)
		argv[n++] = o;
	va_end(ap);
	argv[n] = NULL;
	card = fork();
	cr_assert_neq(card, -1);
	if (card == 0) {
		execv(argv[0], (char **)argv);
		_exit(127);
	}
}

static void card_signal(int sig)
{
	if (card > 0)
		kill(card, sig);
}

/* Ends the card (SIGTERM unless it was signalled already) and reaps it. */
static void card_end(void)
{
	if (card <= 0)
		return;
	kill(card, SIGTERM);
	waitpid(card, NULL, 0);
	card = -1;
}

/* Starts the manager on two fresh ports; a card with `fault` (NULL: none) connecting
 * (retrying) from before the start when early. Returns how long calais_start() took. */
static long start_with(const char *early_fault)
{
	calais_shutdown();
	pick_ports();
	if (early_fault) {
		card_run(1, early_fault, NULL);
		usleep(100 * 1000); /* retrying its connection by now */
	}
	char v[64];
	snprintf(v, sizeof(v), "127.0.0.1:%d", port0);
	setenv("CALAIS_VPCD", v, 1);
	setenv("CALAIS_VPCD_READERS", "2", 1);
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "vpcd";
	cfg.log_level = getenv("CALAIS_TEST_LOG") ? CALAIS_LOG_DEBUG : CALAIS_LOG_INFO;
	cfg.log_level_set = true;
	cfg.log_cb = on_log;
	cfg.power_down_delay_ms = UINT32_MAX;
	pthread_mutex_lock(&log_lock);
	n_connected = n_no_atr = 0;
	pthread_mutex_unlock(&log_lock);
	long t0 = fm_now_ms();
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	long took = fm_now_ms() - t0;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	return took;
}

static void start(void)
{
	start_with(NULL);
}

static void stop(void)
{
	card_end();
	SCardReleaseContext(ctx);
	calais_shutdown();
	calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
	unsetenv("CALAIS_EXCHANGE_TIMEOUT_MS");
}

static DWORD state_now(const char *name)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	return rs.dwEventState;
}

static bool wait_present(const char *name, long ms)
{
	long until = fm_now_ms() + (long)(ms * fm_slow());
	while (!(state_now(name) & SCARD_STATE_PRESENT) && fm_now_ms() < until)
		usleep(5000);
	return (state_now(name) & SCARD_STATE_PRESENT) != 0;
}

static bool wait_empty(const char *name, long ms)
{
	long until = fm_now_ms() + (long)(ms * fm_slow());
	while (!(state_now(name) & SCARD_STATE_EMPTY) && fm_now_ms() < until)
		usleep(5000);
	return (state_now(name) & SCARD_STATE_EMPTY) != 0;
}

static SCARDHANDLE connect_r0(void)
{
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, R0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_S_SUCCESS);
	return h;
}

static LONG select_on(SCARDHANDLE h)
{
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	return SCardTransmit(h, SCARD_PCI_T1, SELECT, sizeof(SELECT), NULL, resp, &rl);
}

/* ---- the neighbour ---------------------------------------------------------------------- */

/* The neighbour's card (vpcd-card.h) is shown within FM_NEIGHBOUR_MS, then taken out. */
static void assert_neighbour(const char *what)
{
	struct ncard nc = { .port = port0 + 1, .atr = ATR, .atr_len = sizeof(ATR), .fd = -1 };
	fm_assert_neighbour_sees(R1, nc_insert, &nc, what);
	nc_end(&nc);
	cr_assert(wait_empty(R1, 2000), "%s: the neighbour's card stayed", what);
}

/* ---- calls run on their own thread ----------------------------------------------------- */

struct xfer_arg {
	SCARDHANDLE h;
};

static LONG call_select(void *arg)
{
	return select_on(((struct xfer_arg *)arg)->h);
}

static LONG call_connect_r0(void *arg)
{
	(void)arg;
	SCARDHANDLE h;
	DWORD proto;
	LONG rv = SCardConnect(ctx, R0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto);
	if (rv == SCARD_S_SUCCESS)
		SCardDisconnect(h, SCARD_LEAVE_CARD);
	return rv;
}

/* ---- the rows -------------------------------------------------------------------------- */

TestSuite(faults_vpcd, .fini = stop, .timeout = 120);

/* A card that connects and never answers GET ATR: it is never shown (the reader stays
 * empty: SCardConnect() answers at once), it is dropped after the ATR bound, and the
 * other reader shows its card meanwhile. */
Test(faults_vpcd, mute_card_at_power_up)
{
	start();
	card_run(0, "--mute-atr", NULL);
	cr_assert(wait_count(&n_connected, 1, 5000), "the mute card never connected");
	long fault = fm_now_ms();
	struct fm_call c;
	fm_call_start(&c, call_connect_r0, NULL);
	fm_assert_call_ends(&c, SCARD_E_NO_SMARTCARD, fault, FM_END_MS, "connect to the mute card");
	assert_neighbour("mute card at power-up");
	cr_assert(wait_count(&n_no_atr, 1, ATR_BOUND_MS + FM_END_MS), "the mute card was kept");
	long took = fm_now_ms() - fault;
	cr_assert_leq(took, (long)((ATR_BOUND_MS + FM_END_MS) * fm_slow()), "dropped after %ld ms",
	              took);
	DWORD st = state_now(R0);
	cr_assert(st & SCARD_STATE_EMPTY, "state 0x%lX", (unsigned long)st);
	cr_assert_eq(st >> 16, 0, "card events on the mute reader: %lu", (unsigned long)(st >> 16));
}

/* The same card connecting while the manager starts: start-up waits for connecting cards
 * only STARTUP_GRACE_MS, not for this one's ATR. */
Test(faults_vpcd, mute_card_does_not_hold_start_up)
{
	long took = start_with("--mute-atr");
	cr_log_info("start-up with a mute card connecting: %ld ms", took);
	cr_assert_leq(took, (long)((STARTUP_GRACE_MS + FM_NEIGHBOUR_MS) * fm_slow()),
	              "start-up took %ld ms", took);
	cr_assert(wait_count(&n_connected, 1, 1000), "the mute card never connected");
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	assert_neighbour("mute card at start-up");
}

/* A peer that connects, withholds its ATR for a second after the request, drops and
 * reconnects at once, in a loop: nothing of it reaches the core, and the other reader
 * keeps working meanwhile. */
Test(faults_vpcd, peer_withholding_its_atr_in_a_loop)
{
	start();
	card_run(1, "--reconnect-mute", "--withhold-ms", "1000", NULL);
	cr_assert(wait_count(&n_connected, 1, 5000), "the peer never connected");
	assert_neighbour("peer withholding its ATR in a loop");
	cr_assert(wait_count(&n_connected, 3, 5000), "the peer is not looping");
	assert_neighbour("peer withholding its ATR in a loop, later");
	DWORD st = state_now(R0);
	cr_assert(st & SCARD_STATE_EMPTY, "state 0x%lX", (unsigned long)st);
	cr_assert_eq(st >> 16, 0, "card events on the looping reader: %lu",
	             (unsigned long)(st >> 16));
}

/* A card that stops answering in mid-exchange: the exchange ends at the exchange limit
 * with SCARD_E_TIMEOUT (the card is dropped: its stream is out of step). */
Test(faults_vpcd, card_silent_mid_exchange)
{
	char lim[16];
	snprintf(lim, sizeof(lim), "%d", LIMIT_MS);
	setenv("CALAIS_EXCHANGE_TIMEOUT_MS", lim, 1);
	start();
	card_run(0, "--silent-after", "1", NULL);
	cr_assert(wait_present(R0, 5000), "the card");
	struct xfer_arg x = { .h = connect_r0() };
	assert_rv(select_on(x.h), SCARD_S_SUCCESS);
	struct fm_call c;
	long fault = fm_now_ms();
	fm_call_start(&c, call_select, &x);
	assert_neighbour("card silent mid-exchange");
	fm_assert_call_ends(&c, SCARD_E_TIMEOUT, fault, LIMIT_MS + FM_END_MS,
	                    "exchange with a silent card");
	cr_assert_geq(c.ended_ms - fault, LIMIT_MS - 50, "ended after %ld ms, before the limit",
	              c.ended_ms - fault);
	SCardDisconnect(x.h, SCARD_LEAVE_CARD);
}

/* A signal to the card while an exchange runs on it (in a transaction when in_tx): the
 * exchange ends with `want` within FM_END_MS; the neighbour works before and after. */
static SCARDHANDLE signal_mid_exchange(int sig, bool in_tx, LONG want, const char *what)
{
	card_run(0, "--silent-after", in_tx ? "1" : "0", NULL);
	cr_assert(wait_present(R0, 5000), "the card");
	struct xfer_arg x = { .h = connect_r0() };
	if (in_tx) {
		assert_rv(SCardBeginTransaction(x.h), SCARD_S_SUCCESS);
		assert_rv(select_on(x.h), SCARD_S_SUCCESS);
	}
	struct fm_call c;
	fm_call_start(&c, call_select, &x);
	assert_neighbour(what);
	long fault = fm_now_ms();
	card_signal(sig);
	fm_assert_call_ends(&c, want, fault, FM_END_MS, what);
	waitpid(card, NULL, 0);
	card = -1;
	assert_neighbour(what);
	return x.h;
}

/* The card's process dies in mid-exchange: the exchange ends at once with
 * SCARD_W_REMOVED_CARD. */
Test(faults_vpcd, peer_gone_mid_exchange)
{
	start();
	SCARDHANDLE h = signal_mid_exchange(SIGKILL, false, SCARD_W_REMOVED_CARD,
	                                    "peer gone mid-exchange");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* The card pulled (vcard's SIGUSR1 closes its connection) while a transaction is held
 * and an exchange runs: the exchange ends with SCARD_W_REMOVED_CARD within the bound, the
 * transaction's end says the card is gone, the reader is empty. */
Test(faults_vpcd, card_pulled_mid_transaction)
{
	start();
	SCARDHANDLE h = signal_mid_exchange(SIGUSR1, true, SCARD_W_REMOVED_CARD,
	                                    "card pulled mid-transaction");
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_W_REMOVED_CARD);
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}
