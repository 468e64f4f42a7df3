/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial backend on a GemPC Twin simulator (tests/serial/gemtwin-sim) at the far end of
 * a pseudo-terminal, the simulator itself validated against pcscd with libccid's serial
 * driver (tests/serial/pcscd-serial-check): declaration, listing, ATR, T=1 and T=0
 * exchanges with chaining, card movement, and the faults (NAK, missing echo, corrupted
 * checksum, noise, silence, a port that is missing and then appears). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

#include "backend-test.h"

static SCARDCONTEXT ctx;
static pid_t sim = -1;
static char pty[256];
static char name[MAX_READERNAME];


/* Starts the simulator with its arguments; returns the pty path it prints. */
static void sim_start(const char *const *args)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	sim = fork();
	cr_assert_neq(sim, -1);
	if (sim == 0) {
		dup2(p[1], 1);
		close(p[0]);
		const char *argv[16] = { GEMTWIN_SIM };
		size_t n = 1;
		for (; args && args[n - 1] && n < 15; n++)
			argv[n] = args[n - 1];
		argv[n] = NULL;
		execv(GEMTWIN_SIM, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	FILE *f = fdopen(p[0], "r");
	char line[256] = "";
	while (fgets(line, sizeof(line), f) && strncmp(line, "PTY ", 4) != 0)
		;
	fclose(f);
	cr_assert_eq(strncmp(line, "PTY ", 4), 0, "the simulator printed no pty");
	snprintf(pty, sizeof(pty), "%s", line + 4);
	pty[strcspn(pty, "\n")] = 0;
}

static void sim_stop(void)
{
	if (sim > 0) {
		kill(sim, SIGTERM);
		waitpid(sim, NULL, 0);
	}
	sim = -1;
}

static uint32_t poll_ms = 100;

static void start_calais(const char *decl)
{
	calais_shutdown();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "serial";
	cfg.serial_readers = decl;
	cfg.poll_interval_ms = poll_ms;
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
}

/* The one declared reader's name. */
static void first_reader(void)
{
	DWORD len = sizeof(name);
	assert_rv(SCardListReaders(ctx, NULL, name, &len), SCARD_S_SUCCESS);
}

/* Simulator with `args`, then Calais on its pty. */
static void with_sim(const char *const *args)
{
	sim_start(args);
	char decl[300];
	snprintf(decl, sizeof(decl), "%s:gemtwin", pty);
	start_calais(decl);
	first_reader();
}

static void fini(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	sim_stop();
}

static bool wait_state(DWORD bit, long ms)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	long until = bt_now_ms() + ms;
	while (bt_now_ms() < until) {
		LONG rv = SCardGetStatusChange(ctx, 200, &rs, 1);
		if (rv == SCARD_S_SUCCESS && (rs.dwEventState & bit))
			return true;
		if (rv == SCARD_S_SUCCESS)
			rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	}
	return false;
}

static SCARDHANDLE connect_card(DWORD *proto)
{
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "card present");
	SCARDHANDLE h;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                       &h, proto),
	          SCARD_S_SUCCESS);
	return h;
}

/* READ BINARY of n bytes (case 2): byte i = i. */
static LONG read_binary(SCARDHANDLE h, DWORD proto, size_t n, DWORD *got, uint8_t *resp)
{
	uint8_t apdu[5] = { 0x00, 0xB0, 0x00, 0x00, (uint8_t)n };
	*got = 300;
	return SCardTransmit(h, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, apdu, 5,
	                     NULL, resp, got);
}

static void check_read(SCARDHANDLE h, DWORD proto, size_t n)
{
	uint8_t resp[300];
	DWORD got;
	assert_rv(read_binary(h, proto, n, &got, resp), SCARD_S_SUCCESS);
	cr_assert_eq(got, n + 2, "READ BINARY %zu: %lu bytes", n, (unsigned long)got);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(resp[i], (uint8_t)i);
	cr_assert(resp[n] == 0x90 && resp[n + 1] == 0x00);
}

TestSuite(serial, .fini = fini, .timeout = 60);

Test(serial, t1_card_listing_atr_and_chained_exchanges)
{
	with_sim((const char *const[]){ "--card", "t1", NULL });
	cr_assert_neq(strstr(name, "GemPC Twin ["), NULL, "%s", name);
	cr_assert_neq(strstr(name, pty), NULL, "the port in the name: %s", name);
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	check_read(h, proto, 10);
	check_read(h, proto, 200); /* answer chained over several I-blocks */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(serial, t0_card_exchanges)
{
	with_sim((const char *const[]){ "--card", "t0", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T0);
	check_read(h, proto, 16);
	check_read(h, proto, 255);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(serial, card_removal_and_insertion)
{
	with_sim((const char *const[]){ "--card", "t1", NULL });
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000));
	kill(sim, SIGUSR1);
	cr_assert(wait_state(SCARD_STATE_EMPTY, 5000), "removal seen");
	kill(sim, SIGUSR2);
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "insertion seen");
}

Test(serial, nak_then_resend)
{
	with_sim((const char *const[]){ "--card", "t1", "--nak-first", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 20);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(serial, reader_without_echo_is_unavailable)
{
	with_sim((const char *const[]){ "--card", "t1", "--no-echo", NULL });
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_UNAVAILABLE, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_E_READER_UNAVAILABLE);
}

/* A corrupted frame: a T=0 exchange fails with SCARD_F_COMM_ERROR (and the next works);
 * T=1's block protocol recovers by itself (the card repeats its block). */
static LONG reads_with_bad_lrc(const char *card)
{
	poll_ms = 600000; /* no presence polls among the answers the fault counts */
	with_sim((const char *const[]){ "--card", card, "--bad-lrc", "8", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	LONG rv = SCARD_S_SUCCESS;
	uint8_t resp[300];
	DWORD got;
	for (int i = 0; i < 6 && rv == SCARD_S_SUCCESS; i++)
		rv = read_binary(h, proto, 4, &got, resp);
	check_read(h, proto, 4); /* the next one works either way */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	return rv;
}

Test(serial, corrupted_checksum_t0_is_a_comm_error)
{
	assert_rv(reads_with_bad_lrc("t0"), SCARD_F_COMM_ERROR);
}

Test(serial, corrupted_checksum_t1_recovered_by_the_block_protocol)
{
	assert_rv(reads_with_bad_lrc("t1"), SCARD_S_SUCCESS);
}

Test(serial, silent_reader_is_unavailable)
{
	poll_ms = 600000;
	with_sim((const char *const[]){ "--card", "t1", "--silent-after", "7", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	LONG rv = SCARD_S_SUCCESS;
	uint8_t resp[300];
	DWORD got;
	long t0 = bt_now_ms();
	for (int i = 0; i < 6 && rv == SCARD_S_SUCCESS; i++)
		rv = read_binary(h, proto, 4, &got, resp);
	assert_rv(rv, SCARD_E_READER_UNAVAILABLE);
	cr_assert_lt(bt_now_ms() - t0, 10000);
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_UNAVAILABLE, "listed, unavailable");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(serial, missing_port_listed_then_found)
{
	char link[128];
	snprintf(link, sizeof(link), "/tmp/calais-serial-test-%d", (int)getpid());
	unlink(link);
	char decl[200];
	snprintf(decl, sizeof(decl), "%s:gemtwin", link);
	start_calais(decl);
	first_reader();
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_UNAVAILABLE);
	sim_start((const char *const[]){ "--card", "t1", "--link", link, NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 8);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	unlink(link);
}

Test(serial, bad_declarations)
{
	/* Each refused with a log line; none becomes a reader. */
	start_calais("/dev/null:phoenix,/dev/null:nonsense,:gemtwin,/dev/null:gemtwin:NoSuchModel");
	char buf[64];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(ctx, NULL, buf, &len), SCARD_E_NO_READERS_AVAILABLE);
}

Test(serial, adapter_unplugged_in_use_then_back)
{
	char link[128];
	snprintf(link, sizeof(link), "/tmp/calais-serial-unplug-%d", (int)getpid());
	unlink(link);
	sim_start((const char *const[]){ "--card", "t1", "--link", link, NULL });
	char decl[200];
	snprintf(decl, sizeof(decl), "%s:gemtwin", link);
	start_calais(decl);
	first_reader();
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 8);
	sim_stop(); /* the adapter is pulled: the pty goes away */
	uint8_t resp[300];
	DWORD got;
	LONG rv = read_binary(h, proto, 8, &got, resp);
	cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_W_REMOVED_CARD,
	          "in use when pulled: 0x%lX", (unsigned long)rv);
	cr_assert(wait_state(SCARD_STATE_UNAVAILABLE, 5000), "listed, unavailable");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	/* Plugged back (same device path): found again and usable. */
	sim_start((const char *const[]){ "--card", "t1", "--link", link, NULL });
	h = connect_card(&proto);
	check_read(h, proto, 8);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	unlink(link);
}
