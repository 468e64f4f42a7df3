/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix's serial row: a faulty reader and a neighbour on one manager, both
 * simulated on pseudo-terminals (tests/serial/). The faulty one is a GemPC Twin
 * (gemtwin-sim, suite faults_gemtwin) or a Phoenix direct UART reader (phoenix-sim,
 * suite faults_phoenix); the neighbour is always a GemPC Twin with an empty slot, polled
 * by the core. Faults: mute card at power-up, card silent in mid-exchange (the card's
 * HANG command), T=1 WTX storm (--wtx-storm), port gone in mid-exchange (the simulator
 * exits: its pty closes and its link goes), card pulled in mid-transaction. Each checks
 * the call's code, its bound, and that the neighbour's insertion is seen within 50 ms
 * while the faulty reader is stuck (faults.h). And calais_shutdown() in mid-exchange:
 * cancel() ends the port's wait. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <winscard.h>
#include <calais/calais.h>

#include "../backends/backend-test.h"
#include "faults.h"

/* The exchange limit the core applies (CALAIS_EXCHANGE_TIMEOUT_MS): short, so a card
 * that stays silent ends its exchange by it. */
#define LIMIT_MS 2000
/* A Phoenix reader's card-detect line, read from the file phoenix-sim keeps. */
extern LONG (*calais__phoenix_detect_hook)(const char *path, bool *line_high);

struct sim {
	pid_t pid;
	char pty[256];
	char reader[MAX_READERNAME];
};

static struct sim faulty, neighbour;
static SCARDCONTEXT ctx;
static char state_file[128];

static void sim_start(struct sim *s, const char *exe, const char *const *args)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	s->pid = fork();
	cr_assert_neq(s->pid, -1);
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* ends with us, even on a failed assertion */
		dup2(p[1], 1);
		close(p[0]);
		const char *argv[16] = { exe };
		size_t n = 1;
		for (; args && args[n - 1] && n < 15; n++)
			argv[n] = args[n - 1];
		argv[n] = NULL;
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	FILE *f = fdopen(p[0], "r");
	char line[256] = "";
	while (fgets(line, sizeof(line), f) && strncmp(line, "PTY ", 4) != 0)
		;
	fclose(f);
	cr_assert_eq(strncmp(line, "PTY ", 4), 0, "the simulator printed no pty");
	snprintf(s->pty, sizeof(s->pty), "%s", line + 4);
	s->pty[strcspn(s->pty, "\n")] = 0;
}

static void sim_stop(struct sim *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = -1;
}

static LONG detect_from_file(const char *path, bool *line_high)
{
	(void)path;
	FILE *f = fopen(state_file, "r");
	if (!f)
		return SCARD_F_COMM_ERROR;
	int c = fgetc(f);
	fclose(f);
	*line_high = c == '1';
	return SCARD_S_SUCCESS;
}

/* The listed reader whose name holds the pty's path. */
static void find_reader(struct sim *s)
{
	char list[4096];
	DWORD len = sizeof(list);
	assert_rv(SCardListReaders(ctx, NULL, list, &len), SCARD_S_SUCCESS);
	for (const char *r = list; *r; r += strlen(r) + 1) {
		if (strstr(r, s->pty)) {
			snprintf(s->reader, sizeof(s->reader), "%s", r);
			return;
		}
	}
	cr_assert_fail("no reader for %s", s->pty);
}

/* The faulty simulator (exe, args), the neighbour with an empty slot, and Calais on both
 * (the faulty reader declared as `proto`). */
static void setup(const char *exe, const char *proto, const char *const *args)
{
	sim_start(&faulty, exe, args);
	sim_start(&neighbour, GEMTWIN_SIM,
	          (const char *const[]){ "--card", "t1", "--absent", "--async-notify", NULL });
	char decl[600];
	snprintf(decl, sizeof(decl), "%s:%s,%s:gemtwin", faulty.pty, proto, neighbour.pty);
	setenv("CALAIS_EXCHANGE_TIMEOUT_MS", "2000", 1);
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "serial";
	cfg.serial_readers = decl;
	cfg.poll_interval_ms = 10; /* the neighbour's insertion is seen by a poll */
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	find_reader(&faulty);
	find_reader(&neighbour);
}

static void setup_gemtwin(const char *const *args)
{
	setup(GEMTWIN_SIM, "gemtwin", args);
}

/* phoenix-sim with a detect line on CTS (the simulator's state file). */
static void setup_phoenix(const char *const *args)
{
	snprintf(state_file, sizeof(state_file), "/tmp/calais-faults-phoenix-%d", (int)getpid());
	const char *argv[16];
	size_t n = 0;
	argv[n++] = "--state-file";
	argv[n++] = state_file;
	for (; args[n - 2] && n < 15; n++)
		argv[n] = args[n - 2];
	argv[n] = NULL;
	calais__phoenix_detect_hook = detect_from_file;
	setup(PHOENIX_SIM, "phoenix:cts", argv);
}

static void fini(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	sim_stop(&faulty);
	sim_stop(&neighbour);
	calais__phoenix_detect_hook = NULL;
	unsetenv("CALAIS_EXCHANGE_TIMEOUT_MS");
}

static void insert_neighbour(void *arg)
{
	(void)arg;
	kill(neighbour.pid, SIGUSR2);
}

static void neighbour_sees(const char *what)
{
	fm_assert_neighbour_sees(neighbour.reader, insert_neighbour, NULL, what);
}

/* ---- the calls run on their own thread ------------------------------------------------ */

static SCARDHANDLE card;
static DWORD proto;

static LONG connect_faulty(void *arg)
{
	(void)arg;
	return SCardConnect(ctx, faulty.reader, SCARD_SHARE_SHARED,
	                    SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &card, &proto);
}

static LONG transmit(void *arg)
{
	const uint8_t *apdu = arg;
	uint8_t resp[300];
	DWORD len = sizeof(resp);
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	return SCardTransmit(card, pci, apdu, 4, NULL, resp, &len);
}

static uint8_t HANG[] = { 0x80, 0xE6, 0x00, 0x00 };
static uint8_t WAIT[] = { 0x80, 0xE5, 0x00, 0x00 };

static void connect_card(void)
{
	/* The card is powered at insertion; wait for it, then connect. */
	SCARD_READERSTATE rs = { .szReader = faulty.reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	long until = fm_now_ms() + 5000;
	while (fm_now_ms() < until) {
		SCardGetStatusChange(ctx, 100, &rs, 1);
		if (rs.dwEventState & SCARD_STATE_PRESENT)
			break;
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	}
	assert_rv(connect_faulty(NULL), SCARD_S_SUCCESS);
}

/* ---- the rows ------------------------------------------------------------------------ */

/* A mute card at power-up: the connect ends with the power-up's bound, the neighbour
 * meanwhile unaffected. */
static void mute_at_power_up(LONG want, long bound_ms)
{
	struct fm_call c;
	fm_call_start(&c, connect_faulty, NULL);
	neighbour_sees("mute card at power-up");
	fm_assert_call_ends(&c, want, c.started_ms, bound_ms, "connect to a mute card");
}

/* A card silent in mid-exchange: ends at the exchange limit. */
static void silent_mid_exchange(void)
{
	connect_card();
	struct fm_call c;
	fm_call_start(&c, transmit, HANG);
	neighbour_sees("card silent in mid-exchange");
	fm_assert_call_ends(&c, SCARD_E_TIMEOUT, c.started_ms, LIMIT_MS + FM_END_MS,
	                    "exchange with a silent card");
}

/* A T=1 card that keeps asking S(WTX): the storm is counted, or stopped by the
 * exchange limit, whichever comes first. */
static void wtx_storm(void)
{
	connect_card();
	cr_assert_eq(proto, SCARD_PROTOCOL_T1);
	struct fm_call c;
	fm_call_start(&c, transmit, WAIT);
	neighbour_sees("WTX storm");
	fm_assert_call_ends(&c, SCARD_F_COMM_ERROR, c.started_ms, LIMIT_MS + FM_END_MS,
	                    "exchange in a WTX storm");
}

/* A fault while an exchange waits on a silent card (HANG): the exchange ends with
 * `want` within FM_END_MS of the fault, and (check_neighbour) the neighbour still sees an
 * insertion. */
static void fault_in_exchange(void (*fault)(void), LONG want, bool check_neighbour,
                              const char *what)
{
	struct fm_call c;
	fm_call_start(&c, transmit, HANG);
	struct timespec ts = { 0, 200 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	long at = fm_now_ms();
	fault();
	fm_assert_call_ends(&c, want, at, FM_END_MS, what);
	if (check_neighbour)
		neighbour_sees(what);
}

static void port_goes(void)
{
	sim_stop(&faulty); /* the simulator exits: its pty closes, its link goes */
}

static void card_goes(void)
{
	kill(faulty.pid, SIGUSR1);
}

static void manager_stops(void)
{
	calais_shutdown();
}

static void port_gone_mid_exchange(void)
{
	connect_card();
	fault_in_exchange(port_goes, SCARD_E_READER_UNAVAILABLE, true, "port gone in mid-exchange");
}

static void card_pulled_mid_transaction(void)
{
	connect_card();
	assert_rv(SCardBeginTransaction(card), SCARD_S_SUCCESS);
	fault_in_exchange(card_goes, SCARD_W_REMOVED_CARD, true, "card pulled in mid-transaction");
	SCardEndTransaction(card, SCARD_LEAVE_CARD);
}

/* calais_shutdown() while the card is silent: cancel() reaches the port's wait long
 * before the exchange limit would. */
static void shutdown_mid_exchange(void)
{
	connect_card();
	fault_in_exchange(manager_stops, SCARD_E_NO_SERVICE, false, "shutdown in mid-exchange");
}

/* ---- GemPC Twin ------------------------------------------------------------------------ */

TestSuite(faults_gemtwin, .fini = fini, .timeout = 60);

Test(faults_gemtwin, mute_card_at_power_up)
{
	/* The reader never answers IccPowerOn: the CCID wait (3 s) and the abort bound it. */
	setup_gemtwin((const char *const[]){ "--card", "t1", "--mute-power-on", NULL });
	mute_at_power_up(SCARD_W_UNRESPONSIVE_CARD, 11000);
}

Test(faults_gemtwin, card_silent_mid_exchange)
{
	setup_gemtwin((const char *const[]){ "--card", "t1", NULL });
	silent_mid_exchange();
}

Test(faults_gemtwin, wtx_storm)
{
	setup_gemtwin((const char *const[]){ "--card", "t1", "--wtx-storm", NULL });
	wtx_storm();
}

Test(faults_gemtwin, port_gone_mid_exchange)
{
	setup_gemtwin((const char *const[]){ "--card", "t1", NULL });
	port_gone_mid_exchange();
}

Test(faults_gemtwin, card_pulled_mid_transaction)
{
	setup_gemtwin((const char *const[]){ "--card", "t1", "--async-notify", NULL });
	card_pulled_mid_transaction();
}

Test(faults_gemtwin, shutdown_mid_exchange)
{
	setup_gemtwin((const char *const[]){ "--card", "t1", NULL });
	shutdown_mid_exchange();
}

/* ---- Phoenix ------------------------------------------------------------------------- */

TestSuite(faults_phoenix, .fini = fini, .timeout = 60);

Test(faults_phoenix, mute_card_at_power_up)
{
	/* No ATR: the first byte's wait (300 ms) bounds the reset. */
	setup_phoenix((const char *const[]){ "--card", "t1", "--mute", NULL });
	mute_at_power_up(SCARD_W_UNRESPONSIVE_CARD, 1000);
}

Test(faults_phoenix, card_silent_mid_exchange)
{
	setup_phoenix((const char *const[]){ "--card", "t1", NULL });
	silent_mid_exchange();
}

Test(faults_phoenix, wtx_storm)
{
	setup_phoenix((const char *const[]){ "--card", "t1", "--wtx-storm", NULL });
	wtx_storm();
}

Test(faults_phoenix, port_gone_mid_exchange)
{
	setup_phoenix((const char *const[]){ "--card", "t1", NULL });
	port_gone_mid_exchange();
}

Test(faults_phoenix, card_pulled_mid_transaction)
{
	setup_phoenix((const char *const[]){ "--card", "t0", NULL });
	card_pulled_mid_transaction();
}

Test(faults_phoenix, shutdown_mid_exchange)
{
	setup_phoenix((const char *const[]){ "--card", "t1", NULL });
	shutdown_mid_exchange();
}
