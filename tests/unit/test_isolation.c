/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The core's isolation and bounds, through a third-party backend whose calls block until
 * the core cancels them: a reader stuck in a power-up or an exchange delays no other
 * reader's events; a reader removed, a card pulled, the exchange limit or a shutdown ends
 * an exchange in progress with its code; a cancel reaches only the call it was meant
 * for; a hold ends when its transaction does; a call that outlives its reader and its
 * last handle touches nothing freed (ASan). */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>

#define N_READERS 3

struct blk {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool cancel;         /* cancel() called for the call in progress */
	bool block_power;    /* power_on waits for a cancel (a mute card) */
	bool block_tx;       /* transmit waits for a cancel (a card silent mid-exchange) */
	bool remove_in_tx;   /* transmit reports the reader gone, then fails */
	int cancel_linger_ms; /* cancel() returns this long after it ended the call */
	atomic_int cancels, holds, unholds, in_call;
};

/* The state lives here, not in the readers' private blocks, so the test may look at it
 * after a reader is gone; a reader's private block points at its entry. */
static struct blk blks[N_READERS];
static struct blk *const privs[N_READERS] = { &blks[0], &blks[1], &blks[2] };
static calais_reader *readers[N_READERS];
#define BLK(r) (*(struct blk **)calais_reader_priv(r))
static char names[N_READERS][MAX_READERNAME];

static double slow(void)
{
	const char *s = getenv("CALAIS_TEST_SLOW");
	if (s && atof(s) >= 1.0)
		return atof(s);
	return getenv("CALAIS_TEST_UNDER_VALGRIND") ? 20.0 : 1.0;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits for a cancel; returns SCARD_E_CANCELLED, or SCARD_S_SUCCESS after 30 s. */
static LONG wait_cancel(struct blk *p)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&p->lock);
	while (!p->cancel && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
		;
	LONG rv = p->cancel ? SCARD_E_CANCELLED : SCARD_S_SUCCESS;
	pthread_mutex_unlock(&p->lock);
	return rv;
}

/* Each call starts with its cancel flag clear, as backend.h asks. */
static void call_begins(struct blk *p)
{
	pthread_mutex_lock(&p->lock);
	p->cancel = false;
	pthread_mutex_unlock(&p->lock);
}

static LONG bk_init(calais_backend_instance *bi)
{
	for (int i = 0; i < N_READERS; i++) {
		char base[32];
		snprintf(base, sizeof(base), "Blocking Reader %d", i);
		struct calais_reader_desc d = { .name = base };
		LONG rv = calais_reader_new(bi, &d, &readers[i]);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		BLK(readers[i]) = privs[i];
		rv = calais_reader_publish(readers[i], false);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		snprintf(names[i], sizeof(names[i]), "%s", calais_reader_name(readers[i]));
	}
	return SCARD_S_SUCCESS;
}

static LONG bk_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct blk *p = BLK(r);
	(void)warm;
	call_begins(p);
	if (p->block_power && wait_cancel(p) != SCARD_S_SUCCESS)
		return SCARD_E_CANCELLED;
	static const uint8_t a[] = { 0x3B, 0x00 };
	memcpy(atr, a, sizeof(a));
	*atr_len = sizeof(a);
	return SCARD_S_SUCCESS;
}

static LONG bk_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                        uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct blk *p = BLK(r);
	(void)protocol, (void)tx, (void)tx_len;
	call_begins(p);
	if (timeout_ms == 0)
		return SCARD_F_INTERNAL_ERROR; /* the core always passes its exchange limit */
	p->in_call++;
	if (p->remove_in_tx) {
		calais_reader_remove(r);
		p->in_call--;
		return SCARD_E_READER_UNAVAILABLE;
	}
	LONG rv = p->block_tx ? wait_cancel(p) : SCARD_S_SUCCESS;
	p->in_call--;
	if (rv != SCARD_S_SUCCESS)
		return rv;
	rx[0] = 0x90, rx[1] = 0x00, *rx_len = 2;
	return SCARD_S_SUCCESS;
}

static void bk_cancel(calais_reader *r)
{
	struct blk *p = BLK(r);
	p->cancels++;
	pthread_mutex_lock(&p->lock);
	p->cancel = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (p->cancel_linger_ms)
		t_sleep_ms((unsigned)p->cancel_linger_ms);
}

static LONG bk_hold(calais_reader *r, bool held)
{
	struct blk *p = BLK(r);
	call_begins(p);
	if (held)
		p->holds++;
	else
		p->unholds++;
	return SCARD_S_SUCCESS;
}

/* The threads of this process, from /proc/self/task; -1 where there is none. */
static int count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static const struct calais_backend blocking_backend = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "blocktest",
	.caps = CALAIS_BACKEND_CAP_CARD_EVENTS | CALAIS_BACKEND_CAP_HOTPLUG,
	.reader_priv_size = sizeof(struct blk *),
	.init = bk_init,
	.power_on = bk_power_on,
	.transmit = bk_transmit,
	.cancel = bk_cancel,
	.hold = bk_hold,
};

static void start_with(uint32_t exchange_timeout_ms)
{
	struct calais_config cfg;
	calais_shutdown();
	for (int i = 0; i < N_READERS; i++) {
		struct blk *p = &blks[i];
		memset(p, 0, sizeof(*p));
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->cond, NULL);
	}
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.exchange_timeout_ms = exchange_timeout_ms;
	if (getenv("CALAIS_TEST_LOG")) {
		cfg.log_level = CALAIS_LOG_DEBUG;
		cfg.log_level_set = true;
	}
	assert_rv(calais_backend_register(&blocking_backend), SCARD_S_SUCCESS);
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &t_ctx), SCARD_S_SUCCESS);
}

static void setup(void)
{
	start_with(0);
}

TestSuite(isolation, .init = setup, .fini = t_teardown, .timeout = 60);

/* A card inserted in reader i, seen by a waiter within bound_ms (stretched): the delay. */
struct seen {
	int reader;
	long woke;
};

static LONG wait_present(void *arg)
{
	struct seen *s = arg;
	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	SCARD_READERSTATE rs = { .szReader = names[s->reader], .dwCurrentState = SCARD_STATE_UNAWARE };
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	long until = now_ms() + (long)(10000 * slow());
	while (rv == SCARD_S_SUCCESS && !(rs.dwEventState & SCARD_STATE_PRESENT) &&
	       now_ms() < until) {
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
		rv = SCardGetStatusChange(ctx, (DWORD)(until - now_ms()), &rs, 1);
	}
	s->woke = (rs.dwEventState & SCARD_STATE_PRESENT) ? now_ms() : -1;
	SCardReleaseContext(ctx);
	return rv;
}

static long insertion_delay(int i)
{
	struct seen s = { .reader = i };
	t_thread *w = t_spawn(wait_present, &s);
	t_sleep_ms(30); /* the waiter is inside SCardGetStatusChange */
	long t0 = now_ms();
	calais_reader_card_event(readers[i], true);
	assert_rv(t_join(w), SCARD_S_SUCCESS);
	cr_assert_geq(s.woke, 0, "the card in \"%s\" was never shown", names[i]);
	return s.woke - t0;
}

static void assert_neighbour_fine(int i)
{
	long d = insertion_delay(i);
	cr_assert_leq(d, (long)(50 * slow()), "insertion in \"%s\" shown after %ld ms", names[i], d);
}

static void wait_in_call(struct blk *p)
{
	for (int i = 0; i < 500 && !p->in_call; i++)
		t_sleep_ms(2);
	cr_assert(p->in_call, "the exchange never reached the backend");
}

Test(isolation, mute_card_at_power_up_delays_no_other_reader)
{
	privs[0]->block_power = true;
	calais_reader_card_event(readers[0], true); /* its power-up now blocks */
	t_sleep_ms(30);
	assert_neighbour_fine(1);
	/* The stuck power-up ends with the reader's removal, which cancels it. */
	calais_reader_remove(readers[0]);
	for (int i = 0; i < 100 && !privs[0]->cancels; i++)
		t_sleep_ms(10);
	cr_assert_geq(privs[0]->cancels, 1, "removing the reader did not cancel its power-up");
}

Test(isolation, readers_behind_stuck_ones_get_a_runner_of_their_own)
{
	/* Two stuck power-ups hold the runners that start at once; a third reader's card is
	 * still shown in time (the pool grows while work waits). */
	privs[0]->block_power = privs[1]->block_power = true;
	calais_reader_card_event(readers[0], true);
	calais_reader_card_event(readers[1], true);
	t_sleep_ms(30);
	assert_neighbour_fine(2);
	calais_reader_remove(readers[0]);
	calais_reader_remove(readers[1]);
}

struct xmit {
	SCARDHANDLE h;
	long ended;
};

static LONG do_xmit(void *arg)
{
	struct xmit *x = arg;
	static const uint8_t apdu[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
	uint8_t resp[258];
	DWORD len = sizeof(resp);
	LONG rv = SCardTransmit(x->h, SCARD_PCI_T0, apdu, sizeof(apdu), NULL, resp, &len);
	x->ended = now_ms();
	return rv;
}

static SCARDHANDLE connect_card(int i)
{
	calais_reader_card_event(readers[i], true);
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	for (int k = 0; k < 100; k++) {
		LONG rv = SCardConnect(t_ctx, names[i], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto);
		if (rv == SCARD_S_SUCCESS)
			return h;
		t_sleep_ms(10);
	}
	cr_assert_fail("cannot connect to \"%s\"", names[i]);
	return 0;
}

/* Starts a Transmit on reader 0 that blocks in the backend; runs `fault`; checks the
 * code and that it ended within 1 s of the fault, the neighbour unaffected meanwhile. */
static void stuck_exchange(void (*fault)(void), LONG want, long bound_ms, bool neighbour)
{
	struct xmit x = { .h = connect_card(0) };
	privs[0]->block_tx = true;
	t_thread *t = t_spawn(do_xmit, &x);
	wait_in_call(privs[0]);
	if (neighbour)
		assert_neighbour_fine(1);
	long t0 = now_ms();
	if (fault)
		fault();
	LONG rv = t_join(t);
	assert_rv(rv, want);
	cr_assert_leq(x.ended - t0, (long)(bound_ms * slow()), "the exchange ended %ld ms after the fault",
	              x.ended - t0);
	privs[0]->block_tx = false;
}

static void remove_reader0(void)
{
	calais_reader_remove(readers[0]);
}

static void pull_card0(void)
{
	calais_reader_card_event(readers[0], false);
}

Test(isolation, reader_removed_mid_exchange_ends_it)
{
	stuck_exchange(remove_reader0, SCARD_E_READER_UNAVAILABLE, 1000, true);
}

Test(isolation, card_pulled_mid_exchange_ends_it)
{
	stuck_exchange(pull_card0, SCARD_W_REMOVED_CARD, 1000, true);
}

Test(isolation, a_cancel_reaches_only_its_own_call)
{
	stuck_exchange(pull_card0, SCARD_W_REMOVED_CARD, 1000, false);
	/* The card comes back: the next exchange on the reader is not cancelled. */
	struct xmit x = { .h = connect_card(0) };
	t_sleep_ms(150); /* past the scheduler's resend interval */
	assert_rv(do_xmit(&x), SCARD_S_SUCCESS);
	SCardDisconnect(x.h, SCARD_LEAVE_CARD);
}

static LONG shutdown_now(void *arg)
{
	(void)arg;
	calais_shutdown();
	return SCARD_S_SUCCESS;
}

static void shut_down(void)
{
	t_thread *t = t_spawn(shutdown_now, NULL);
	t_join(t);
}

Test(isolation, shutdown_mid_exchange_ends_it)
{
	stuck_exchange(shut_down, SCARD_E_NO_SERVICE, 1000, false);
}

Test(isolation, the_exchange_limit_ends_a_silent_card)
{
	start_with(300);
	long t0 = now_ms();
	stuck_exchange(NULL, SCARD_E_TIMEOUT, 300 + 1000, true);
	cr_assert_geq(now_ms() - t0, 250, "ended before the limit");
}

Test(isolation, a_call_outliving_its_reader_and_handle_touches_nothing_freed)
{
	/* The backend reports the device gone from inside the exchange, the runner closes
	 * the reader and another thread disconnects the last handle, while the call is
	 * still on its way out (ASan sees any touch of the freed reader). */
	for (int round = 0; round < 20; round++) {
		start_with(0);
		struct xmit x = { .h = connect_card(0) };
		privs[0]->remove_in_tx = true;
		t_thread *t = t_spawn(do_xmit, &x);
		SCardDisconnect(x.h, SCARD_LEAVE_CARD);
		LONG rv = t_join(t);
		cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_E_INVALID_HANDLE, "%s",
		          t_err(rv));
	}
}

Test(isolation, a_hold_ends_with_its_transaction)
{
	SCARDHANDLE h = connect_card(0);
	assert_rv(SCardBeginTransaction(h), SCARD_S_SUCCESS);
	cr_assert_eq(privs[0]->holds, 1);
	/* Ended by a disconnect that resets the card: the release comes before the reset's
	 * I/O, and the hold must still end (not at some later, unrelated wake-up). */
	assert_rv(SCardDisconnect(h, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	for (int i = 0; i < 100 && !privs[0]->unholds; i++)
		t_sleep_ms(5);
	cr_assert_eq(privs[0]->unholds, 1, "the backend's hold outlived the transaction");
}

Test(isolation, no_runner_starts_after_the_shutdown_saw_the_last_one_leave)
{
	/* The scheduler is in a backend's cancel() (it ended the call at once, and returns
	 * late) while calais_shutdown() finds no call and no runner left; a job is due on
	 * another reader. Back, the scheduler must not start a runner for it: that thread
	 * would outlive the manager, never joined (ThreadSanitizer's "thread leak", its
	 * block lost for ASan and valgrind). */
	calais_shutdown();
	int before = count_threads();
	/* A late runner leaves at once (nothing runs once stopping): it is seen alive after
	 * the shutdown, or left unjoined (ThreadSanitizer), in one round of several. */
	for (int round = 0; round < 20; round++) {
		start_with(0);
		struct xmit x = { .h = connect_card(0) };
		privs[0]->block_tx = true;
		privs[0]->cancel_linger_ms = 50;
		t_thread *t = t_spawn(do_xmit, &x);
		wait_in_call(privs[0]);
		pull_card0(); /* the scheduler sends the cancel */
		assert_rv(t_join(t), SCARD_W_REMOVED_CARD);
		calais_reader_card_event(readers[1], true); /* a power-up due */
		calais_shutdown();
		int after = count_threads();
		if (before >= 0)
			cr_assert_leq(after, before, "round %d: %d threads before the start, %d after "
			              "the shutdown", round, before, after);
	}
}
