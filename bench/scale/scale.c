/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Scale benchmark on the simulated backend: reader listing, event latency and memory with
 * 1 to 1024 readers, and many threads blocked in SCardGetStatusChange() woken by one card.
 * Each mode prints one markdown table row, then "#val key value" lines for bench/scale/run.
 *
 *   calais-scale readers N [events] [stuck]   N readers (the demo one plus N-1 added)
 *   calais-scale waiters W own|shared [rounds] [stuck]
 *   calais-scale spread W [events] [stuck]    W waiters on W readers, events on the last one
 *   calais-scale same-name COUNT              adds COUNT readers with one base name
 *
 * "stuck": one reader's card is in an endless exchange while everything is measured: a
 * simulated card with a latency of 67 minutes (latency_us 4e9) and a thread inside
 * SCardTransmit() on it. In the readers and spread modes it is one of the N (the second
 * added), elsewhere a reader of its own; removing the card at the end ends the exchange
 * (SCARD_W_REMOVED_CARD), and "#val stuck_*" lines say whether it stayed in the exchange
 * until then and how long it took to come back. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <winscard.h>
#include <calais/calais.h>

/* Small stacks for the waiter threads: SCardGetStatusChange() needs far less, and 1000
 * default 8 MiB stacks would reserve 8 GiB of address space. */
#define WAITER_STACK (64u * 1024u)

static const uint8_t bench_atr[] = { 0x3B, 0x02, 0x14, 0x50 };

static LONG bench_apdu(void *user, const uint8_t *apdu, size_t len, uint8_t *resp,
                       size_t *resp_len)
{
	(void)user, (void)apdu, (void)len;
	resp[0] = 0x90, resp[1] = 0x00;
	*resp_len = 2;
	return SCARD_S_SUCCESS;
}

static const struct calais_sim_card bench_card = {
	.atr = bench_atr, .atr_len = sizeof(bench_atr), .apdu = bench_apdu,
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
	                       .tv_nsec = (long)(ns % 1000000000u) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void die(const char *what, LONG rv)
{
	fprintf(stderr, "calais-scale: %s: %s (0x%08lX)\n", what, pcsc_stringify_error(rv),
	        (unsigned long)rv);
	exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorts v and returns its p-th percentile (nearest rank; p = 50 is the median). */
static uint64_t percentile(uint64_t *v, size_t n, unsigned p)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	size_t rank = (n * p + 99) / 100;
	return v[rank ? rank - 1 : 0];
}

/* A "VmRSS:"-style field of /proc/self/status, in KiB; 0 when unknown. */
static long status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	char line[256];
	long v = 0;
	size_t fl = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
			v = strtol(line + fl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Bytes in use on the heap (malloc'd, chunk overhead included): mallinfo2() counts the
 * main arena, where this program's main thread allocates. -1 when unavailable. */
static long long heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 mi = mallinfo2();
	return (long long)(mi.uordblks + mi.hblkhd);
#else
	return -1;
#endif
}

static void start_sim(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "sim"; /* also creates "Calais Virtual Reader 00 00" with the demo card */
	cfg.log_level = CALAIS_LOG_NONE;
	cfg.log_level_set = true;
	LONG rv = calais_start(&cfg);
	if (rv != SCARD_S_SUCCESS)
		die("calais_start", rv);
}

/* ---- the stuck reader --------------------------------------------------------------- */

static struct {
	calais_sim_reader *r; /* NULL: no stuck reader in this run */
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
	const SCARD_IO_REQUEST *pci;
	pthread_t th;
	atomic_bool returned;
	LONG rv;
	uint64_t entered_ns, returned_ns;
} stuck;

static const struct calais_sim_card stuck_card = {
	.atr = bench_atr, .atr_len = sizeof(bench_atr), .apdu = bench_apdu,
	.latency_us = 4000000000u, /* 67 minutes; not UINT32_MAX: sim.c rounds it up to ms in
	                            * 32 bits, and that wraps to 0 */
};

static void *stuck_main(void *arg)
{
	(void)arg;
	static const BYTE select[] = { 0x00, 0xA4, 0x04, 0x00, 0x01, 0xA0 };
	BYTE resp[258];
	DWORD rl = sizeof(resp);
	stuck.entered_ns = now_ns();
	stuck.rv = SCardTransmit(stuck.h, stuck.pci, select, sizeof(select), NULL, resp, &rl);
	stuck.returned_ns = now_ns();
	atomic_store(&stuck.returned, true);
	return NULL;
}

/* Puts the endless card in r, connects, and leaves a thread inside SCardTransmit(). */
static void stuck_start(calais_sim_reader *r)
{
	LONG rv = calais_sim_card_insert(r, &stuck_card);
	if (rv != SCARD_S_SUCCESS)
		die("calais_sim_card_insert (stuck card)", rv);
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &stuck.ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardEstablishContext (stuck reader)", rv);
	DWORD proto;
	rv = SCardConnect(stuck.ctx, calais_sim_reader_name(r), SCARD_SHARE_SHARED,
	                  SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &stuck.h, &proto);
	if (rv != SCARD_S_SUCCESS)
		die("SCardConnect (stuck reader)", rv);
	stuck.pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	stuck.r = r;
	if (pthread_create(&stuck.th, NULL, stuck_main, NULL) != 0) {
		fprintf(stderr, "calais-scale: pthread_create (stuck reader) failed\n");
		exit(1);
	}
	sleep_ns(50000000u); /* well inside the card's latency by now */
}

/* Ends the exchange by pulling the card and prints what happened. Returns false when
 * the exchange had already ended, or did not end within 5 s of the removal (then the
 * process must not shut the manager down: it would wait for that exchange). */
static bool stuck_end(void)
{
	if (!stuck.r)
		return true;
	bool held = !atomic_load(&stuck.returned);
	uint64_t t0 = now_ns();
	LONG rv = calais_sim_card_remove(stuck.r);
	if (rv != SCARD_S_SUCCESS)
		die("calais_sim_card_remove (stuck card)", rv);
	while (!atomic_load(&stuck.returned) && now_ns() - t0 < 5000000000u)
		sleep_ns(1000000u);
	bool back = atomic_load(&stuck.returned);
	printf("#val stuck_held %d\n", held);
	if (back) {
		pthread_join(stuck.th, NULL);
		printf("#val stuck_end_ms %.3f\n#val stuck_rv 0x%08lX\n",
		       stuck.returned_ns > t0 ? (stuck.returned_ns - t0) / 1e6 : 0.0,
		       (unsigned long)stuck.rv);
		SCardDisconnect(stuck.h, SCARD_LEAVE_CARD);
		SCardReleaseContext(stuck.ctx);
	} else {
		printf("#val stuck_end_ms -1\n");
	}
	fflush(stdout);
	return held && back;
}

/* The end of a mode: the stuck exchange (if any) ended, then the manager shut down;
 * an exchange that would not end leaves the process without a shutdown. */
static int finish(int status)
{
	if (!stuck_end()) {
		fflush(stdout);
		_exit(1);
	}
	calais_shutdown();
	return status;
}

/* Sets every entry's current state to what the last call reported. */
static void accept_states(SCARD_READERSTATE *rs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		rs[i].dwCurrentState = rs[i].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
}

/* ---- readers ---------------------------------------------------------------------- */

/* One waiter thread, driven round by round by the main thread. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned round, done_round; /* lock */
	bool quit, entering;        /* lock */
	LONG rv;
	uint64_t returned_ns;
	SCARDCONTEXT ctx;
	SCARD_READERSTATE *rs;
	size_t n;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	unsigned seen = 0;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (w->round == seen && !w->quit)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->quit)
			break;
		seen = w->round;
		w->entering = true;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		LONG rv = SCardGetStatusChange(w->ctx, INFINITE, w->rs, (DWORD)w->n);
		uint64_t t = now_ns();
		pthread_mutex_lock(&w->lock);
		w->rv = rv;
		w->returned_ns = t;
		w->done_round = seen;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Starts one round of the waiter, fires `event` once it sleeps, returns the latency. */
static uint64_t one_event(struct waiter *w, uint64_t settle_ns, calais_sim_reader *last,
                          bool insert, unsigned *bad)
{
	pthread_mutex_lock(&w->lock);
	unsigned round = ++w->round;
	w->entering = false;
	pthread_cond_broadcast(&w->cond);
	while (!w->entering)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	/* The waiter is on its way into SCardGetStatusChange(); let it reach its sleep. */
	sleep_ns(settle_ns);

	uint64_t t0 = now_ns();
	LONG rv = insert ? calais_sim_card_insert(last, &bench_card) : calais_sim_card_remove(last);
	if (rv != SCARD_S_SUCCESS)
		die(insert ? "calais_sim_card_insert" : "calais_sim_card_remove", rv);

	pthread_mutex_lock(&w->lock);
	while (w->done_round != round)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	SCARD_READERSTATE *e = &w->rs[w->n - 1];
	DWORD want = insert ? SCARD_STATE_PRESENT : SCARD_STATE_EMPTY;
	if (w->rv != SCARD_S_SUCCESS || !(e->dwEventState & SCARD_STATE_CHANGED) ||
	    !(e->dwEventState & want))
		++*bad;
	accept_states(w->rs, w->n);
	return w->returned_ns - t0;
}

static int mode_readers(unsigned n, unsigned events, bool with_stuck)
{
	if (n < 1 || (with_stuck && n < 3))
		return 2;
	start_sim();
	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardEstablishContext", rv);

	/* Memory of the readers added after the demo one: heap bytes in use and VmRSS. */
	calais_sim_reader **added = calloc(n, sizeof(*added));
	if (!added)
		return 1;
	long long heap0 = heap_in_use();
	long rss0 = status_kib("VmRSS");
	uint64_t t_add = now_ns();
	for (unsigned i = 1; i < n; i++) {
		/* Distinct base names: with one base name only 256 readers can be numbered. */
		char name[32];
		snprintf(name, sizeof(name), "Bench Reader %04u", i + 1);
		rv = calais_sim_reader_add(name, &added[i]);
		if (rv != SCARD_S_SUCCESS)
			die("calais_sim_reader_add", rv);
	}
	t_add = now_ns() - t_add;
	long long heap1 = heap_in_use();
	long rss1 = status_kib("VmRSS");
	if (with_stuck)
		stuck_start(added[1]);

	/* SCardListReaders() into a buffer big enough, as a program's second call does. */
	DWORD len = 0;
	rv = SCardListReaders(ctx, NULL, NULL, &len);
	if (rv != SCARD_S_SUCCESS)
		die("SCardListReaders (size)", rv);
	char *list = malloc(len);
	unsigned list_iters = n >= 1024 ? 2000 : 5000;
	uint64_t *lt = calloc(list_iters, sizeof(*lt));
	if (!list || !lt)
		return 1;
	unsigned listed = 0;
	for (unsigned i = 0; i < list_iters; i++) {
		DWORD l = len;
		uint64_t t = now_ns();
		rv = SCardListReaders(ctx, NULL, list, &l);
		lt[i] = now_ns() - t;
		if (rv != SCARD_S_SUCCESS)
			die("SCardListReaders", rv);
	}
	for (const char *p = list; *p; p += strlen(p) + 1)
		listed++;
	if (listed != n) {
		fprintf(stderr, "calais-scale: %u readers listed, %u expected\n", listed, n);
		return 1;
	}

	/* Every reader watched, the last one last (the PC/SC order of the list). */
	SCARD_READERSTATE *rs = calloc(n, sizeof(*rs));
	if (!rs)
		return 1;
	const char *p = list;
	for (unsigned i = 0; i < n; i++, p += strlen(p) + 1)
		rs[i].szReader = p;
	rv = SCardGetStatusChange(ctx, 0, rs, n);
	if (rv != SCARD_S_SUCCESS)
		die("SCardGetStatusChange (initial)", rv);
	accept_states(rs, n);

	/* Cost of one look at all N readers (timeout 0, nothing changed). */
	enum { POLLS = 21 };
	uint64_t pt[POLLS];
	for (unsigned i = 0; i < POLLS; i++) {
		uint64_t t = now_ns();
		rv = SCardGetStatusChange(ctx, 0, rs, n);
		pt[i] = now_ns() - t;
		if (rv != SCARD_E_TIMEOUT)
			die("SCardGetStatusChange (poll)", rv);
	}
	uint64_t poll_med = percentile(pt, POLLS, 50);

	/* Card events on the last reader; the waiter has its own context. */
	calais_sim_reader *last = added[n - 1];
	if (n == 1) {
		/* Only the demo reader: watch a reader of our own instead. */
		rv = calais_sim_reader_add("Bench Reader 0001", &last);
		if (rv != SCARD_S_SUCCESS)
			die("calais_sim_reader_add", rv);
		rs[0].szReader = calais_sim_reader_name(last);
		rs[0].dwCurrentState = SCARD_STATE_UNAWARE;
		SCardGetStatusChange(ctx, 0, rs, 1);
		accept_states(rs, 1);
	}
	struct waiter w = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
	                    .rs = rs, .n = n };
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &w.ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardEstablishContext", rv);
	pthread_t th;
	if (pthread_create(&th, NULL, waiter_main, &w) != 0)
		return 1;
	uint64_t *ins = calloc(events, sizeof(*ins)), *rem = calloc(events, sizeof(*rem));
	if (!ins || !rem)
		return 1;
	unsigned bad = 0;
	uint64_t settle = 2000000u + 4 * poll_med;
	for (unsigned i = 0; i < events; i++) {
		ins[i] = one_event(&w, settle, last, true, &bad);
		rem[i] = one_event(&w, settle, last, false, &bad);
	}
	pthread_mutex_lock(&w.lock);
	w.quit = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	pthread_join(th, NULL);

	double list_med = percentile(lt, list_iters, 50) / 1e3, list_p99 = percentile(lt, list_iters, 99) / 1e3;
	double ins_med = percentile(ins, events, 50) / 1e6, ins_p99 = percentile(ins, events, 99) / 1e6;
	double rem_med = percentile(rem, events, 50) / 1e6, rem_p99 = percentile(rem, events, 99) / 1e6;
	char heap_s[32] = "n/a", rss_s[32] = "n/a";
	double heap_per = -1;
	if (n > 1 && heap0 >= 0) {
		heap_per = (double)(heap1 - heap0) / (n - 1);
		snprintf(heap_s, sizeof(heap_s), "%.0f", heap_per);
	}
	if (n > 1 && rss0 && rss1)
		snprintf(rss_s, sizeof(rss_s), "%.0f", (rss1 - rss0) * 1024.0 / (n - 1));

	printf("| %u | %.2f | %.2f | %.2f | %.1f | %.3f | %.3f | %.3f | %.3f | %s | %s |\n", n,
	       t_add / 1e6, list_med, list_p99, poll_med / 1e3, ins_med, ins_p99, rem_med, rem_p99,
	       heap_s, rss_s);
	printf("#val list_med_us %.3f\n#val list_p99_us %.3f\n", list_med, list_p99);
	printf("#val ins_med_ms %.4f\n#val ins_p99_ms %.4f\n", ins_med, ins_p99);
	printf("#val rem_med_ms %.4f\n#val rem_p99_ms %.4f\n", rem_med, rem_p99);
	printf("#val poll_us %.1f\n#val heap_per_reader %.1f\n#val bad %u\n", poll_med / 1e3,
	       heap_per, bad);

	SCardReleaseContext(w.ctx);
	SCardReleaseContext(ctx);
	free(ins), free(rem), free(rs), free(lt), free(list), free(added);
	return finish(bad ? 1 : 0);
}

/* ---- many waiters ------------------------------------------------------------------ */

struct crowd {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned round;   /* lock: bumped to start a round */
	unsigned entered; /* lock: threads on their way into SCardGetStatusChange() */
	unsigned done;    /* lock: threads back from it */
	bool quit;
	const char *reader;
	SCARDCONTEXT shared; /* 0: each thread has its own context */
	atomic_uint bad;
};

struct member {
	struct crowd *c;
	pthread_t th;
	SCARDCONTEXT ctx;
	SCARD_READERSTATE rs;
	uint64_t returned_ns;
};

static void *member_main(void *arg)
{
	struct member *m = arg;
	struct crowd *c = m->c;
	unsigned seen = 0;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (c->round == seen && !c->quit)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->quit)
			break;
		seen = c->round;
		c->entered++;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		LONG rv = SCardGetStatusChange(m->ctx, INFINITE, &m->rs, 1);
		m->returned_ns = now_ns();
		if (rv != SCARD_S_SUCCESS || !(m->rs.dwEventState & SCARD_STATE_CHANGED))
			atomic_fetch_add(&c->bad, 1);
		accept_states(&m->rs, 1);
		pthread_mutex_lock(&c->lock);
		c->done++;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int mode_waiters(unsigned nw, bool shared, unsigned rounds, bool with_stuck)
{
	start_sim();
	calais_sim_reader *reader;
	LONG rv = calais_sim_reader_add("Bench Waiter Reader", &reader);
	if (rv != SCARD_S_SUCCESS)
		die("calais_sim_reader_add", rv);
	if (with_stuck) {
		calais_sim_reader *sr;
		rv = calais_sim_reader_add("Bench Stuck Reader", &sr);
		if (rv != SCARD_S_SUCCESS)
			die("calais_sim_reader_add", rv);
		stuck_start(sr);
	}

	struct crowd c = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
	                   .reader = calais_sim_reader_name(reader) };
	if (shared) {
		rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c.shared);
		if (rv != SCARD_S_SUCCESS)
			die("SCardEstablishContext", rv);
	}
	struct member *ms = calloc(nw, sizeof(*ms));
	uint64_t *lat = calloc(nw, sizeof(*lat));
	uint64_t *last_ins = calloc(rounds, sizeof(*last_ins)), *last_rem = calloc(rounds, sizeof(*last_rem));
	uint64_t *first_ins = calloc(rounds, sizeof(*first_ins)), *med_ins = calloc(rounds, sizeof(*med_ins));
	if (!ms || !lat || !last_ins || !last_rem || !first_ins || !med_ins)
		return 1;

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (pthread_attr_setstacksize(&attr, WAITER_STACK) != 0)
		return 1;
	long rss0 = status_kib("VmRSS");
	unsigned started = 0;
	for (unsigned i = 0; i < nw; i++) {
		struct member *m = &ms[i];
		m->c = &c;
		m->ctx = c.shared;
		if (!shared) {
			rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &m->ctx);
			if (rv != SCARD_S_SUCCESS)
				die("SCardEstablishContext", rv);
		}
		m->rs.szReader = c.reader;
		m->rs.dwCurrentState = SCARD_STATE_UNAWARE;
		rv = SCardGetStatusChange(m->ctx, 0, &m->rs, 1);
		if (rv != SCARD_S_SUCCESS)
			die("SCardGetStatusChange (initial)", rv);
		accept_states(&m->rs, 1);
		int e = pthread_create(&m->th, &attr, member_main, m);
		if (e != 0) {
			fprintf(stderr, "calais-scale: thread %u: %s\n", i + 1, strerror(e));
			break;
		}
		started++;
	}
	pthread_attr_destroy(&attr);

	unsigned bad_rounds = 0;
	for (unsigned r = 0; r < 2 * rounds && started == nw; r++) {
		bool insert = r % 2 == 0;
		pthread_mutex_lock(&c.lock);
		c.entered = c.done = 0;
		c.round++;
		pthread_cond_broadcast(&c.cond);
		while (c.entered < nw)
			pthread_cond_wait(&c.cond, &c.lock);
		pthread_mutex_unlock(&c.lock);
		/* Every thread is on its way in; give them time to reach their sleep. */
		sleep_ns(100000000u);

		uint64_t t0 = now_ns();
		rv = insert ? calais_sim_card_insert(reader, &bench_card) : calais_sim_card_remove(reader);
		if (rv != SCARD_S_SUCCESS)
			die("card event", rv);
		pthread_mutex_lock(&c.lock);
		while (c.done < nw)
			pthread_cond_wait(&c.cond, &c.lock);
		pthread_mutex_unlock(&c.lock);
		for (unsigned i = 0; i < nw; i++)
			lat[i] = ms[i].returned_ns > t0 ? ms[i].returned_ns - t0 : 0;
		uint64_t last = percentile(lat, nw, 100);
		if (lat[0] == 0)
			bad_rounds++; /* a thread returned before the event: not asleep yet */
		if (insert) {
			last_ins[r / 2] = last;
			first_ins[r / 2] = lat[0];
			med_ins[r / 2] = percentile(lat, nw, 50);
		} else {
			last_rem[r / 2] = last;
		}
	}
	long rss1 = status_kib("VmRSS");

	pthread_mutex_lock(&c.lock);
	c.quit = true;
	pthread_cond_broadcast(&c.cond);
	pthread_mutex_unlock(&c.lock);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(ms[i].th, NULL);
		if (!shared)
			SCardReleaseContext(ms[i].ctx);
	}
	if (shared)
		SCardReleaseContext(c.shared);
	if (started != nw) {
		printf("#val error could only start %u of %u threads\n", started, nw);
		return finish(1);
	}

	double li_med = percentile(last_ins, rounds, 50) / 1e6;
	double li_min = percentile(last_ins, rounds, 0) / 1e6;
	double li_max = percentile(last_ins, rounds, 100) / 1e6;
	double fi_med = percentile(first_ins, rounds, 50) / 1e6;
	double mi_med = percentile(med_ins, rounds, 50) / 1e6;
	double lr_med = percentile(last_rem, rounds, 50) / 1e6;
	unsigned bad = atomic_load(&c.bad);
	printf("| %u | %s | %u | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f |\n", nw,
	       shared ? "one shared" : "one per thread", rounds, li_med, li_min, li_max, fi_med,
	       mi_med, lr_med, (rss1 - rss0) / (double)nw);
	printf("#val last_ins_med_ms %.3f\n#val last_rem_med_ms %.3f\n", li_med, lr_med);
	printf("#val bad %u\n#val bad_rounds %u\n", bad, bad_rounds);
	free(ms), free(lat), free(last_ins), free(last_rem), free(first_ins), free(med_ins);
	return finish(bad || bad_rounds ? 1 : 0);
}

/* ---- waiters spread over many readers ------------------------------------------------ */

/* A thread that watches one reader that never changes, until SCardCancel(). */
static void *idle_main(void *arg)
{
	struct member *m = arg;
	LONG rv = SCardGetStatusChange(m->ctx, INFINITE, &m->rs, 1);
	if (rv != SCARD_E_CANCELLED)
		atomic_fetch_add(&m->c->bad, 1);
	return NULL;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* nw threads, each with its own context watching its own reader; card events on the last
 * reader only. Measures the latency of that reader's waiter and the CPU time the whole
 * process spends per event (every other waiter is woken too, looks, and sleeps again). */
static int mode_spread(unsigned nw, unsigned events, bool with_stuck)
{
	start_sim();
	calais_sim_reader **readers = calloc(nw, sizeof(*readers));
	struct member *ms = calloc(nw, sizeof(*ms));
	uint64_t *lat = calloc(2 * events, sizeof(*lat)), *cpu = calloc(2 * events, sizeof(*cpu));
	if (!readers || !ms || !lat || !cpu)
		return 1;
	for (unsigned i = 0; i < nw; i++) {
		char name[32];
		snprintf(name, sizeof(name), "Bench Reader %04u", i + 1);
		LONG rv = calais_sim_reader_add(name, &readers[i]);
		if (rv != SCARD_S_SUCCESS)
			die("calais_sim_reader_add", rv);
	}
	if (with_stuck && nw > 2)
		stuck_start(readers[1]);
	struct crowd c = { 0 };
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (pthread_attr_setstacksize(&attr, WAITER_STACK) != 0)
		return 1;
	unsigned started = 0;
	for (unsigned i = 0; i + 1 < nw; i++) {
		struct member *m = &ms[i];
		m->c = &c;
		LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &m->ctx);
		if (rv != SCARD_S_SUCCESS)
			die("SCardEstablishContext", rv);
		m->rs.szReader = calais_sim_reader_name(readers[i]);
		m->rs.dwCurrentState = SCARD_STATE_UNAWARE;
		SCardGetStatusChange(m->ctx, 0, &m->rs, 1);
		accept_states(&m->rs, 1);
		if (pthread_create(&m->th, &attr, idle_main, m) != 0)
			break;
		started++;
	}
	pthread_attr_destroy(&attr);

	SCARD_READERSTATE rs = { .szReader = calais_sim_reader_name(readers[nw - 1]),
	                         .dwCurrentState = SCARD_STATE_UNAWARE };
	struct waiter w = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
	                    .rs = &rs, .n = 1 };
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &w.ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardEstablishContext", rv);
	SCardGetStatusChange(w.ctx, 0, &rs, 1);
	accept_states(&rs, 1);
	pthread_t th;
	if (pthread_create(&th, NULL, waiter_main, &w) != 0)
		return 1;
	sleep_ns(200000000u); /* the idle waiters reach their sleep */
	unsigned bad = 0;
	for (unsigned i = 0; i < 2 * events && started + 1 == nw; i++) {
		uint64_t c0 = cpu_ns();
		lat[i] = one_event(&w, 2000000u, readers[nw - 1], i % 2 == 0, &bad);
		sleep_ns(30000000u); /* the other waiters go back to sleep */
		cpu[i] = cpu_ns() - c0;
	}
	pthread_mutex_lock(&w.lock);
	w.quit = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	pthread_join(th, NULL);
	for (unsigned i = 0; i < started; i++)
		SCardCancel(ms[i].ctx);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(ms[i].th, NULL);
		SCardReleaseContext(ms[i].ctx);
	}
	SCardReleaseContext(w.ctx);
	if (started + 1 != nw) {
		printf("#val error could only start %u of %u threads\n", started + 1, nw);
		return finish(1);
	}
	bad += atomic_load(&c.bad);
	double l_med = percentile(lat, 2 * events, 50) / 1e6, l_p99 = percentile(lat, 2 * events, 99) / 1e6;
	double c_med = percentile(cpu, 2 * events, 50) / 1e6;
	printf("| %u | %u | %.3f | %.3f | %.2f |\n", nw, 2 * events, l_med, l_p99, c_med);
	printf("#val lat_med_ms %.4f\n#val cpu_med_ms %.3f\n#val bad %u\n", l_med, c_med, bad);
	free(readers), free(ms), free(lat), free(cpu);
	return finish(bad ? 1 : 0);
}

/* ---- one base name ------------------------------------------------------------------- */

/* Adds readers with one base name in a child process, which may hang; the parent reports
 * how many were added within the time limit. */
static int mode_same_name(unsigned count)
{
	unsigned *progress = mmap(NULL, sizeof(unsigned), PROT_READ | PROT_WRITE,
	                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (progress == MAP_FAILED)
		return 1;
	*progress = 0;
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		start_sim();
		for (unsigned i = 0; i < count; i++) {
			calais_sim_reader *r;
			LONG rv = calais_sim_reader_add("Same Reader", &r);
			if (rv != SCARD_S_SUCCESS) {
				printf("#val refused_at %u\n#val refused_rv 0x%08lX\n", i + 1,
				       (unsigned long)rv);
				fflush(stdout);
				_exit(3);
			}
			__atomic_store_n(progress, i + 1, __ATOMIC_SEQ_CST);
		}
		calais_shutdown();
		_exit(0);
	}
	uint64_t deadline = now_ns() + 3000000000u;
	int st = 0;
	pid_t done = 0;
	while ((done = waitpid(pid, &st, WNOHANG)) == 0 && now_ns() < deadline)
		sleep_ns(10000000u);
	unsigned added = __atomic_load_n(progress, __ATOMIC_SEQ_CST);
	if (done == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		printf("#val outcome hang\n");
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("#val outcome ok\n");
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 3) {
		printf("#val outcome refused\n");
	} else {
		printf("#val outcome crash\n");
	}
	printf("#val added %u\n", added);
	return 0;
}

int main(int argc, char **argv)
{
	bool st = argc > 3 && strcmp(argv[argc - 1], "stuck") == 0;
	if (st)
		argc--;
	if (argc >= 3 && strcmp(argv[1], "readers") == 0)
		return mode_readers((unsigned)atoi(argv[2]), argc > 3 ? (unsigned)atoi(argv[3]) : 50,
		                    st);
	if (argc >= 4 && strcmp(argv[1], "waiters") == 0)
		return mode_waiters((unsigned)atoi(argv[2]), strcmp(argv[3], "shared") == 0,
		                    argc > 4 ? (unsigned)atoi(argv[4]) : 7, st);
	if (argc >= 3 && strcmp(argv[1], "spread") == 0)
		return mode_spread((unsigned)atoi(argv[2]), argc > 3 ? (unsigned)atoi(argv[3]) : 10,
		                   st);
	if (argc >= 3 && !st && strcmp(argv[1], "same-name") == 0)
		return mode_same_name((unsigned)atoi(argv[2]));
	fprintf(stderr, "usage: calais-scale readers N [events] [stuck] | waiters W own|shared "
	                "[rounds] [stuck] | spread W [events] [stuck] | same-name COUNT\n");
	return 2;
}
