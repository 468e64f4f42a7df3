/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix on the PC/SC passthrough: Calais' pcsc backend on a private pcscd
 * with vpcd's two readers (tests/peers/with-peer runs this program inside it, with no
 * card of its own), the faulty card in reader 0 (tests/peers' vcard run as a child with
 * its fault options), a well-behaved card this test plays itself put in reader 1 while
 * reader 0 is stuck. Rows: a mute card at power-up, a card silent in mid-exchange (the
 * exchange limit), the card's process killed and pcscd killed in mid-exchange, the card
 * pulled in mid-transaction; each checks the code, the bound and the neighbour.
 *
 * The neighbour's bound is pcscd's, not FM_NEIGHBOUR_MS: pcscd learns of a vpcd card
 * only at its presence poll, every 400 ms (PCSCLITE_STATUS_POLL_RATE), and then reads
 * its ATR; Calais' watcher, blocked in pcscd's SCardGetStatusChange(), passes it on at
 * once. So an insertion is seen up to ~400 ms late with no fault at all; the rows check
 * that a stuck reader 0 adds nothing to that (PCSCD_NEIGHBOUR_MS). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <winscard.h>
#include <calais/calais.h>

#include "backends/backend-test.h"
#include "backends/peer-test.h"
#include "faults.h"
#include "vpcd-card.h"

#ifndef VCARD_PATH
#error "VCARD_PATH: the path of tests/peers' vcard executable"
#endif

#define R0 "Virtual PCD 00 00"
#define R1 "Virtual PCD 00 01"
/* pcscd's presence poll (400 ms) and its ATR read, with room for a loaded machine. */
#define PCSCD_NEIGHBOUR_MS 600
/* The exchange limit the silent-card row runs with (CALAIS_EXCHANGE_TIMEOUT_MS). */
#define LIMIT_MS 1000

static const uint8_t ATR[] = { 0x3B, 0x8E, 0x01, 0x43, 0x61, 0x6C, 0x61, 0x69, 0x73,
	                       0x54, 0x65, 0x73, 0x74, 0x43, 0x61, 0x72, 0x64, 0xB8 };
static const uint8_t SELECT[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };

static SCARDCONTEXT ctx;
static pid_t card = -1;

/* ---- the peer ------------------------------------------------------------------------- */

static int peer_port(void)
{
	const char *p = getenv("PEER_PORT");
	cr_assert_not_null(p, "PEER_PORT: run inside tests/peers/with-peer");
	return atoi(p);
}

/* The pid pcscd-peer recorded for the pcscd it started (PCSCD_PEER_PID in its env file). */
static pid_t pcscd_pid(void)
{
	char path[512], line[256];
	snprintf(path, sizeof(path), "%s/env", getenv("PEER_DIR"));
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "no %s", path);
	pid_t pid = -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "PCSCD_PEER_PID=", 15) == 0)
			pid = (pid_t)atoi(line + 15);
	fclose(f);
	cr_assert_gt(pid, 0, "no PCSCD_PEER_PID in %s", path);
	return pid;
}

/* ---- the faulty card ------------------------------------------------------------------- */

static void card_run(const char *fault, const char *arg)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", peer_port());
	const char *argv[] = { VCARD_PATH, "-P", p, "-t", "60", fault, arg, NULL };
	card = fork();
	cr_assert_neq(card, -1);
	if (card == 0) {
		execv(argv[0], (char **)argv);
		_exit(127);
	}
}

static void card_end(void)
{
	if (card <= 0)
		return;
	kill(card, SIGTERM);
	waitpid(card, NULL, 0);
	card = -1;
}

/* ---- the manager ----------------------------------------------------------------------- */

static DWORD state_now(const char *name)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	LONG rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	return rv == SCARD_S_SUCCESS ? rs.dwEventState : 0;
}

static bool wait_state(const char *name, DWORD bit, long ms)
{
	long until = fm_now_ms() + (long)(ms * fm_slow());
	while (!(state_now(name) & bit) && fm_now_ms() < until)
		usleep(10000);
	return (state_now(name) & bit) != 0;
}

/* The process's threads (Linux: /proc/self/task), to see a call the backend left
 * running at shutdown end: none of Calais' threads outlives calais_shutdown() but those. */
static int threads_now(void)
{
	DIR *d = opendir("/proc/self/task");
	cr_assert(d, "/proc/self/task: %s", strerror(errno));
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The threads this test program has without a manager running. */
static int threads_alone;

static void start(void)
{
	calais_shutdown();
	threads_alone = threads_now();
	/* A row that failed half-way may have left the peer stopped. */
	if (peer("status") != 0)
		cr_assert_eq(peer("start"), 0, "the pcscd peer does not start");
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "pcsc";
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	cr_assert(wait_state(R1, SCARD_STATE_EMPTY, 5000), "the service's readers");
}

static void stop(void)
{
	/* First the card: a service call left running on it then ends, and shutdown joins
	 * it. */
	card_end();
	SCardReleaseContext(ctx);
	calais_shutdown();
	unsetenv("CALAIS_EXCHANGE_TIMEOUT_MS");
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

/* The neighbour's card is shown within pcscd's own bound, then taken out again. */
static void assert_neighbour(const char *what)
{
	struct ncard nc = { .port = peer_port() + 1, .atr = ATR, .atr_len = sizeof(ATR),
	                  .fd = -1 };
	long lat = fm_neighbour_latency_ms(R1, nc_insert, &nc, 5000);
	cr_log_info("%s: neighbour's card shown after %ld ms", what, lat);
	cr_assert(lat >= 0, "%s: the neighbour's card was never shown", what);
	cr_assert_leq(lat, (long)(PCSCD_NEIGHBOUR_MS * fm_slow()),
	              "%s: the neighbour's card was shown after %ld ms", what, lat);
	nc_end(&nc);
	cr_assert(wait_state(R1, SCARD_STATE_EMPTY, 2000), "%s: the neighbour's card stayed",
	          what);
}

struct xfer_arg {
	SCARDHANDLE h;
};

static LONG call_select(void *arg)
{
	return select_on(((struct xfer_arg *)arg)->h);
}

/* ---- the rows -------------------------------------------------------------------------- */

TestSuite(faults_pcsc, .init = start, .fini = stop, .timeout = 120);

/* The reference: the neighbour's delay with nothing wrong anywhere. */
Test(faults_pcsc, neighbour_without_a_fault)
{
	assert_neighbour("no fault");
}

/* A card that connects and never answers GET ATR: pcscd's vpcd driver waits for it
 * without a bound of its own, so reader 0 never shows a card and a connection to it
 * fails at once; reader 1 keeps working. */
Test(faults_pcsc, mute_card_at_power_up)
{
	card_run("--mute-atr", NULL);
	usleep(600 * 1000); /* pcscd's poll has found it */
	long fault = fm_now_ms();
	SCARDHANDLE h;
	DWORD proto;
	LONG rv = SCardConnect(ctx, R0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto);
	long took = fm_now_ms() - fault;
	cr_log_info("connect to the mute card: 0x%lX after %ld ms", (unsigned long)rv, took);
	assert_rv(rv, SCARD_E_NO_SMARTCARD);
	cr_assert_leq(took, (long)(FM_END_MS * fm_slow()));
	assert_neighbour("mute card at power-up");
	DWORD st = state_now(R0);
	cr_assert(!(st & SCARD_STATE_PRESENT), "state 0x%lX", (unsigned long)st);
}

/* A card that stops answering in mid-exchange: pcscd waits for it for ever; the
 * passthrough's exchange ends at the exchange limit with SCARD_E_TIMEOUT, leaving the
 * service's call to end when the card goes (at the row's end). */
Test(faults_pcsc, card_silent_mid_exchange, .init = NULL)
{
	char lim[16];
	snprintf(lim, sizeof(lim), "%d", LIMIT_MS);
	setenv("CALAIS_EXCHANGE_TIMEOUT_MS", lim, 1);
	start();
	card_run("--silent-after", "1");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the card");
	struct xfer_arg x = { .h = connect_r0() };
	assert_rv(select_on(x.h), SCARD_S_SUCCESS);
	struct fm_call c;
	long fault = fm_now_ms();
	fm_call_start(&c, call_select, &x);
	assert_neighbour("card silent mid-exchange");
	fm_assert_call_ends(&c, SCARD_E_TIMEOUT, fault, LIMIT_MS + FM_END_MS,
	                    "exchange with a silent card");
	SCardDisconnect(x.h, SCARD_LEAVE_CARD);
}

/* A signal to a process while an exchange runs on reader 0 (in a transaction when
 * in_tx): the exchange ends with `want` within FM_END_MS. Returns the handle. */
static SCARDHANDLE signal_mid_exchange(pid_t pid, int sig, bool in_tx, LONG want,
                                       const char *what)
{
	struct xfer_arg x = { .h = connect_r0() };
	if (in_tx) {
		assert_rv(SCardBeginTransaction(x.h), SCARD_S_SUCCESS);
		assert_rv(select_on(x.h), SCARD_S_SUCCESS);
	}
	struct fm_call c;
	fm_call_start(&c, call_select, &x);
	assert_neighbour(what);
	long fault = fm_now_ms();
	cr_assert_eq(kill(pid, sig), 0);
	fm_assert_call_ends(&c, want, fault, FM_END_MS, what);
	cr_log_info("%s: ended after %ld ms", what, c.ended_ms - fault);
	return x.h;
}

/* The card's process dies in mid-exchange. pcscd answers the exchange at once, with
 * success and no byte (measured), and already knows the card is gone: a removed card. */
Test(faults_pcsc, peer_gone_mid_exchange)
{
	card_run("--silent-after", "0");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the card");
	SCARDHANDLE h = signal_mid_exchange(card, SIGKILL, false, SCARD_W_REMOVED_CARD,
	                                    "card killed mid-exchange");
	waitpid(card, NULL, 0);
	card = -1;
	cr_assert(wait_state(R0, SCARD_STATE_EMPTY, 2000), "the removal");
	assert_neighbour("card killed mid-exchange (after)");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* pcscd dies in mid-exchange: pcsc-lite's call ends at once (its socket closes or is
 * reset), the reader is unavailable, then gone with the service. */
Test(faults_pcsc, pcscd_gone_mid_exchange)
{
	card_run("--silent-after", "0");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the card");
	SCARDHANDLE h = signal_mid_exchange(pcscd_pid(), SIGKILL, false,
	                                    SCARD_E_READER_UNAVAILABLE, "pcscd killed mid-exchange");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	cr_assert_eq(peer("start"), 0, "the pcscd peer does not start again");
}

/* The card pulled (vcard's SIGUSR1 closes its connection) while a transaction is held
 * and an exchange runs: the exchange ends at once (as above), the reader shows the
 * removal at pcscd's next poll, the transaction's end says the card is gone. */
Test(faults_pcsc, card_pulled_mid_transaction)
{
	card_run("--silent-after", "1");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the card");
	SCARDHANDLE h = signal_mid_exchange(card, SIGUSR1, true, SCARD_W_REMOVED_CARD,
	                                    "card pulled mid-transaction");
	waitpid(card, NULL, 0);
	card = -1;
	cr_assert(wait_state(R0, SCARD_STATE_EMPTY, 2000), "the removal");
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_W_REMOVED_CARD);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* Shutdown with a card silent for good in the service: the exchange ends with
 * SCARD_E_NO_SERVICE at once, shutdown waits 1 s for the service's call and then leaves
 * it running; it ends by itself when the card goes. */
Test(faults_pcsc, shutdown_leaves_a_silent_exchange_behind)
{
	card_run("--silent-after", "0");
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, 5000), "the card");
	struct xfer_arg x = { .h = connect_r0() };
	struct fm_call c;
	fm_call_start(&c, call_select, &x);
	usleep(200 * 1000);
	long fault = fm_now_ms();
	calais_shutdown();
	long took = fm_now_ms() - fault;
	cr_log_info("shutdown with a silent card in the service: %ld ms", took);
	fm_assert_call_ends(&c, SCARD_E_NO_SERVICE, fault, FM_END_MS, "exchange at shutdown");
	/* The backend's 1 s for the service's call, then the rest of shutdown. */
	cr_assert_leq(took, (long)((1000 + FM_END_MS) * fm_slow()), "shutdown took %ld ms", took);
	cr_assert_gt(threads_now(), threads_alone, "no call was left running in the service");
	card_end();
	/* The call left behind returns, closes its connection and frees itself: its thread
	 * ends (and valgrind finds nothing of its connection at exit). */
	long until = fm_now_ms() + (long)(5000 * fm_slow());
	while (threads_now() > threads_alone && fm_now_ms() < until)
		usleep(10 * 1000);
	cr_assert_leq(threads_now(), threads_alone,
	              "the call left in the service still runs after its card went");
}
