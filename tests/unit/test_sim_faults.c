/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The simulated backend's fault knobs (sim.h): a card silent in mid-exchange, a slow or
 * mute power-up, latency, and how each wait ends: removal, unplug, cancel (at shutdown)
 * and the exchange limit, each within its bound. */
#include "helpers.h"
#include "faults/faults.h"

TestSuite(sim_faults, .init = t_setup, .fini = t_teardown, .timeout = 20);

/* How long a wait may outlive the event that ends it: the ~100 ms of the cancel
 * contract, stretched under valgrind and TSan. */
#define PROMPT_MS 100

static const uint8_t atr_t1[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };
static const uint8_t apdu[] = { 0x00, 0xB0, 0x00, 0x00, 0x02 };

static struct t_card st;

static void put_card(struct calais_sim_card *c)
{
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	t_wait_presence(t_name, false);
	assert_rv(calais_sim_card_insert(t_reader, c), SCARD_S_SUCCESS);
}

static LONG send_one(SCARDHANDLE h)
{
	uint8_t resp[32];
	DWORD len = sizeof(resp);
	return SCardTransmit(h, SCARD_PCI_T1, apdu, sizeof(apdu), NULL, resp, &len);
}

static LONG send_call(void *arg)
{
	return send_one(*(SCARDHANDLE *)arg);
}

/* A silent card: connect works (it has its ATR), then the call waits in the backend. */
static SCARDHANDLE silent_card(uint32_t silent_after)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.silent = true;
	c.silent_after = silent_after;
	put_card(&c);
	t_wait_presence(t_name, true);
	return t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
}

/* Starts an APDU on h and checks that it is still waiting a while later. */
static void start_stuck(struct fm_call *call, SCARDHANDLE *h)
{
	fm_call_start(call, send_call, h);
	t_sleep_ms(150);
	cr_assert(!__atomic_load_n(&call->done, __ATOMIC_ACQUIRE),
	          "the silent card answered (0x%08lX)", (unsigned long)call->rv);
}

/* An APDU stuck on h ends with SCARD_W_REMOVED_CARD at once when the card is pulled,
 * without the card's apdu() being called; h is then disconnected. */
static void removal_ends_stuck(SCARDHANDLE h, const char *what)
{
	unsigned before = st.apdus;
	struct fm_call call;
	start_stuck(&call, &h);
	long t0 = fm_now_ms();
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	fm_assert_call_ends(&call, SCARD_W_REMOVED_CARD, t0, PROMPT_MS, what);
	cr_assert_eq(st.apdus, before, "%s: the silent card's apdu() was called", what);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(sim_faults, silent_card_answers_its_first_apdus_then_hangs_until_removed)
{
	SCARDHANDLE h = silent_card(2);
	assert_rv(send_one(h), SCARD_S_SUCCESS);
	assert_rv(send_one(h), SCARD_S_SUCCESS);
	cr_assert_eq(st.apdus, 2);
	removal_ends_stuck(h, "silent APDU, card removed");
}

Test(sim_faults, silent_card_waits_end_when_the_reader_is_unplugged)
{
	SCARDHANDLE h = silent_card(0);
	struct fm_call call;
	start_stuck(&call, &h);
	long t0 = fm_now_ms();
	assert_rv(calais_sim_reader_unplug(t_reader), SCARD_S_SUCCESS);
	fm_assert_call_ends(&call, SCARD_E_READER_UNAVAILABLE, t0, PROMPT_MS,
	                    "silent APDU, reader unplugged");
	cr_assert_eq(st.apdus, 0);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(sim_faults, a_reset_revives_a_silent_card)
{
	SCARDHANDLE h = silent_card(1);
	assert_rv(send_one(h), SCARD_S_SUCCESS);
	DWORD p;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &p),
	          SCARD_S_SUCCESS);
	assert_rv(send_one(h), SCARD_S_SUCCESS);
	cr_assert_eq(st.apdus, 2);
	removal_ends_stuck(h, "silent again after the reset");
}

/* calais_shutdown() cancels the call in progress through the backend's cancel(); the
 * caller gets SCARD_E_NO_SERVICE (the isolation issue's contract) or, from a core that
 * does not map the cancel yet, SCARD_E_CANCELLED. Either way: promptly. */
static void shutdown_ends(struct fm_call *call)
{
	long t0 = fm_now_ms();
	calais_shutdown();
	cr_assert(fm_call_wait(call, PROMPT_MS), "the call outlived calais_shutdown()");
	pthread_join(call->th, NULL);
	cr_assert(call->rv == SCARD_E_NO_SERVICE || call->rv == SCARD_E_CANCELLED,
	          "got %s", t_err(call->rv));
	cr_assert_leq(call->ended_ms - t0, (long)(PROMPT_MS * fm_slow()),
	              "ended %ld ms after the shutdown began", call->ended_ms - t0);
}

Test(sim_faults, cancel_ends_a_silent_wait)
{
	SCARDHANDLE h = silent_card(0);
	struct fm_call call;
	start_stuck(&call, &h);
	shutdown_ends(&call);
}

Test(sim_faults, cancel_ends_a_latency_wait)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.latency_us = 30u * 1000u * 1000u;
	put_card(&c);
	t_wait_presence(t_name, true);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	struct fm_call call;
	start_stuck(&call, &h);
	shutdown_ends(&call);
	cr_assert_eq(st.apdus, 0);
}

/* The exchange limit: the core passes it to transmit(), which ends a silent or too slow
 * card's APDU there with SCARD_E_TIMEOUT. */
static void limited_setup(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.exchange_timeout_ms = 300;
	t_setup_cfg(&cfg);
}

static void timed_out(SCARDHANDLE h, struct t_card *card)
{
	long t0 = fm_now_ms();
	assert_rv(send_one(h), SCARD_E_TIMEOUT);
	long took = fm_now_ms() - t0;
	cr_assert_geq(took, 290, "the limit cut the APDU after %ld ms", took);
	cr_assert_leq(took, (long)((300 + PROMPT_MS) * fm_slow()), "ended after %ld ms", took);
	cr_assert_eq(card->apdus, 0);
	/* The card is still there and the handle usable. */
	SCARD_READERSTATE rs = { .szReader = t_name };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(sim_faults, the_exchange_limit_ends_a_silent_apdu, .init = limited_setup)
{
	timed_out(silent_card(0), &st);
}

static void slow_card_timed_out(uint32_t latency_us)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.latency_us = latency_us;
	put_card(&c);
	t_wait_presence(t_name, true);
	timed_out(t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1), &st);
}

Test(sim_faults, the_exchange_limit_ends_a_slow_apdu, .init = limited_setup)
{
	slow_card_timed_out(5u * 1000u * 1000u);
}

/* The largest latency (71 minutes) is a wait like any other, not a wrapped-around one
 * that answered at once (found by the bench helper). */
Test(sim_faults, the_largest_latency_waits_too, .init = limited_setup)
{
	slow_card_timed_out(UINT32_MAX);
}

/* Waits up to within_ms for reader `name` to show `want` (all of its bits); returns how
 * long it took, -1 if never. */
static long wait_state(const char *name, DWORD want, long within_ms)
{
	long t0 = fm_now_ms(), until = t0 + (long)(within_ms * fm_slow());
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	while (fm_now_ms() < until) {
		LONG rv = SCardGetStatusChange(t_ctx, (DWORD)(until - fm_now_ms()), &rs, 1);
		cr_assert(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, "%s", t_err(rv));
		if ((rs.dwEventState & want) == want)
			return fm_now_ms() - t0;
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	}
	return -1;
}

Test(sim_faults, a_slow_power_up_shows_the_card_after_its_atr_delay)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.atr_delay_ms = 300;
	put_card(&c);
	long took = wait_state(t_name, SCARD_STATE_PRESENT, 2000);
	cr_assert_geq(took, 250, "the card was shown after %ld ms, before its ATR", took);
	SCARD_READERSTATE rs = { .szReader = t_name };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert_eq(rs.cbAtr, sizeof(atr_t1));
	cr_assert(!(rs.dwEventState & SCARD_STATE_MUTE));
	/* A reset waits for the ATR again. */
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	DWORD p;
	long t0 = fm_now_ms();
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &p),
	          SCARD_S_SUCCESS);
	cr_assert_geq(fm_now_ms() - t0, 290);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(sim_faults, a_mute_card_is_declared_mute_after_its_atr_delay)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.mute = true;
	c.atr_delay_ms = 300;
	put_card(&c);
	long took = wait_state(t_name, SCARD_STATE_PRESENT | SCARD_STATE_MUTE, 2000);
	cr_assert_geq(took, 250, "the card was shown mute after %ld ms", took);
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p),
	          SCARD_W_UNRESPONSIVE_CARD);
}

Test(sim_faults, removal_ends_a_slow_power_up)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card slow = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	slow.atr_delay_ms = 20u * 1000u;
	put_card(&slow);
	t_sleep_ms(100); /* the power-up is waiting for the ATR */
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	/* The power-up that waited for the slow ATR is over: a card inserted now is shown
	 * at once. */
	struct t_card st2 = { 0 };
	struct calais_sim_card quick = t_card_desc(&st2, atr_t1, sizeof(atr_t1));
	assert_rv(calais_sim_card_insert(t_reader, &quick), SCARD_S_SUCCESS);
	long took = wait_state(t_name, SCARD_STATE_PRESENT, 2000);
	cr_assert(took >= 0 && took <= (long)(PROMPT_MS * fm_slow()),
	          "the next card was shown after %ld ms", took);
	cr_assert_eq(st.resets, 0, "the removed slow card was powered");
	cr_assert_eq(st2.resets, 1);
}

Test(sim_faults, unplug_ends_a_slow_power_up)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card slow = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	slow.atr_delay_ms = 20u * 1000u;
	put_card(&slow);
	t_sleep_ms(100);
	long t0 = fm_now_ms();
	assert_rv(calais_sim_reader_unplug(t_reader), SCARD_S_SUCCESS);
	/* The reader's close waits for the power-up: a new reader's card is shown at once
	 * only if the worker is free again. */
	char name[MAX_READERNAME];
	calais_sim_reader *r2 = t_add_reader("Second", name);
	struct t_card st2 = { 0 };
	struct calais_sim_card quick = t_card_desc(&st2, atr_t1, sizeof(atr_t1));
	assert_rv(calais_sim_card_insert(r2, &quick), SCARD_S_SUCCESS);
	long took = wait_state(name, SCARD_STATE_PRESENT, 2000);
	cr_assert(took >= 0 && fm_now_ms() - t0 <= (long)(PROMPT_MS * fm_slow()),
	          "the next card was shown %ld ms after the unplug", fm_now_ms() - t0);
	cr_assert_eq(st.resets, 0);
}

Test(sim_faults, the_exchange_limit_cuts_a_slow_power_up, .init = limited_setup)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.atr_delay_ms = 5000;
	put_card(&c);
	long took = wait_state(t_name, SCARD_STATE_PRESENT | SCARD_STATE_MUTE, 3000);
	cr_assert(took >= 250 && took <= (long)((300 + PROMPT_MS) * fm_slow()),
	          "the card was shown mute after %ld ms", took);
	cr_assert_eq(st.resets, 0, "the cut power-up reset the card");
}

/* A card pulled while its slow power-up waits, and another inserted at once: the new
 * card must be shown with its ATR. The library cancels the first power-up at the removal;
 * that cancel must not make the new card mute, nor the removal's answer hide it. */
Test(sim_faults, a_card_swapped_during_a_slow_power_up_is_shown_with_its_atr, .timeout = 60)
{
	int lost = 0, mute = 0;
	for (int i = 0; i < 10; i++) {
		memset(&st, 0, sizeof(st));
		struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
		c.atr_delay_ms = 150;
		put_card(&c);
		t_sleep_ms(50 + (unsigned)i % 5); /* inside the power-up */
		assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
		assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
		if (wait_state(t_name, SCARD_STATE_PRESENT, 1000) < 0) {
			lost++;
			continue;
		}
		SCARD_READERSTATE rs = { .szReader = t_name };
		assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
		mute += (rs.dwEventState & SCARD_STATE_MUTE) || rs.cbAtr != sizeof(atr_t1);
	}
	cr_assert_eq(lost + mute, 0, "of 10 cards swapped in, %d never shown, %d shown mute", lost,
	             mute);
}

/* A card the transport declares unresponsive in mid-session (T=1: RESYNCH failed three
 * times, ISO/IEC 7816-3 11.6.3.2) is deactivated: not shown powered, the next APDU gets
 * SCARD_W_UNPOWERED_CARD, a reconnect with a reset brings it back. */
static LONG unresponsive_apdu(void *user, const uint8_t *a, size_t n, uint8_t *resp,
                              size_t *resp_len)
{
	(void)user, (void)a, (void)n, (void)resp, (void)resp_len;
	return SCARD_W_UNRESPONSIVE_CARD;
}

Test(sim_faults, an_unresponsive_card_is_deactivated)
{
	memset(&st, 0, sizeof(st));
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	c.apdu = unresponsive_apdu;
	put_card(&c);
	t_wait_presence(t_name, true);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(send_one(h), SCARD_W_UNRESPONSIVE_CARD);
	char rn[MAX_READERNAME];
	DWORD rl = sizeof(rn), state = 0, proto = 0, al = MAX_ATR_SIZE;
	uint8_t atr[MAX_ATR_SIZE];
	SCardStatus(h, rn, &rl, &state, &proto, atr, &al);
	cr_assert(!(state & SCARD_POWERED), "state 0x%lX", (unsigned long)state);
	assert_rv(send_one(h), SCARD_W_UNPOWERED_CARD);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &proto),
	          SCARD_S_SUCCESS);
	assert_rv(SCardStatus(h, rn, &rl, &state, &proto, atr, &al), SCARD_S_SUCCESS);
	cr_assert(state & SCARD_POWERED, "state 0x%lX", (unsigned long)state);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}
