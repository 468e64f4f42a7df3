/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Concurrency stress: many threads mixing every PC/SC call while cards come and go and
 * readers are plugged and unplugged. Every return code must be one the call may give in
 * that situation; responses must be right; no deadlock (Criterion's timeout), no crash,
 * no leak. In the mix, a stuck reader: its card never answers an APDU (the exchange limit
 * ends each one) and takes long to power up; threads that use it get their bounded
 * errors, and a probe reader's insertions must keep being shown promptly meanwhile. Also:
 * 1000 waiters woken by one insertion. Run under ThreadSanitizer by scripts/test.
 * CALAIS_STRESS_SECONDS sets the duration (default 10). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

#include "faults/faults.h"

#define N_WORKERS 16
#define MAX_CODES 32

static atomic_bool stop;

/* Per-code counters, and the first illegal code seen with its call. */
static struct {
	LONG code;
	atomic_long count;
} codes[MAX_CODES];
static atomic_int n_codes;
static pthread_mutex_t codes_lock = PTHREAD_MUTEX_INITIALIZER;
static char illegal[256];
static atomic_long bad_responses, transmits_ok;

static void count(LONG rv)
{
	for (int i = 0; i < atomic_load(&n_codes); i++)
		if (codes[i].code == rv) {
			codes[i].count++;
			return;
		}
	pthread_mutex_lock(&codes_lock);
	int i;
	for (i = 0; i < n_codes; i++)
		if (codes[i].code == rv)
			break;
	if (i == n_codes && i < MAX_CODES) {
		codes[i].code = rv;
		atomic_store(&n_codes, i + 1);
	}
	pthread_mutex_unlock(&codes_lock);
	if (i < MAX_CODES)
		codes[i].count++;
}

/* Records rv and checks it against the codes legal for the call. */
static void check(const char *call, LONG rv, const LONG *legal, size_t n)
{
	count(rv);
	for (size_t i = 0; i < n; i++)
		if (legal[i] == rv)
			return;
	pthread_mutex_lock(&codes_lock);
	if (!illegal[0])
		snprintf(illegal, sizeof(illegal), "%s returned 0x%08lX (%s)", call,
		         (unsigned long)rv, pcsc_stringify_error(rv));
	pthread_mutex_unlock(&codes_lock);
}
#define CHECK(call, rv, ...)                                                             \
	do {                                                                             \
		static const LONG legal_[] = { __VA_ARGS__ };                            \
		check(call, rv, legal_, sizeof(legal_) / sizeof(legal_[0]));             \
	} while (0)

/* The card-use codes any handle call may meet while cards and readers churn. */
#define CARD_CHURN SCARD_S_SUCCESS, SCARD_W_RESET_CARD, SCARD_W_REMOVED_CARD, \
	SCARD_E_NO_SMARTCARD, SCARD_E_READER_UNAVAILABLE

static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
#define N_SLOTS 4
static char names[N_SLOTS][MAX_READERNAME];

/* The stuck reader: its card (silent, slow to power up, though within the limit, which
 * bounds power-ups too) never answers an APDU; the exchange limit, STUCK_LIMIT_MS, ends
 * each. Workers pick it for one call in STUCK_ONE_IN (more, and most of them queue on
 * it), a thread of its own keeps sending it APDUs, and the chaos thread swaps its card
 * about once a second. */
#define STUCK_ONE_IN 16
#define STUCK_LIMIT_MS 200
#define STUCK_ATR_DELAY_MS 150
static char stuck_name[MAX_READERNAME];
static atomic_long stuck_calls, stuck_timeouts, stuck_longest_ms;

/* The probe reader, used by nobody but the probe thread: the delay from each insertion
 * to its waiter's wake-up. Loaded (16 workers on 2 cores), it stays under 30 ms. */
#define PROBE_MS 100
#define MIN_PROBES 3
static atomic_long probes, probes_slow, probe_longest_ms;

static bool pick_name(unsigned *seed, char out[MAX_READERNAME])
{
	if (rand_r(seed) % STUCK_ONE_IN == 0) {
		memcpy(out, stuck_name, MAX_READERNAME);
		return true;
	}
	unsigned i = rand_r(seed) % N_SLOTS;
	pthread_mutex_lock(&names_lock);
	memcpy(out, names[i], MAX_READERNAME);
	pthread_mutex_unlock(&names_lock);
	return false;
}

static void atomic_max(atomic_long *a, long v)
{
	long cur = atomic_load(a);
	while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

/* Returns the first command's code. */
static LONG exchange(SCARDHANDLE h, DWORD proto, bool stuck)
{
	static const BYTE sel[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
	static const BYTE rd[] = { 0x00, 0xB0, 0x00, 0x00, 0x05 };
	BYTE r[300];
	DWORD len = sizeof(r);
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
	long t0 = fm_now_ms();
	LONG rv = SCardTransmit(h, pci, sel, sizeof(sel), NULL, r, &len);
	if (stuck) {
		/* Never an answer: the limit, or the card swapped or reset meanwhile. */
		CHECK("Transmit(stuck)", rv, SCARD_E_TIMEOUT, SCARD_W_RESET_CARD, SCARD_W_REMOVED_CARD,
		      SCARD_E_NO_SMARTCARD, SCARD_E_PROTO_MISMATCH, SCARD_W_UNPOWERED_CARD);
		stuck_calls++;
		stuck_timeouts += rv == SCARD_E_TIMEOUT;
		atomic_max(&stuck_longest_ms, fm_now_ms() - t0);
		return rv;
	}
	CHECK("Transmit(select)", rv, CARD_CHURN, SCARD_E_PROTO_MISMATCH, SCARD_W_UNPOWERED_CARD);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (len != 2 || r[0] != 0x90)
		bad_responses++;
	len = sizeof(r);
	rv = SCardTransmit(h, pci, rd, sizeof(rd), NULL, r, &len);
	CHECK("Transmit(read)", rv, CARD_CHURN, SCARD_W_UNPOWERED_CARD);
	if (rv != SCARD_S_SUCCESS)
		return SCARD_S_SUCCESS;
	/* After a reset between the two commands the card answers 69 86 (no file). */
	if (!((len == 7 && memcmp(r, "Hello\x90\x00", 7) == 0) || (len == 2 && r[0] == 0x69)))
		bad_responses++;
	else
		transmits_ok++;
	return SCARD_S_SUCCESS;
}

static void *worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
	while (!stop) {
		SCARDCONTEXT c;
		LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c);
		CHECK("EstablishContext", rv, SCARD_S_SUCCESS);
		if (rv)
			continue;
		for (int k = 0; k < 30 && !stop; k++) {
			char name[MAX_READERNAME];
			bool stuck = pick_name(&seed, name);
			DWORD len = 0;
			CHECK("ListReaders", SCardListReaders(c, NULL, NULL, &len), SCARD_S_SUCCESS,
			      SCARD_E_NO_READERS_AVAILABLE);
			SCARD_READERSTATE rs = { .szReader = name };
			CHECK("GetStatusChange", SCardGetStatusChange(c, rand_r(&seed) % 3, &rs, 1),
			      SCARD_S_SUCCESS, SCARD_E_TIMEOUT, SCARD_E_UNKNOWN_READER, SCARD_E_CANCELLED);
			DWORD share = 1 + rand_r(&seed) % 3, proto = 0;
			SCARDHANDLE h;
			rv = SCardConnect(c, name, share, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto);
			CHECK("Connect", rv, SCARD_S_SUCCESS, SCARD_E_SHARING_VIOLATION, SCARD_E_NO_SMARTCARD,
			      SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE, SCARD_W_UNRESPONSIVE_CARD,
			      SCARD_W_REMOVED_CARD);
			if (rv != SCARD_S_SUCCESS)
				continue;
			int depth = rand_r(&seed) % 3;
			int begun = 0;
			for (int d = 0; d < depth; d++) {
				rv = SCardBeginTransaction(h);
				CHECK("BeginTransaction", rv, CARD_CHURN, SCARD_E_CANCELLED);
				begun += rv == SCARD_S_SUCCESS;
			}
			if (share != SCARD_SHARE_DIRECT)
				exchange(h, proto, stuck);
			DWORD state, p2, alen = MAX_ATR_SIZE;
			BYTE atr[MAX_ATR_SIZE];
			CHECK("Status", SCardStatus(h, NULL, NULL, &state, &p2, atr, &alen), CARD_CHURN,
			      SCARD_E_CANCELLED);
			BYTE attr[300];
			len = sizeof(attr);
			/* Another handle's transaction: refused at once, as by pcscd. */
			CHECK("GetAttrib", SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, attr, &len), CARD_CHURN,
			      SCARD_E_CANCELLED, SCARD_E_SHARING_VIOLATION);
			if (rand_r(&seed) % 8 == 0)
				CHECK("Reconnect", SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY,
				                                  rand_r(&seed) % 3, &p2),
				      SCARD_S_SUCCESS, SCARD_E_SHARING_VIOLATION, SCARD_E_NO_SMARTCARD,
				      SCARD_E_READER_UNAVAILABLE, SCARD_W_UNRESPONSIVE_CARD,
				      SCARD_E_CANCELLED);
			/* A removal ends our transaction; after a Reconnect another handle may hold
			 * one, and ending ours then is a sharing violation, as in pcsc-lite. */
			for (int d = 0; d < begun; d++)
				CHECK("EndTransaction", SCardEndTransaction(h, rand_r(&seed) % 5 == 0), CARD_CHURN,
				      SCARD_E_NOT_TRANSACTED, SCARD_E_SHARING_VIOLATION);
			if (rand_r(&seed) % 10 == 0)
				CHECK("Cancel", SCardCancel(c), SCARD_S_SUCCESS);
			CHECK("Disconnect", SCardDisconnect(h, rand_r(&seed) % 4), SCARD_S_SUCCESS);
		}
		CHECK("ReleaseContext", SCardReleaseContext(c), SCARD_S_SUCCESS);
	}
	return NULL;
}

/* Waits in long GetStatusChange calls and gets cancelled by the workers' contexts'
 * neighbours: here, by itself from the chaos thread. */
static SCARDCONTEXT waiter_ctx;
static void *waiter(void *arg)
{
	(void)arg;
	while (!stop) {
		SCARD_READERSTATE rs[N_SLOTS + 1];
		char local[N_SLOTS][MAX_READERNAME];
		pthread_mutex_lock(&names_lock);
		memcpy(local, names, sizeof(local));
		pthread_mutex_unlock(&names_lock);
		rs[0] = (SCARD_READERSTATE){ .szReader = "\\\\?PnP?\\Notification" };
		for (int i = 0; i < N_SLOTS; i++)
			rs[i + 1] = (SCARD_READERSTATE){ .szReader = local[i] };
		LONG rv = SCardGetStatusChange(waiter_ctx, 0, rs, N_SLOTS + 1);
		CHECK("GetStatusChange(all)", rv, SCARD_S_SUCCESS, SCARD_E_TIMEOUT, SCARD_E_UNKNOWN_READER);
		if (rv != SCARD_S_SUCCESS)
			continue;
		for (int i = 0; i <= N_SLOTS; i++)
			rs[i].dwCurrentState = rs[i].dwEventState & ~SCARD_STATE_CHANGED;
		rv = SCardGetStatusChange(waiter_ctx, 500, rs, N_SLOTS + 1);
		CHECK("GetStatusChange(wait)", rv, SCARD_S_SUCCESS, SCARD_E_TIMEOUT, SCARD_E_CANCELLED,
		      SCARD_E_UNKNOWN_READER);
	}
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static const uint8_t stuck_atr[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };

static LONG never_called(void *user, const uint8_t *apdu, size_t n, uint8_t *resp, size_t *len)
{
	(void)user, (void)apdu, (void)n, (void)resp, (void)len;
	bad_responses++;
	return SCARD_F_INTERNAL_ERROR;
}

static const struct calais_sim_card stuck_card = {
	.atr = stuck_atr, .atr_len = sizeof(stuck_atr), .apdu = never_called,
	.atr_delay_ms = STUCK_ATR_DELAY_MS, .silent = true,
};

static calais_sim_reader *stuck_reader, *probe_reader;

/* Stays connected to the stuck reader and sends it APDUs, so that the limit ends some
 * however the workers' picks fall; connects again after a reset or a swap of its card. */
static void *stuck_user(void *arg)
{
	(void)arg;
	SCARDCONTEXT c;
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	while (!stop) {
		SCARDHANDLE h;
		DWORD proto;
		LONG rv = SCardConnect(c, stuck_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		                       &h, &proto);
		CHECK("Connect(stuck)", rv, SCARD_S_SUCCESS, SCARD_E_NO_SMARTCARD, SCARD_W_UNRESPONSIVE_CARD,
		      SCARD_W_REMOVED_CARD, SCARD_E_SHARING_VIOLATION);
		if (rv != SCARD_S_SUCCESS) {
			sleep_ms(10);
			continue;
		}
		/* A reset or a swap of the card (other threads) ends the handle's run. */
		while (!stop && exchange(h, proto, true) == SCARD_E_TIMEOUT)
			;
		CHECK("Disconnect(stuck)", SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	}
	SCardReleaseContext(c);
	return NULL;
}

/* Inserts and removes the probe's card, timing how long each insertion takes to be shown
 * to a waiter. Slow ones (over PROBE_MS, stretched) are counted. */
static void *probe(void *arg)
{
	(void)arg;
	SCARDCONTEXT c;
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	char name[MAX_READERNAME];
	snprintf(name, sizeof(name), "%s", calais_sim_reader_name(probe_reader));
	unsigned seed = 7;
	while (!stop) {
		SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
		CHECK("GetStatusChange(probe)", SCardGetStatusChange(c, 0, &rs, 1), SCARD_S_SUCCESS);
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
		cr_assert_eq(calais_sim_card_insert(probe_reader, calais_sim_democard()), SCARD_S_SUCCESS);
		long t0 = fm_now_ms(), lat = -1;
		while (fm_now_ms() - t0 < 5000) {
			LONG rv = SCardGetStatusChange(c, 5000, &rs, 1);
			CHECK("GetStatusChange(probe)", rv, SCARD_S_SUCCESS, SCARD_E_TIMEOUT);
			if ((rs.dwEventState & SCARD_STATE_PRESENT) && rs.cbAtr) {
				lat = fm_now_ms() - t0;
				break;
			}
			rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
		}
		if (lat < 0)
			lat = 5000;
		probes++;
		probes_slow += lat > (long)(PROBE_MS * fm_slow());
		atomic_max(&probe_longest_ms, lat);
		cr_assert_eq(calais_sim_card_remove(probe_reader), SCARD_S_SUCCESS);
		sleep_ms(10 + rand_r(&seed) % 20);
	}
	SCardReleaseContext(c);
	return NULL;
}

static void *chaos(void *arg)
{
	calais_sim_reader **slots = arg;
	unsigned seed = 42;
	long stuck_swap_ms = fm_now_ms();
	while (!stop) {
		/* About once a second the stuck card is swapped: its slow power-up runs while
		 * the probe and the churn readers go on. */
		if (fm_now_ms() - stuck_swap_ms > 1000) {
			calais_sim_card_remove(stuck_reader);
			calais_sim_card_insert(stuck_reader, &stuck_card);
			stuck_swap_ms = fm_now_ms();
		}
		int i = rand_r(&seed) % N_SLOTS;
		switch (rand_r(&seed) % 8) {
		case 0: /* unplug and plug back */
			if (calais_sim_reader_unplug(slots[i]) == SCARD_S_SUCCESS) {
				char base[16];
				snprintf(base, sizeof(base), "Churn %d", i);
				cr_assert_eq(calais_sim_reader_add(base, &slots[i]), SCARD_S_SUCCESS);
				pthread_mutex_lock(&names_lock);
				snprintf(names[i], MAX_READERNAME, "%s", calais_sim_reader_name(slots[i]));
				pthread_mutex_unlock(&names_lock);
			}
			break;
		case 1:
			SCardCancel(waiter_ctx);
			break;
		default:
			if (calais_sim_card_remove(slots[i]) != SCARD_S_SUCCESS)
				calais_sim_card_insert(slots[i], calais_sim_democard());
			break;
		}
		sleep_ms(1 + rand_r(&seed) % 4);
	}
	return NULL;
}

static bool under_valgrind(void)
{
	return getenv("CALAIS_TEST_UNDER_VALGRIND") != NULL;
}

Test(stress, everything_at_once, .timeout = 120)
{
	const char *env = getenv("CALAIS_STRESS_SECONDS");
	int seconds = env ? atoi(env) : (under_valgrind() ? 3 : 10);
	int workers = under_valgrind() ? 8 : N_WORKERS;
	calais_sim_reader *slots[N_SLOTS];
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.power_down_delay_ms = 5; /* power-downs race with connects too */
	cfg.exchange_timeout_ms = STUCK_LIMIT_MS;
	cr_assert_eq(calais_start(&cfg), SCARD_S_SUCCESS);
	cr_assert_eq(calais_sim_reader_add("Stuck", &stuck_reader), SCARD_S_SUCCESS);
	snprintf(stuck_name, sizeof(stuck_name), "%s", calais_sim_reader_name(stuck_reader));
	cr_assert_eq(calais_sim_card_insert(stuck_reader, &stuck_card), SCARD_S_SUCCESS);
	/* Before the mix, alone: the limit ends an APDU to the stuck card, in time. */
	{
		SCARDCONTEXT c;
		SCARDHANDLE h;
		DWORD proto;
		cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
		cr_assert_eq(SCardConnect(c, stuck_name, SCARD_SHARE_SHARED,
		                          SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto), SCARD_S_SUCCESS);
		long t0 = fm_now_ms();
		cr_assert_eq(exchange(h, proto, true), SCARD_E_TIMEOUT);
		long took = fm_now_ms() - t0;
		cr_assert(took >= STUCK_LIMIT_MS - 10 && took <= (long)((STUCK_LIMIT_MS + FM_END_MS) * fm_slow()),
		          "the limit ended the stuck APDU after %ld ms", took);
		cr_assert_eq(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
		cr_assert_eq(SCardReleaseContext(c), SCARD_S_SUCCESS);
		stuck_calls = stuck_timeouts = stuck_longest_ms = 0;
	}
	cr_assert_eq(calais_sim_reader_add("Probe", &probe_reader), SCARD_S_SUCCESS);
	for (int i = 0; i < N_SLOTS; i++) {
		char base[16];
		snprintf(base, sizeof(base), "Churn %d", i);
		cr_assert_eq(calais_sim_reader_add(base, &slots[i]), SCARD_S_SUCCESS);
		snprintf(names[i], MAX_READERNAME, "%s", calais_sim_reader_name(slots[i]));
		cr_assert_eq(calais_sim_card_insert(slots[i], calais_sim_democard()), SCARD_S_SUCCESS);
	}
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &waiter_ctx), SCARD_S_SUCCESS);

	pthread_t t[N_WORKERS + 4];
	for (int i = 0; i < workers; i++)
		pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
	pthread_create(&t[workers], NULL, waiter, NULL);
	pthread_create(&t[workers + 1], NULL, chaos, slots);
	pthread_create(&t[workers + 2], NULL, probe, NULL);
	pthread_create(&t[workers + 3], NULL, stuck_user, NULL);
	/* The mix runs `seconds`, and on past them until the probe has made MIN_PROBES
	 * insertions: under valgrind on a loaded machine it gets little of the CPU, and the
	 * test is about how late its insertions are shown, not how many it makes. */
	sleep_ms((unsigned)seconds * 1000u);
	for (long t0 = fm_now_ms(); probes < MIN_PROBES && fm_now_ms() - t0 < 60000;)
		sleep_ms(50);
	stop = true;
	pthread_join(t[workers + 1], NULL);
	/* Without the chaos thread, nothing swaps the stuck card: pull it, so that a worker
	 * stuck on it ends now even where no exchange limit applies. */
	calais_sim_card_remove(stuck_reader);
	for (int i = 0; i < workers + 4; i++)
		if (i != workers + 1)
			pthread_join(t[i], NULL);
	SCardReleaseContext(waiter_ctx);
	calais_shutdown();

	long total = 0;
	for (int i = 0; i < n_codes; i++) {
		cr_log_info("0x%08lX %-28s %ld", (unsigned long)codes[i].code,
		            pcsc_stringify_error(codes[i].code), (long)codes[i].count);
		total += codes[i].count;
	}
	printf("stress: %d s, %d workers, %ld calls, %ld good exchanges; stuck reader: %ld APDUs, "
	       "%ld ended by the limit, the longest call %ld ms; probe: %ld insertions, %ld shown "
	       "after more than %ld ms, the slowest in %ld ms\n",
	       seconds, workers, total, (long)transmits_ok, (long)stuck_calls, (long)stuck_timeouts,
	       (long)stuck_longest_ms, (long)probes, (long)probes_slow,
	       (long)(PROBE_MS * fm_slow()), (long)probe_longest_ms);
	cr_assert_eq(illegal[0], '\0', "%s", illegal);
	cr_assert_eq(bad_responses, 0, "%ld wrong APDU responses", (long)bad_responses);
	cr_assert_gt(transmits_ok, 0, "no exchange ever succeeded");
	/* In the mix most of them meet a reset or a swap of the card by others first. */
	cr_assert_gt(stuck_calls, 0, "no APDU reached the stuck reader");
	/* A stuck APDU waits at most for the calls queued before it on its reader (each an
	 * APDU ended by the limit or a slow power-up), plus its own. */
	cr_assert_leq(stuck_longest_ms,
	              (long)(((workers + 2) * (STUCK_LIMIT_MS + STUCK_ATR_DELAY_MS) + FM_END_MS) * fm_slow()),
	              "a call to the stuck reader took %ld ms", (long)stuck_longest_ms);
	cr_assert_geq(probes, MIN_PROBES, "only %ld probe insertions in %d s and one more minute",
	              (long)probes, seconds);
	/* One late probe is forgiven (a busy machine may not run the waiter in time); a
	 * stuck reader that holds the others up makes one at each of its power-ups. */
	cr_assert_leq(probes_slow, 1, "%ld of %ld probe insertions were shown after more than %ld ms "
	              "(the slowest in %ld ms): the stuck reader holds the others up",
	              (long)probes_slow, (long)probes, (long)(PROBE_MS * fm_slow()),
	              (long)probe_longest_ms);
}

struct many_arg {
	const char *name;
	SCARDCONTEXT ctx;
	atomic_int *ready;
	LONG rv;
	DWORD state;
};

static void *many_wait(void *p)
{
	struct many_arg *a = p;
	SCARD_READERSTATE rs = { .szReader = a->name, .dwCurrentState = SCARD_STATE_EMPTY };
	(*a->ready)++;
	a->rv = SCardGetStatusChange(a->ctx, 20000, &rs, 1);
	a->state = rs.dwEventState;
	return NULL;
}

Test(stress, thousand_waiters_one_insertion, .timeout = 60)
{
	int n = under_valgrind() ? 100 : 1000;
	calais_sim_reader *r;
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cr_assert_eq(calais_start(&cfg), SCARD_S_SUCCESS);
	cr_assert_eq(calais_sim_reader_add("Crowd", &r), SCARD_S_SUCCESS);
	char name[MAX_READERNAME];
	snprintf(name, sizeof(name), "%s", calais_sim_reader_name(r));
	SCARDCONTEXT ctx;
	cr_assert_eq(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);

	atomic_int ready = 0;
	struct many_arg *args = calloc((size_t)n, sizeof(*args));
	pthread_t *tids = calloc((size_t)n, sizeof(*tids));
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	int started = 0;
	for (int i = 0; i < n; i++) {
		args[i] = (struct many_arg){ .name = name, .ctx = ctx, .ready = &ready };
		if (pthread_create(&tids[i], &attr, many_wait, &args[i]) != 0)
			break;
		started++;
	}
	pthread_attr_destroy(&attr);
	cr_assert_geq(started, n / 2, "only %d threads could start", started);
	while (ready < started)
		sleep_ms(5);
	sleep_ms(200); /* let them reach the wait */
	cr_assert_eq(calais_sim_card_insert(r, calais_sim_democard()), SCARD_S_SUCCESS);
	int woken = 0;
	for (int i = 0; i < started; i++) {
		pthread_join(tids[i], NULL);
		if (args[i].rv == SCARD_S_SUCCESS && (args[i].state & SCARD_STATE_PRESENT))
			woken++;
	}
	cr_assert_eq(woken, started, "%d of %d waiters saw the card", woken, started);
	free(args);
	free(tids);
	SCardReleaseContext(ctx);
	calais_shutdown();
}
