/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial backend on reader simulators at the far end of a pseudo-terminal.
 * Suite serial: a GemPC Twin (tests/serial/gemtwin-sim, itself validated against pcscd
 * with libccid's serial driver by tests/serial/pcscd-serial-check): declaration, listing,
 * ATR, T=1 and T=0 exchanges with chaining, card movement, and the faults (NAK, missing
 * echo, corrupted checksum, noise, silence, a port that is missing and then appears).
 * Suite phoenix: a Phoenix direct UART reader with a byte-level card
 * (tests/serial/phoenix-sim): both conventions, T=0 and T=1 at character level, PPS,
 * presence by a detect line and by reset, and the line's faults. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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


/* Starts a simulator with its arguments; returns the pty path it prints. */
static void sim_start_exe(const char *exe, const char *const *args)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	sim = fork();
	cr_assert_neq(sim, -1);
	if (sim == 0) {
		/* The simulator ends with us, even when a failed assertion ends us early. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
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
	snprintf(pty, sizeof(pty), "%s", line + 4);
	pty[strcspn(pty, "\n")] = 0;
}

static void sim_start(const char *const *args)
{
	sim_start_exe(GEMTWIN_SIM, args);
}

static void sim_stop(void)
{
	if (sim > 0) {
		kill(sim, SIGTERM);
		waitpid(sim, NULL, 0);
	}
	sim = -1;
}

static uint32_t poll_ms = 100, power_down_ms;

/* Log capture for the log-hygiene rows: the echo-mismatch line, and whether trace is on. */
static bool capture_log, trace_data;
static char fault_line[512];

static void capture(enum calais_log_level level, const char *domain, const char *msg, void *u)
{
	if (strstr(msg, "line fault"))
		snprintf(fault_line, sizeof(fault_line), "%s", msg);
	if (getenv("CALAIS_TEST_LOG"))
		fprintf(stderr, "calais[%s] %s\n", domain, msg);
}

static void start_calais(const char *decl)
{
	calais_shutdown();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "serial";
	cfg.serial_readers = decl;
	cfg.poll_interval_ms = poll_ms;
	if (power_down_ms)
		cfg.power_down_delay_ms = power_down_ms;
	if (getenv("CALAIS_TEST_LOG") || capture_log) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	if (capture_log)
		cfg.log_cb = capture;
	cfg.trace_apdu_data = trace_data;
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
	/* The plain runner runs every test in one process. */
	poll_ms = 100;
	power_down_ms = 0;
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

/* The reader is listed, unavailable, and connecting says so. */
static void assert_listed_unavailable(void)
{
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_UNAVAILABLE, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_E_READER_UNAVAILABLE);
}

/* READ BINARY of n bytes (case 2): byte i = i. */
static LONG read_binary(SCARDHANDLE h, DWORD proto, size_t n, DWORD *got, uint8_t *resp)
{
	uint8_t apdu[5] = { 0x00, 0xB0, 0x00, 0x00, (uint8_t)n };
	*got = 300;
	return SCardTransmit(h, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, apdu, 5,
	                     NULL, resp, got);
}

/* Up to `max` small reads, stopping at the first failure: its code. */
static LONG reads_until_failure(SCARDHANDLE h, DWORD proto, int max)
{
	LONG rv = SCARD_S_SUCCESS;
	uint8_t resp[300];
	DWORD got;
	for (int i = 0; i < max && rv == SCARD_S_SUCCESS; i++)
		rv = read_binary(h, proto, 4, &got, resp);
	return rv;
}

static void check_read(SCARDHANDLE h, DWORD proto, size_t n)
{
	uint8_t resp[300];
	DWORD got;
	assert_rv(read_binary(h, proto, n, &got, resp), SCARD_S_SUCCESS);
	bt_assert_counting(resp, got, n, "READ BINARY");
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

/* A card whose ATR asks for the CRC (TC3 01): the block protocol runs with the CRC real
 * cards use (gemtwin-sim's card takes it from the ATR; pcscd-serial-check runs the same
 * card under libccid). */
Test(serial, t1_crc_card_exchanges)
{
	with_sim((const char *const[]){ "--card", "t1", "--atr", "3B 80 81 71 20 45 01 55", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	check_read(h, proto, 10);
	check_read(h, proto, 200);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* A T=1 card whose ATR has a wrong TCK (81 is right): used as pcscd + libccid use it,
 * with the default parameters (IFSC 32; with IFSC 0 the engine once sent empty chained
 * blocks for ever and the call never returned). */
Test(serial, t1_card_with_a_wrong_tck_is_used_with_the_defaults, .timeout = 30)
{
	with_sim((const char *const[]){ "--card", "t1", "--atr", "3B 80 01 8F", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	long t0 = bt_now_ms();
	check_read(h, proto, 10);
	check_read(h, proto, 200);
	cr_assert_lt(bt_now_ms() - t0, 5000, "%ld ms", bt_now_ms() - t0);
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
	assert_listed_unavailable();
}

/* A corrupted frame: a T=0 exchange fails with SCARD_F_COMM_ERROR (and the next works);
 * T=1's block protocol recovers by itself (the card repeats its block). */
static LONG reads_with_bad_lrc(const char *card)
{
	poll_ms = 600000; /* no presence polls among the answers the fault counts */
	with_sim((const char *const[]){ "--card", card, "--bad-lrc", "8", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	LONG rv = reads_until_failure(h, proto, 6);
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
	long t0 = bt_now_ms();
	LONG rv = reads_until_failure(h, proto, 6);
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
	start_calais("/dev/null:phoenix:bogus,/dev/null:phoenix:!none,/dev/null:nonsense,:gemtwin,"
	             "/dev/null:gemtwin:NoSuchModel,/dev/null:nosuch:cts,/dev/null:phoenix:khz=6000");
	char buf[64];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(ctx, NULL, buf, &len), SCARD_E_NO_READERS_AVAILABLE);
}

/* Simulator `exe` behind the symlink `link` (args hold "--link", link), declared as
 * "<link>:<proto>": in use, the adapter is pulled (the pty goes away), then plugged back
 * at the same path. */
static void unplugged_in_use_then_back(const char *exe, const char *const *args,
                                       const char *link, const char *proto)
{
	sim_start_exe(exe, args);
	char decl[200];
	snprintf(decl, sizeof(decl), "%s:%s", link, proto);
	start_calais(decl);
	first_reader();
	DWORD proto_used;
	SCARDHANDLE h = connect_card(&proto_used);
	check_read(h, proto_used, 8);
	sim_stop();
	LONG rv = reads_until_failure(h, proto_used, 1);
	cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_W_REMOVED_CARD,
	          "in use when pulled: 0x%lX", (unsigned long)rv);
	cr_assert(wait_state(SCARD_STATE_UNAVAILABLE, 5000), "listed, unavailable");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	sim_start_exe(exe, args);
	h = connect_card(&proto_used);
	check_read(h, proto_used, 8);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	unlink(link);
}

Test(serial, adapter_unplugged_in_use_then_back)
{
	char link[128];
	snprintf(link, sizeof(link), "/tmp/calais-serial-unplug-%d", (int)getpid());
	unlink(link);
	unplugged_in_use_then_back(GEMTWIN_SIM,
	                           (const char *const[]){ "--card", "t1", "--link", link, NULL },
	                           link, "gemtwin");
}

/* ---- Phoenix / Smartmouse ------------------------------------------------------------- */

extern LONG (*calais__phoenix_detect_hook)(const char *path, bool *line_high);
static char state_file[128];

/* The card-detect line of the simulated reader: its state file (a pty has no modem
 * lines). */
static LONG detect_from_file(const char *path, bool *line_high)
{
	(void)path;
	FILE *f = fopen(state_file, "r");
	int c = f ? fgetc(f) : EOF;
	if (f)
		fclose(f);
	if (c != '0' && c != '1')
		return SCARD_F_COMM_ERROR;
	*line_high = c == '1';
	return SCARD_S_SUCCESS;
}

/* phoenix-sim with args, declared as "<pty>:<proto>[:opts]". */
static void with_direct_uart(const char *proto, const char *opts, const char *const *args)
{
	const char *argv[16];
	size_t n = 0;
	snprintf(state_file, sizeof(state_file), "/tmp/calais-phoenix-%d.state", (int)getpid());
	argv[n++] = "--state-file";
	argv[n++] = state_file;
	for (; args && *args && n < 15; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	sim_start_exe(PHOENIX_SIM, argv);
	calais__phoenix_detect_hook = detect_from_file;
	char decl[300];
	snprintf(decl, sizeof(decl), "%s:%s%s%s", pty, proto, opts ? ":" : "", opts ? opts : "");
	start_calais(decl);
	first_reader();
}

static void with_phoenix(const char *opts, const char *const *args)
{
	with_direct_uart("phoenix", opts, args);
}

static void phoenix_fini(void)
{
	fini();
	calais__phoenix_detect_hook = NULL;
	unlink(state_file);
}

/* ECHO (80 EE) of n bytes, case 4: incoming data, then the same back. */
static void check_echo(SCARDHANDLE h, DWORD proto, size_t n)
{
	uint8_t apdu[5 + 255 + 1] = { 0x80, 0xEE, 0x00, 0x00, (uint8_t)n };
	for (size_t i = 0; i < n; i++)
		apdu[5 + i] = (uint8_t)(0xA5 ^ i);
	apdu[5 + n] = (uint8_t)n;
	uint8_t resp[300];
	DWORD got = sizeof(resp);
	assert_rv(SCardTransmit(h, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, apdu,
	                        (DWORD)(6 + n), NULL, resp, &got),
	          SCARD_S_SUCCESS);
	cr_assert_eq(got, n + 2, "ECHO %zu: %lu bytes", n, (unsigned long)got);
	cr_assert(memcmp(resp, apdu + 5, n) == 0, "ECHO %zu: data differs", n);
	cr_assert(resp[n] == 0x90 && resp[n + 1] == 0x00);
}

static void atr_of(SCARDHANDLE h, uint8_t *atr, DWORD *len)
{
	char rn[MAX_READERNAME];
	DWORD rl = sizeof(rn), st, pr;
	*len = MAX_ATR_SIZE;
	assert_rv(SCardStatus(h, rn, &rl, &st, &pr, atr, len), SCARD_S_SUCCESS);
}

TestSuite(phoenix, .fini = phoenix_fini, .timeout = 60);

static void exchanges(const char *card, const char *convention, DWORD want_proto, uint8_t ts)
{
	with_phoenix("cts", (const char *const[]){ "--card", card, "--convention", convention,
	                                           NULL });
	cr_assert_neq(strstr(name, "Phoenix ["), NULL, "%s", name);
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, want_proto);
	uint8_t atr[MAX_ATR_SIZE];
	DWORD al;
	atr_of(h, atr, &al);
	cr_assert(al >= 2 && atr[0] == ts, "TS 0x%02X", atr[0]);
	check_read(h, proto, 16);
	check_read(h, proto, 255); /* T=1: chained answer; T=0: 61xx and GET RESPONSE */
	check_echo(h, proto, 1);
	check_echo(h, proto, 200); /* T=1: chained command (IFSC below 200) */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, t0_card_direct_convention)
{
	exchanges("t0", "direct", SCARD_PROTOCOL_T0, 0x3B);
}

Test(phoenix, t1_card_direct_convention)
{
	exchanges("t1", "direct", SCARD_PROTOCOL_T1, 0x3B);
}

/* The CRC card at character level: TA1 13, TD2 71 -> TA3 80, TB3 45, TC3 01 (CRC). */
Test(phoenix, t1_crc_card)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--atr",
	                                           "3B 94 13 81 71 80 45 01 50 48 58 31 C2", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	check_read(h, proto, 16);
	check_read(h, proto, 255);
	check_echo(h, proto, 200);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, t0_card_inverse_convention)
{
	exchanges("t0", "inverse", SCARD_PROTOCOL_T0, 0x3F);
}

Test(phoenix, t1_card_inverse_convention)
{
	exchanges("t1", "inverse", SCARD_PROTOCOL_T1, 0x3F);
}

Test(phoenix, pps_refused_card_stays_at_9600)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--pps-refuse", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 100);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, pps_unanswered_is_an_unresponsive_card)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--pps-mute", NULL });
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "card present");
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_W_UNRESPONSIVE_CARD);
}

Test(phoenix, detect_line_reports_removal_of_a_card_in_use)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t0", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 4);
	kill(sim, SIGUSR1);
	cr_assert(wait_state(SCARD_STATE_EMPTY, 5000), "removal seen through the line");
	uint8_t resp[300];
	DWORD got;
	assert_rv(read_binary(h, proto, 4, &got, resp), SCARD_W_REMOVED_CARD);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	kill(sim, SIGUSR2);
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "insertion seen");
	h = connect_card(&proto);
	check_read(h, proto, 4);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, presence_by_reset_without_detect_line)
{
	power_down_ms = 100; /* an idle card is powered down, then probed by resets */
	with_phoenix(NULL, (const char *const[]){ "--card", "t1", NULL });
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "card found by a reset");
	kill(sim, SIGUSR1);
	cr_assert(wait_state(SCARD_STATE_EMPTY, 5000), "removal found by a reset");
	kill(sim, SIGUSR2);
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "insertion found by a reset");
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 20);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, card_pulled_in_use_without_detect_line)
{
	with_phoenix(NULL, (const char *const[]){ "--card", "t0", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_read(h, proto, 4);
	kill(sim, SIGUSR1);
	usleep(100000);
	uint8_t resp[300];
	DWORD got;
	long t0 = bt_now_ms();
	LONG rv = read_binary(h, proto, 4, &got, resp);
	cr_assert(rv != SCARD_S_SUCCESS, "a pulled card answered");
	cr_assert_lt(bt_now_ms() - t0, 10000, "bounded");
	cr_assert(wait_state(SCARD_STATE_EMPTY, 5000), "the mute card is found gone");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, mute_card_with_detect_line)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--mute", NULL });
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000), "the line says a card is there");
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_MUTE, "state 0x%lX", (unsigned long)rs.dwEventState);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_W_UNRESPONSIVE_CARD);
}

Test(phoenix, not_a_ts_is_an_unsupported_card)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--atr-garbage", NULL });
	cr_assert(wait_state(SCARD_STATE_PRESENT, 5000));
	SCARDHANDLE h;
	DWORD proto;
	LONG rv = SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto);
	cr_assert(rv == SCARD_W_UNSUPPORTED_CARD || rv == SCARD_W_UNRESPONSIVE_CARD, "0x%lX",
	          (unsigned long)rv);
}

Test(phoenix, no_echo_is_not_a_phoenix_reader)
{
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--no-echo", NULL });
	assert_listed_unavailable();
}

/* Faults on the n-th unit the simulator counts: the exchange it hits fails with `want`
 * (or recovers: SCARD_S_SUCCESS), and the next exchange works. */
static void fault_then_recovery(const char *card, const char *fault, const char *nth, LONG want)
{
	poll_ms = 600000; /* no presence polls among the exchanges the fault counts */
	with_phoenix("cts", (const char *const[]){ "--card", card, fault, nth, NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	LONG rv = reads_until_failure(h, proto, 8);
	assert_rv(rv, want);
	if (rv != SCARD_S_SUCCESS)
		assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                         SCARD_RESET_CARD, &proto),
		          SCARD_S_SUCCESS);
	check_read(h, proto, 4);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, bad_echo_is_a_line_fault)
{
	fault_then_recovery("t0", "--bad-echo", "12", SCARD_F_COMM_ERROR);
}

/* A byte sent may be a PIN digit: the echo-mismatch line names its value only when the
 * APDU trace is on, even at debug level. */
Test(phoenix, bad_echo_log_shows_no_card_byte)
{
	capture_log = true;
	fault_line[0] = 0;
	fault_then_recovery("t0", "--bad-echo", "12", SCARD_F_COMM_ERROR);
	calais_shutdown();
	capture_log = false;
	cr_assert(fault_line[0], "no echo-mismatch line was logged");
	cr_assert_null(strstr(fault_line, "0x"), "a card byte in the log: %s", fault_line);
}

Test(phoenix, bad_echo_log_shows_the_byte_with_the_trace)
{
	capture_log = trace_data = true;
	fault_line[0] = 0;
	fault_then_recovery("t0", "--bad-echo", "12", SCARD_F_COMM_ERROR);
	calais_shutdown();
	capture_log = trace_data = false;
	cr_assert_not_null(strstr(fault_line, "echo 0x"), "the traced line: \"%s\"", fault_line);
}

Test(phoenix, t1_bad_edc_recovered_by_the_block_protocol)
{
	fault_then_recovery("t1", "--bad-edc", "3", SCARD_S_SUCCESS);
}

Test(phoenix, t0_garbage_answer_is_a_comm_error)
{
	fault_then_recovery("t0", "--garbage", "3", SCARD_F_COMM_ERROR);
}

Test(phoenix, silent_card_fails_in_bounded_time)
{
	poll_ms = 600000;
	with_phoenix("cts", (const char *const[]){ "--card", "t1", "--silent-after", "4", NULL });
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	long t0 = bt_now_ms();
	LONG rv = reads_until_failure(h, proto, 8);
	cr_assert(rv != SCARD_S_SUCCESS, "a silent card answered");
	cr_assert_lt(bt_now_ms() - t0, 20000, "bounded");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, smartmouse_t0_one_byte_at_a_time)
{
	/* The card asks for incoming data one byte at a time (procedure byte ~INS). */
	with_direct_uart("smartmouse", "cts+khz=3571", (const char *const[]){
		"--card", "t0", "--convention", "inverse", "--procedure-single", NULL });
	cr_assert_neq(strstr(name, "Smartmouse ["), NULL, "%s", name);
	DWORD proto;
	SCARDHANDLE h = connect_card(&proto);
	check_echo(h, proto, 40);
	check_read(h, proto, 40);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(phoenix, adapter_unplugged_in_use_then_back)
{
	char link[128];
	snprintf(link, sizeof(link), "/tmp/calais-phoenix-unplug-%d", (int)getpid());
	unlink(link);
	snprintf(state_file, sizeof(state_file), "/tmp/calais-phoenix-%d.state", (int)getpid());
	calais__phoenix_detect_hook = detect_from_file;
	unplugged_in_use_then_back(PHOENIX_SIM,
	                           (const char *const[]){ "--card", "t1", "--link", link,
	                                                  "--state-file", state_file, NULL },
	                           link, "phoenix:cts");
}
