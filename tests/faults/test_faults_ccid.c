/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix's row for the USB CCID backend, on the CCID device simulator
 * (tests/backends/ccidsim.c) at the USB seam: a mute card at power-up, a card silent in
 * mid-exchange (ended by the exchange limit), time-extension storms (at once, and paced
 * so that only the limit ends them), the device gone in mid-exchange, and the card pulled
 * in mid-transaction (the reader reporting it, or staying silent so that only cancel()
 * ends the exchange). The faulty reader is slot 0 of a two-slot device whose slots may be
 * busy at once (bMaxCCIDBusySlots 2); each row checks the faulty call's code and bound,
 * and that two neighbours show an insertion within 50 ms while it is stuck: a reader of
 * another device, and slot 1 of the same device. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include <winscard.h>
#include <calais/calais.h>

#include "faults.h"
#include "ccidsim.h"

#define LVL_TPDU 0x10000u
#define LVL_SHORT 0x20000u
/* Automatic parameters, voltage and IFSD: one IccPowerOn per power-up. */
#define AUTO 0x000004BEu

/* The exchange limit these tests run with (stretched under valgrind and TSan so that the
 * neighbour checks fit inside it), and how long the reader takes to give up on a mute
 * card's ATR. */
#define LIMIT_MS 1000
#define ATR_DELAY_MS 1500

static const uint8_t ATR_T0[] = { 0x3B, 0x10, 0x96 };
static const uint8_t ATR_T1[] = { 0x3B, 0x80, 0x81, 0x31, 0x20, 0x45, 0x55 };

static ccidsim_dev *dev_a, *dev_b; /* the faulty reader's device (two slots), another one */
static char faulty_name[MAX_READERNAME], slot1_name[MAX_READERNAME], other_name[MAX_READERNAME];
static SCARDCONTEXT ctx;
static SCARDHANDLE faulty_h;

static long limit_ms(void)
{
	return (long)(LIMIT_MS * fm_slow());
}

static struct ccidsim_card card_t0(void)
{
	struct ccidsim_card c = { .atr_len = sizeof(ATR_T0) };
	memcpy(c.atr, ATR_T0, sizeof(ATR_T0));
	return c;
}

static struct ccidsim_card card_t1(void)
{
	struct ccidsim_card c = { .atr_len = sizeof(ATR_T1), .t1 = true };
	memcpy(c.atr, ATR_T1, sizeof(ATR_T1));
	return c;
}

/* The reader whose name contains `part` (and ends with `index`), into out. */
static bool find_reader(const char *part, const char *index, char *out)
{
	char buf[4096];
	DWORD len = sizeof(buf);
	if (SCardListReaders(ctx, NULL, buf, &len) != SCARD_S_SUCCESS)
		return false;
	for (const char *p = buf; *p; p += strlen(p) + 1) {
		size_t n = strlen(p);
		if (strstr(p, part) && n > 2 && strcmp(p + n - 2, index) == 0) {
			snprintf(out, MAX_READERNAME, "%s", p);
			return true;
		}
	}
	return false;
}

static void setup(void)
{
	/* Criterion runs the suite's .init before a test's own: start from scratch. */
	calais_shutdown();
	ccidsim_reset();
	ccidsim_install();
	char limit[16];
	snprintf(limit, sizeof(limit), "%ld", limit_ms());
	setenv("CALAIS_EXCHANGE_TIMEOUT_MS", limit, 1);
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "ccid";
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	cr_assert_eq(calais_start(&cfg), SCARD_S_SUCCESS);
	unsetenv("CALAIS_EXCHANGE_TIMEOUT_MS");
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	struct ccidsim_cfg a = { .product = "Faulty", .slots = 2, .max_busy = 2, .intr = true,
		                 .features = LVL_TPDU | AUTO, .max_msg = 271 };
	struct ccidsim_cfg b = { .product = "Other", .intr = true, .features = LVL_SHORT | AUTO };
	dev_a = ccidsim_add(&a);
	dev_b = ccidsim_add(&b);
	long until = fm_now_ms() + (long)(3000 * fm_slow());
	while (!(find_reader("Faulty", "00", faulty_name) && find_reader("Faulty", "01", slot1_name) &&
	         find_reader("Other", "00", other_name))) {
		cr_assert_lt(fm_now_ms(), until, "the simulated readers were not listed");
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* Each slot's first presence is asked by the core after the reader is listed
	 * (CALAIS_READER_PROBE_PRESENCE): let those GetSlotStatus pass before a test arms a
	 * fault for "the next command". */
	while (ccidsim_stats(dev_a).commands[0x65] < 2 || ccidsim_stats(dev_b).commands[0x65] < 1) {
		cr_assert_lt(fm_now_ms(), until, "the readers' first presence was never asked");
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void teardown(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	ccidsim_reset();
}

TestSuite(faults_ccid, .init = setup, .fini = teardown, .timeout = 90);

static void insert_other(void *arg)
{
	(void)arg;
	struct ccidsim_card c = card_t0();
	ccidsim_insert(dev_b, 0, &c);
}

static void insert_slot1(void *arg)
{
	(void)arg;
	struct ccidsim_card c = card_t1();
	ccidsim_insert(dev_a, 1, &c);
}

/* Both neighbours show a card inserted now within FM_NEIGHBOUR_MS: the other device's
 * reader, and (unless the device is gone) slot 1 of the faulty reader's device. Each is
 * emptied again, so the check can be repeated. */
static void neighbours_see(const char *what, bool same_device)
{
	fm_assert_neighbour_sees(other_name, insert_other, NULL, what);
	ccidsim_eject(dev_b, 0);
	fm_wait_presence(ctx, other_name, false, 5000);
	if (!same_device)
		return;
	char what1[160];
	snprintf(what1, sizeof(what1), "%s (slot 1 of the same device)", what);
	fm_assert_neighbour_sees(slot1_name, insert_slot1, NULL, what1);
	ccidsim_eject(dev_a, 1);
	fm_wait_presence(ctx, slot1_name, false, 5000);
}

/* ---- the calls that get stuck ---------------------------------------------------------- */

static LONG transmit_faulty(void *arg)
{
	(void)arg;
	static const uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };
	uint8_t resp[32];
	DWORD len = sizeof(resp);
	return SCardTransmit(faulty_h, SCARD_PCI_T1, apdu, sizeof(apdu), NULL, resp, &len);
}

static LONG connect_faulty(void *arg)
{
	(void)arg;
	DWORD p;
	return SCardConnect(ctx, faulty_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &faulty_h, &p);
}

/* A T=1 card in the faulty reader, connected (in a transaction if asked), one APDU
 * answered, then `f` on every command of its slot from now on (so the T=1 engine's
 * retries meet it too, whatever the exchange limit) and an APDU started on its own thread that is still
 * running 50 ms later. */
static void stuck_exchange(struct fm_call *call, enum ccidsim_fault f, bool transaction)
{
	struct ccidsim_card c = card_t1();
	ccidsim_insert(dev_a, 0, &c);
	fm_wait_presence(ctx, faulty_name, true, 5000);
	cr_assert_eq(connect_faulty(NULL), SCARD_S_SUCCESS);
	if (transaction)
		cr_assert_eq(SCardBeginTransaction(faulty_h), SCARD_S_SUCCESS);
	cr_assert_eq(transmit_faulty(NULL), SCARD_S_SUCCESS);
	ccidsim_fault_slot(dev_a, 0, f, 0);
	fm_call_start(call, transmit_faulty, NULL);
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	cr_assert(!__atomic_load_n(&call->done, __ATOMIC_ACQUIRE), "the exchange was not stuck");
}

/* The fault ends; the faulty reader works again after a reset. */
static void faulty_recovers(void)
{
	ccidsim_fault_slot(dev_a, 0, CS_NONE, 0);
	DWORD p;
	cr_assert_eq(SCardReconnect(faulty_h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                            SCARD_RESET_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(transmit_faulty(NULL), SCARD_S_SUCCESS);
}

/* ---- the rows ---------------------------------------------------------------------------- */

/* A mute card: the reader gives up on its ATR after ATR_DELAY_MS (ICC_MUTE). A Connect
 * waits for the power-up and ends with SCARD_W_UNRESPONSIVE_CARD; the neighbours, slot 1
 * included (its IccPowerOn runs beside slot 0's), meanwhile work. */
Test(faults_ccid, mute_card_at_power_up)
{
	struct ccidsim_card c = card_t1();
	c.mute = true;
	ccidsim_delay_next(dev_a, (uint32_t)(ATR_DELAY_MS * fm_slow()));
	unsigned ons = ccidsim_stats(dev_a).commands[0x62];
	long t0 = fm_now_ms();
	ccidsim_insert(dev_a, 0, &c);
	/* The Connect comes once the power-up runs (the insertion reaches the core through
	 * the interrupt thread). */
	while (ccidsim_stats(dev_a).commands[0x62] == ons) {
		cr_assert_lt(fm_now_ms() - t0, (long)(1000 * fm_slow()), "no IccPowerOn");
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	struct fm_call call;
	fm_call_start(&call, connect_faulty, NULL);
	neighbours_see("mute card's power-up in progress on the other reader", true);
	fm_assert_call_ends(&call, SCARD_W_UNRESPONSIVE_CARD, t0, ATR_DELAY_MS + FM_END_MS,
	                    "Connect during the power-up");
	SCARD_READERSTATE rs = { .szReader = faulty_name };
	cr_assert_eq(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_MUTE, "state 0x%lX", (unsigned long)rs.dwEventState);
	neighbours_see("after the power-up", true);
}

/* The reader says nothing after the I-block: the exchange limit ends the exchange
 * (every wait of the T=1 engine and of the message layer is cut to it). */
Test(faults_ccid, card_silent_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, CS_MUTE, false);
	neighbours_see("silent card on the other reader", true);
	fm_assert_call_ends(&call, SCARD_E_TIMEOUT, call.started_ms, LIMIT_MS + FM_END_MS,
	                    "APDU to a silent card");
	cr_assert_geq(call.ended_ms - call.started_ms, limit_ms() - 50, "ended before the limit");
	faulty_recovers();
	neighbours_see("after the limit", true);
}

/* Time extensions asked again at once: a storm, ended by its count in well under the
 * limit, with SCARD_F_COMM_ERROR. */
Test(faults_ccid, time_extension_storm)
{
	struct fm_call call;
	struct ccidsim_card c = card_t1();
	ccidsim_insert(dev_a, 0, &c);
	fm_wait_presence(ctx, faulty_name, true, 5000);
	cr_assert_eq(connect_faulty(NULL), SCARD_S_SUCCESS);
	ccidsim_fault_slot(dev_a, 0, CS_TIME_EXT_STORM, 1);
	fm_call_start(&call, transmit_faulty, NULL);
	fm_assert_call_ends(&call, SCARD_F_COMM_ERROR, call.started_ms, FM_END_MS,
	                    "APDU through a time-extension storm");
	faulty_recovers();
	neighbours_see("after the storm", true);
}

/* Time extensions every 20 ms, each within the wait it extends, for ever: the count
 * does not call that a storm (a PIN pad's pace); the exchange limit ends it. */
Test(faults_ccid, paced_time_extensions_end_at_the_limit)
{
	struct fm_call call;
	ccidsim_storm_gap(dev_a, 20);
	stuck_exchange(&call, CS_TIME_EXT_STORM, false);
	neighbours_see("time extensions on the other reader", true);
	fm_assert_call_ends(&call, SCARD_E_TIMEOUT, call.started_ms, LIMIT_MS + FM_END_MS,
	                    "APDU through paced time extensions");
	cr_assert_geq(call.ended_ms - call.started_ms, limit_ms() - 50, "ended before the limit");
	ccidsim_storm_gap(dev_a, 0);
	faulty_recovers();
}

/* The device is unplugged while its reader waits for an answer. */
Test(faults_ccid, device_gone_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, CS_MUTE, false);
	long t0 = fm_now_ms();
	ccidsim_unplug(dev_a);
	fm_assert_call_ends(&call, SCARD_E_READER_UNAVAILABLE, t0, FM_END_MS,
	                    "APDU when the device goes");
	SCardDisconnect(faulty_h, SCARD_LEAVE_CARD);
	neighbours_see("after the device went", false);
}

/* The card is pulled in mid-transaction; the reader fails the command it was running. */
Test(faults_ccid, card_pulled_in_mid_transaction)
{
	struct fm_call call;
	stuck_exchange(&call, CS_MUTE, true);
	neighbours_see("transaction on the other reader", true);
	long t0 = fm_now_ms();
	ccidsim_eject(dev_a, 0);
	fm_assert_call_ends(&call, SCARD_W_REMOVED_CARD, t0, FM_END_MS,
	                    "APDU when the card goes");
	SCardEndTransaction(faulty_h, SCARD_LEAVE_CARD);
	SCardDisconnect(faulty_h, SCARD_LEAVE_CARD);
	neighbours_see("after the card went", true);
}

/* The same, but the reader never answers the command: the interrupt pipe reports the
 * removal, and the core's cancel() of the reader ends the exchange. */
Test(faults_ccid, card_pulled_from_a_silent_reader)
{
	struct fm_call call;
	stuck_exchange(&call, CS_MUTE, true);
	long t0 = fm_now_ms();
	ccidsim_eject_silent(dev_a, 0);
	fm_assert_call_ends(&call, SCARD_W_REMOVED_CARD, t0, FM_END_MS,
	                    "APDU when the card goes, the reader silent");
	SCardEndTransaction(faulty_h, SCARD_LEAVE_CARD);
	SCardDisconnect(faulty_h, SCARD_LEAVE_CARD);
	neighbours_see("after the card went", true);
}
