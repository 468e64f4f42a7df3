/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix's shared checks (tests/faults/test_faults_<backend>.c): a call run on
 * its own thread and timed (the faulty reader's), and the neighbour check: a card shown
 * in another reader of the same manager while the faulty one is stuck, measured from the
 * insertion to the wake-up of a thread waiting in SCardGetStatusChange(). Bounds stretch
 * under valgrind (CALAIS_TEST_UNDER_VALGRIND) and ThreadSanitizer (CALAIS_TEST_SLOW=N).
 * Include after Criterion and <winscard.h>. */
#ifndef CALAIS_FAULTS_H
#define CALAIS_FAULTS_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The bounds the matrix checks (the isolation issue's): a neighbour's insertion is seen
 * within FM_NEIGHBOUR_MS, an exchange ends within FM_END_MS of its reader's or card's end. */
#define FM_NEIGHBOUR_MS 50
#define FM_END_MS 1000

static inline double fm_slow(void)
{
	const char *s = getenv("CALAIS_TEST_SLOW");
	if (s && atof(s) >= 1.0)
		return atof(s);
	return getenv("CALAIS_TEST_UNDER_VALGRIND") ? 20.0 : 1.0;
}

static inline long fm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A call on its own thread: fn returns the PC/SC code; started and ended are stamped. */
struct fm_call {
	pthread_t th;
	LONG (*fn)(void *arg);
	void *arg;
	LONG rv;
	long started_ms, ended_ms;
	volatile int done;
};

static void *fm_call_main(void *p)
{
	struct fm_call *c = p;
	c->rv = c->fn(c->arg);
	c->ended_ms = fm_now_ms();
	__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static inline void fm_call_start(struct fm_call *c, LONG (*fn)(void *), void *arg)
{
	memset(c, 0, sizeof(*c));
	c->fn = fn;
	c->arg = arg;
	c->started_ms = fm_now_ms();
	cr_assert_eq(pthread_create(&c->th, NULL, fm_call_main, c), 0);
}

/* Waits up to within_ms (stretched) for the call to end; false if it is still running. */
static inline bool fm_call_wait(struct fm_call *c, long within_ms)
{
	long until = fm_now_ms() + (long)(within_ms * fm_slow());
	while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) && fm_now_ms() < until) {
		struct timespec ts = { 0, 2 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
}

/* The call ended with `want` within within_ms of `since_ms` (a fault's start). Joins it. */
#define fm_assert_call_ends(c, want, since_ms, within_ms, what)                            \
	do {                                                                               \
		bool ended_ = fm_call_wait((c), (within_ms));                             \
		cr_assert(ended_, "%s: still running %ld ms after the fault", (what),       \
		          fm_now_ms() - (long)(since_ms));                                \
		pthread_join((c)->th, NULL);                                               \
		cr_assert_eq((c)->rv, (LONG)(want), "%s: got 0x%lX, want 0x%lX", (what),  \
		             (unsigned long)(c)->rv, (unsigned long)(want));              \
		cr_assert_leq((c)->ended_ms - (long)(since_ms), (long)((within_ms) * fm_slow()), \
		              "%s: ended %ld ms after the fault", (what),                 \
		              (c)->ended_ms - (long)(since_ms));                          \
	} while (0)

/* Waits up to within_ms (stretched) until `name` shows (or, present false, no longer
 * shows) a card, with its ATR or marked mute. */
static inline void fm_wait_presence(SCARDCONTEXT ctx, const char *name, bool present,
                                    long within_ms)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	long until = fm_now_ms() + (long)(within_ms * fm_slow());
	while (fm_now_ms() < until) {
		LONG rv = SCardGetStatusChange(ctx, 100, &rs, 1);
		cr_assert(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, "waiting on %s: 0x%08lX",
		          name, (unsigned long)rv);
		if (!!(rs.dwEventState & SCARD_STATE_PRESENT) == present &&
		    (!present || (rs.dwEventState & SCARD_STATE_MUTE) || rs.cbAtr))
			return;
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	}
	cr_assert_fail("%s never became %s", name, present ? "present" : "empty");
}

/* The neighbour check. A thread waits in SCardGetStatusChange() on `reader` (its own
 * context) until it shows PRESENT; insert(arg) then puts a card in; returns the delay
 * from insert()'s return to the waiter's wake-up, in ms (-1: not seen in timeout_ms). */
struct fm_waiter {
	const char *reader;
	long timeout_ms;
	volatile int ready;
	long woke_ms;
	LONG rv;
};

static void *fm_waiter_main(void *p)
{
	struct fm_waiter *w = p;
	SCARDCONTEXT ctx;
	w->woke_ms = -1;
	w->rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (w->rv != SCARD_S_SUCCESS) {
		__atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	SCARD_READERSTATE rs = { .szReader = w->reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	w->rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	long until = fm_now_ms() + w->timeout_ms;
	__atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
	while ((w->rv == SCARD_S_SUCCESS || w->rv == SCARD_E_TIMEOUT) &&
	       !(rs.dwEventState & SCARD_STATE_PRESENT) && fm_now_ms() < until) {
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
		w->rv = SCardGetStatusChange(ctx, (DWORD)(until - fm_now_ms()), &rs, 1);
	}
	if (rs.dwEventState & SCARD_STATE_PRESENT)
		w->woke_ms = fm_now_ms();
	SCardReleaseContext(ctx);
	return NULL;
}

/* The neighbour waiter's last PC/SC code, for the failure message. */
static LONG fm_waiter_rv;

static inline long fm_neighbour_latency_ms(const char *reader, void (*insert)(void *), void *arg,
                                           long timeout_ms)
{
	struct fm_waiter w = { .reader = reader, .timeout_ms = (long)(timeout_ms * fm_slow()) };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, fm_waiter_main, &w), 0);
	while (!__atomic_load_n(&w.ready, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* Let the waiter go to sleep inside the call before the card arrives. */
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	insert(arg);
	long t0 = fm_now_ms();
	pthread_join(th, NULL);
	fm_waiter_rv = w.rv;
	if (w.woke_ms < 0)
		return -1;
	/* The waiter may wake before this thread is back from insert() (valgrind's
	 * scheduling does it): no delay, not a card never shown. */
	return w.woke_ms > t0 ? w.woke_ms - t0 : 0;
}

/* The neighbour's insertion is seen within FM_NEIGHBOUR_MS (stretched). */
#define fm_assert_neighbour_sees(reader, insert, arg, what)                                \
	do {                                                                               \
		long lat_ = fm_neighbour_latency_ms((reader), (insert), (arg), 5000);     \
		cr_assert(lat_ >= 0, "%s: the neighbour's card was never shown (%s: 0x%lX)", \
		          (what), (reader), (unsigned long)fm_waiter_rv);                 \
		cr_assert_leq(lat_, (long)(FM_NEIGHBOUR_MS * fm_slow()),                 \
		              "%s: the neighbour's card was shown after %ld ms", (what), lat_); \
	} while (0)

#endif
