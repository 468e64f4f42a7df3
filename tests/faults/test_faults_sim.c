/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix's row for the simulated backend: a mute or slow card at power-up, a
 * card silent in mid-exchange (ended by the exchange limit), the reader unplugged and the
 * card pulled in mid-exchange and in mid-transaction, calais_shutdown() during an
 * exchange and during a power-up, and a Connect's own slow power-up ended by the
 * shutdown, the card pulled or the reader unplugged. Each checks the faulty call's code and bound, and that
 * a second reader of the same manager shows an insertion within 50 ms while the faulty
 * reader is stuck (faults.h). The sim backend exchanges APDUs, so it has no T=1 or CCID
 * layer whose WTX or time-extension storm could be simulated: that row is not its. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include <winscard.h>
#include <calais/calais.h>

#include "faults.h"

/* The exchange limit these tests run with (stretched under valgrind and TSan so the
 * neighbour check fits inside it), and how long a power-up waits for a slow card: less
 * than the limit, which bounds power-ups too (past it the card is shown mute). */
#define LIMIT_MS 1000
#define ATR_DELAY_MS 600

static calais_sim_reader *faulty, *neighbour;
static char faulty_name[MAX_READERNAME], neighbour_name[MAX_READERNAME];
static SCARDCONTEXT ctx;
static unsigned apdus;

static long limit_ms(void)
{
	return (long)(LIMIT_MS * fm_slow());
}

static LONG answer(void *user, const uint8_t *apdu, size_t n, uint8_t *resp, size_t *len)
{
	(void)user, (void)apdu, (void)n;
	__atomic_add_fetch(&apdus, 1, __ATOMIC_RELAXED);
	resp[0] = 0x90, resp[1] = 0x00, *len = 2;
	return SCARD_S_SUCCESS;
}

static const uint8_t atr_t1[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };

/* The faulty reader's card: answers `answers` APDUs after each power-up, then is silent. */
static struct calais_sim_card silent_card(uint32_t answers)
{
	return (struct calais_sim_card){ .atr = atr_t1, .atr_len = sizeof(atr_t1), .apdu = answer,
	                                 .silent = true, .silent_after = answers };
}

static void setup_cfg(uint32_t transaction_timeout_ms)
{
	/* Criterion runs the suite's .init before a test's own: start from scratch. */
	calais_shutdown();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.exchange_timeout_ms = (uint32_t)limit_ms();
	cfg.transaction_timeout_ms = transaction_timeout_ms;
	cr_assert_eq(calais_start(&cfg), SCARD_S_SUCCESS);
	cr_assert_eq(calais_sim_reader_add("Faulty", &faulty), SCARD_S_SUCCESS);
	cr_assert_eq(calais_sim_reader_add("Neighbour", &neighbour), SCARD_S_SUCCESS);
	snprintf(faulty_name, sizeof(faulty_name), "%s", calais_sim_reader_name(faulty));
	snprintf(neighbour_name, sizeof(neighbour_name), "%s", calais_sim_reader_name(neighbour));
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	apdus = 0;
}

static void setup(void)
{
	setup_cfg(0);
}

static void teardown(void)
{
	calais_shutdown();
}

TestSuite(faults_sim, .init = setup, .fini = teardown, .timeout = 60);

static void insert_neighbour(void *arg)
{
	(void)arg;
	cr_assert_eq(calais_sim_card_insert(neighbour, calais_sim_democard()), SCARD_S_SUCCESS);
}

/* The neighbour reader shows a card inserted now within FM_NEIGHBOUR_MS; it is then
 * emptied again, so the check can be repeated. */
static void neighbour_sees(const char *what)
{
	fm_assert_neighbour_sees(neighbour_name, insert_neighbour, NULL, what);
	cr_assert_eq(calais_sim_card_remove(neighbour), SCARD_S_SUCCESS);
	fm_wait_presence(ctx, neighbour_name, false, 3000);
}

/* ---- the calls that get stuck -------------------------------------------------------- */

static SCARDHANDLE faulty_h;

static LONG transmit_faulty(void *arg)
{
	(void)arg;
	static const uint8_t apdu[] = { 0x00, 0xB0, 0x00, 0x00, 0x02 };
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

/* A silent card in the faulty reader, connected, and an APDU stuck on it. */
static void stuck_exchange(struct fm_call *call, uint32_t answers)
{
	struct calais_sim_card c = silent_card(answers);
	cr_assert_eq(calais_sim_card_insert(faulty, &c), SCARD_S_SUCCESS);
	fm_wait_presence(ctx, faulty_name, true, 3000);
	cr_assert_eq(connect_faulty(NULL), SCARD_S_SUCCESS);
	for (uint32_t i = 0; i < answers; i++)
		cr_assert_eq(transmit_faulty(NULL), SCARD_S_SUCCESS);
	fm_call_start(call, transmit_faulty, NULL);
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	cr_assert(!__atomic_load_n(&call->done, __ATOMIC_ACQUIRE), "the silent card answered");
}

/* ---- the rows ------------------------------------------------------------------------ */

/* A card whose power-up takes ATR_DELAY_MS (mute: then fails): a Connect on it waits for
 * the power-up and ends with its result; the neighbour meanwhile works. */
static void slow_power_up(bool mute, LONG want)
{
	struct calais_sim_card c = { .atr = atr_t1, .atr_len = sizeof(atr_t1), .apdu = answer,
	                             .mute = mute, .atr_delay_ms = ATR_DELAY_MS };
	cr_assert_eq(calais_sim_card_insert(faulty, &c), SCARD_S_SUCCESS);
	long t0 = fm_now_ms();
	struct fm_call call;
	fm_call_start(&call, connect_faulty, NULL);
	neighbour_sees("power-up in progress on the other reader");
	fm_assert_call_ends(&call, want, t0, ATR_DELAY_MS + FM_END_MS, "Connect during the power-up");
	cr_assert_geq(call.ended_ms - t0, ATR_DELAY_MS - 50, "the power-up did not wait for the ATR");
	if (want == SCARD_S_SUCCESS)
		cr_assert_eq(SCardDisconnect(faulty_h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	neighbour_sees("after the power-up");
}

Test(faults_sim, mute_card_at_power_up)
{
	slow_power_up(true, SCARD_W_UNRESPONSIVE_CARD);
	SCARD_READERSTATE rs = { .szReader = faulty_name };
	cr_assert_eq(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_MUTE, "state 0x%lX", (unsigned long)rs.dwEventState);
}

Test(faults_sim, slow_power_up)
{
	slow_power_up(false, SCARD_S_SUCCESS);
}

Test(faults_sim, card_silent_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, 2);
	neighbour_sees("silent card on the other reader");
	/* The exchange limit ends it: from the call's start, the limit and the bound. */
	fm_assert_call_ends(&call, SCARD_E_TIMEOUT, call.started_ms, LIMIT_MS + FM_END_MS,
	                    "APDU to a silent card");
	cr_assert_geq(call.ended_ms - call.started_ms, LIMIT_MS - 50, "ended before the limit");
	cr_assert_eq(apdus, 2);
	/* The reader is usable again: a reset revives the card. */
	DWORD p;
	cr_assert_eq(SCardReconnect(faulty_h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                            SCARD_RESET_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(transmit_faulty(NULL), SCARD_S_SUCCESS);
	neighbour_sees("after the limit");
}

/* A fault (fault() returns the sim call's code) ends the stuck call with `want` within
 * FM_END_MS; the neighbour works while the call is stuck and after. */
static void fault_ends(struct fm_call *call, LONG (*fault)(calais_sim_reader *), LONG want,
                       const char *what)
{
	neighbour_sees("a call stuck on the other reader");
	long t0 = fm_now_ms();
	cr_assert_eq(fault(faulty), SCARD_S_SUCCESS);
	fm_assert_call_ends(call, want, t0, FM_END_MS, what);
	/* Closing an unplugged reader must not hold the neighbour up either. */
	neighbour_sees(what);
}

Test(faults_sim, reader_unplugged_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, 1);
	fault_ends(&call, calais_sim_reader_unplug, SCARD_E_READER_UNAVAILABLE,
	           "APDU when the reader is unplugged");
	cr_assert_eq(transmit_faulty(NULL), SCARD_E_READER_UNAVAILABLE);
}

Test(faults_sim, card_pulled_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, 0);
	fault_ends(&call, calais_sim_card_remove, SCARD_W_REMOVED_CARD, "APDU when the card is pulled");
	cr_assert_eq(apdus, 0);
}

/* With a transaction timeout shorter than the stuck APDU, the core's idle-transaction
 * job for the faulty reader comes due while the APDU holds that reader: it must not hold
 * up the neighbour's power-up. */
static void setup_transaction(void)
{
	setup_cfg(200);
}

Test(faults_sim, card_pulled_in_mid_transaction, .init = setup_transaction)
{
	struct calais_sim_card c = silent_card(1);
	cr_assert_eq(calais_sim_card_insert(faulty, &c), SCARD_S_SUCCESS);
	fm_wait_presence(ctx, faulty_name, true, 3000);
	cr_assert_eq(connect_faulty(NULL), SCARD_S_SUCCESS);
	cr_assert_eq(SCardBeginTransaction(faulty_h), SCARD_S_SUCCESS);
	cr_assert_eq(transmit_faulty(NULL), SCARD_S_SUCCESS);
	struct fm_call call;
	fm_call_start(&call, transmit_faulty, NULL);
	struct timespec ts = { 0, 400 * 1000 * 1000 }; /* past the transaction timeout */
	nanosleep(&ts, NULL);
	cr_assert(!__atomic_load_n(&call.done, __ATOMIC_ACQUIRE), "the silent card answered");
	neighbour_sees("silent card in a transaction on the other reader");
	long t0 = fm_now_ms();
	cr_assert_eq(calais_sim_card_remove(faulty), SCARD_S_SUCCESS);
	fm_assert_call_ends(&call, SCARD_W_REMOVED_CARD, t0, FM_END_MS,
	                    "APDU in a transaction when the card is pulled");
	LONG rv = SCardEndTransaction(faulty_h, SCARD_LEAVE_CARD);
	cr_assert(rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_NOT_TRANSACTED, "EndTransaction: 0x%08lX",
	          (unsigned long)rv);
	neighbour_sees("after the removal");
	cr_assert_eq(apdus, 1);
}

/* calais_shutdown() with a call inside the faulty reader: the call ends with
 * SCARD_E_NO_SERVICE within the bound (the isolation contract), and so does the
 * shutdown itself. */
static void shutdown_ends(struct fm_call *call)
{
	long t0 = fm_now_ms();
	calais_shutdown();
	long took = fm_now_ms() - t0;
	cr_assert_leq(took, (long)(FM_END_MS * fm_slow()), "calais_shutdown() took %ld ms", took);
	fm_assert_call_ends(call, SCARD_E_NO_SERVICE, t0, FM_END_MS, "a call at shutdown");
}

Test(faults_sim, shutdown_in_mid_exchange)
{
	struct fm_call call;
	stuck_exchange(&call, 0);
	neighbour_sees("silent card on the other reader");
	shutdown_ends(&call);
}

Test(faults_sim, shutdown_during_a_slow_power_up)
{
	struct calais_sim_card c = { .atr = atr_t1, .atr_len = sizeof(atr_t1), .apdu = answer,
	                             .atr_delay_ms = 30u * 1000u };
	cr_assert_eq(calais_sim_card_insert(faulty, &c), SCARD_S_SUCCESS);
	struct fm_call call;
	fm_call_start(&call, connect_faulty, NULL);
	neighbour_sees("power-up in progress on the other reader");
	shutdown_ends(&call);
}

/* A Connect that powers the card up itself (a card shown mute is tried again), waiting
 * for a slow ATR: stretched like the bounds, so that it is still waiting when the fault
 * comes after the neighbour check (and kept under the stretched limit). */
static void connect_powering(struct fm_call *call)
{
	long delay = (long)(ATR_DELAY_MS * fm_slow());
	struct calais_sim_card c = { .atr = atr_t1, .atr_len = sizeof(atr_t1), .apdu = answer,
	                             .mute = true, .atr_delay_ms = (uint32_t)delay };
	cr_assert_eq(calais_sim_card_insert(faulty, &c), SCARD_S_SUCCESS);
	fm_wait_presence(ctx, faulty_name, true, 3000); /* shown mute after the first power-up */
	fm_call_start(call, connect_faulty, NULL);
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	cr_assert(!__atomic_load_n(&call->done, __ATOMIC_ACQUIRE), "Connect did not wait for the ATR");
}

Test(faults_sim, shutdown_during_a_connects_power_up)
{
	struct fm_call call;
	connect_powering(&call);
	neighbour_sees("a Connect powering the card on the other reader");
	shutdown_ends(&call);
}

Test(faults_sim, card_pulled_during_a_connects_power_up)
{
	struct fm_call call;
	connect_powering(&call);
	fault_ends(&call, calais_sim_card_remove, SCARD_E_NO_SMARTCARD,
	           "Connect when the card is pulled during its power-up");
}

Test(faults_sim, reader_unplugged_during_a_connects_power_up)
{
	struct fm_call call;
	connect_powering(&call);
	fault_ends(&call, calais_sim_reader_unplug, SCARD_E_READER_UNAVAILABLE,
	           "Connect when the reader is unplugged during its power-up");
}
