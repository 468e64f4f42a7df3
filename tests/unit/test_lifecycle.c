/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The manager's life cycle under concurrency: many threads' first calls during start-up
 * (pcsc-lite's ThreadSafeConnect), a call racing calais_shutdown(), fork() without exec,
 * log callbacks that call back into the library or are slow, log settings changed while
 * other threads log (TSan), and reader descriptions at their limits (ASan). */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_CARDS 3

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CALAIS_TEST_CLANG_ASAN 1
#endif
#endif
#ifndef CALAIS_TEST_CLANG_ASAN
#define CALAIS_TEST_CLANG_ASAN 0
#endif
/* The sanitizers' runtimes are not fork-safe here: ThreadSanitizer cannot run threads in
 * the child of a multi-threaded fork(), and GCC 12's ASan allocator lock, held by a
 * parent's thread at the fork, deadlocks the child's first allocation on another thread
 * (seen in gdb: the child's scheduler in __sanitizer::SizeClassAllocator64). The fork
 * test is left out of both builds; the plain, clang and valgrind runs have it. */
#if defined(__SANITIZE_THREAD__)
#define CALAIS_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CALAIS_TEST_TSAN 1
#endif
#endif
#ifndef CALAIS_TEST_TSAN
#define CALAIS_TEST_TSAN 0
#endif

static calais_reader *cards[N_CARDS];
static atomic_int stop_delay_ms; /* the backend's stop() takes this long */

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A backend with readers holding cards at start, each ATR taking 30 ms to read. */
static LONG sb_init(calais_backend_instance *bi)
{
	for (int i = 0; i < N_CARDS; i++) {
		char base[32];
		snprintf(base, sizeof(base), "Start Reader %d", i);
		struct calais_reader_desc d = { .name = base };
		LONG rv = calais_reader_new(bi, &d, &cards[i]);
		if (rv == SCARD_S_SUCCESS)
			rv = calais_reader_publish(cards[i], true);
		if (rv != SCARD_S_SUCCESS)
			return rv;
	}
	return SCARD_S_SUCCESS;
}

static void sb_stop(calais_backend_instance *bi)
{
	(void)bi;
	t_sleep_ms((unsigned)stop_delay_ms);
}

static LONG sb_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	(void)r, (void)warm;
	t_sleep_ms(30);
	static const uint8_t a[] = { 0x3B, 0x00 };
	memcpy(atr, a, sizeof(a));
	*atr_len = sizeof(a);
	return SCARD_S_SUCCESS;
}

static LONG sb_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                        uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	(void)r, (void)protocol, (void)tx, (void)tx_len, (void)timeout_ms;
	rx[0] = 0x90, rx[1] = 0x00, *rx_len = 2;
	return SCARD_S_SUCCESS;
}

static const struct calais_backend start_backend = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "starttest",
	.init = sb_init,
	.stop = sb_stop,
	.power_on = sb_power_on,
	.transmit = sb_transmit,
};

static void setup(void)
{
	calais_shutdown();
	stop_delay_ms = 0;
	setenv("CALAIS_BACKENDS", "", 1);
	unsetenv("CALAIS_LOG");
	assert_rv(calais_backend_register(&start_backend), SCARD_S_SUCCESS);
}

TestSuite(lifecycle, .init = setup, .fini = t_teardown, .timeout = 60);

/* What one thread's first calls see, as ThreadSafeConnect.py checks. */
static LONG first_calls(void *arg)
{
	(void)arg;
	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	char list[1024];
	DWORD len = sizeof(list);
	rv = SCardListReaders(ctx, NULL, list, &len);
	int n = 0;
	for (const char *p = list; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1) {
		SCARD_READERSTATE rs = { .szReader = p, .dwCurrentState = SCARD_STATE_UNAWARE };
		rv = SCardGetStatusChange(ctx, 0, &rs, 1);
		if (rv == SCARD_S_SUCCESS && (!(rs.dwEventState & SCARD_STATE_PRESENT) || !rs.cbAtr)) {
			fprintf(stderr, "first calls: \"%s\" state 0x%lX, %lu ATR bytes\n", p,
			        (unsigned long)rs.dwEventState, (unsigned long)rs.cbAtr);
			rv = SCARD_E_NO_SMARTCARD;
		}
		SCARDHANDLE h;
		DWORD proto;
		if (rv == SCARD_S_SUCCESS)
			rv = SCardConnect(ctx, p, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto);
		if (rv == SCARD_S_SUCCESS)
			SCardDisconnect(h, SCARD_LEAVE_CARD);
		n++;
	}
	if (rv == SCARD_S_SUCCESS && n != N_CARDS)
		rv = SCARD_E_NO_READERS_AVAILABLE;
	SCardReleaseContext(ctx);
	return rv;
}

Test(lifecycle, every_threads_first_listing_shows_the_cards_present_at_start)
{
	enum { N = 10 };
	t_thread *t[N];
	for (int i = 0; i < N; i++)
		t[i] = t_spawn(first_calls, NULL);
	for (int i = 0; i < N; i++)
		assert_rv(t_join(t[i]), SCARD_S_SUCCESS);
}

static LONG establish(void *arg)
{
	SCARDCONTEXT *ctx = arg;
	return SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, ctx);
}

static LONG shutdown_thread(void *arg)
{
	(void)arg;
	calais_shutdown();
	return SCARD_S_SUCCESS;
}

Test(lifecycle, a_context_asked_for_during_shutdown_does_not_restart_the_manager)
{
	SCARDCONTEXT ctx, late = 0;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	stop_delay_ms = 300; /* shutdown lasts that long */
	t_thread *sd = t_spawn(shutdown_thread, NULL);
	t_sleep_ms(100);
	t_thread *e = t_spawn(establish, &late);
	assert_rv(t_join(e), SCARD_E_NO_SERVICE);
	t_join(sd);
	cr_assert_not(calais_is_running(), "a manager was started behind the shutdown");
	/* Afterwards a new start is fine. */
	assert_rv(calais_backend_register(&start_backend), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
}

#if !CALAIS_TEST_TSAN && !defined(__SANITIZE_ADDRESS__) && !CALAIS_TEST_CLANG_ASAN
/* Hammers SCardStatus so a fork() is likely to catch a lock held by another thread. */
static atomic_bool hammering;

static LONG hammer(void *arg)
{
	SCARDHANDLE h = *(SCARDHANDLE *)arg;
	while (atomic_load(&hammering)) {
		DWORD st, proto, alen = 36;
		BYTE atr[36];
		SCardStatus(h, NULL, NULL, &st, &proto, atr, &alen);
	}
	return SCARD_S_SUCCESS;
}

/* The child: the parent's context and handle are dead; a manager of its own works. */
static int child(SCARDCONTEXT old_ctx, SCARDHANDLE old_h)
{
	alarm(20); /* a deadlock ends the child, and the parent sees it */
	if (SCardIsValidContext(old_ctx) != SCARD_E_INVALID_HANDLE)
		return 10;
	DWORD st, proto, alen = 36;
	BYTE atr[36];
	if (SCardStatus(old_h, NULL, NULL, &st, &proto, atr, &alen) != SCARD_E_INVALID_HANDLE)
		return 11;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	LONG rv = first_calls(NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "child: after %ld ms\n", (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
		fprintf(stderr, "child: first calls: %s\n", t_err(rv));
		return 12;
	}
	calais_shutdown();
	return 0;
}

Test(lifecycle, a_forked_child_gets_a_manager_of_its_own)
{
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	char name[MAX_READERNAME];
	snprintf(name, sizeof(name), "%s", calais_reader_name(cards[0]));
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	          SCARD_S_SUCCESS);
	atomic_store(&hammering, true);
	static t_thread *t[2]; /* static: still reachable from the children */
	t[0] = t_spawn(hammer, &h);
	t[1] = t_spawn(hammer, &h);
	for (int round = 0; round < 5; round++) {
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0)
			_exit(child(ctx, h));
		int status = 0;
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status), "child %d: killed by signal %d (a deadlock?)", round,
		          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		cr_assert_eq(WEXITSTATUS(status), 0, "child %d: exit %d", round, WEXITSTATUS(status));
	}
	atomic_store(&hammering, false);
	t_join(t[0]);
	t_join(t[1]);
	/* The parent's manager is untouched. */
	DWORD st, alen = 36;
	BYTE atr[36];
	assert_rv(SCardStatus(h, NULL, NULL, &st, &proto, atr, &alen), SCARD_S_SUCCESS);
}

#endif

/* ---- logging ------------------------------------------------------------------------ */

static SCARDCONTEXT log_ctx;
static atomic_int log_lines, log_reentries;

/* Calls back into the library from inside the callback: with a library lock held this
 * deadlocks (the test then times out). */
static void reentrant_cb(enum calais_log_level level, const char *domain, const char *msg,
                         void *user)
{
	(void)level, (void)domain, (void)user;
	log_lines++;
	if (calais_version() != CALAIS_VERSION)
		return;
	DWORD len = 0;
	if (log_ctx && SCardListReaders(log_ctx, NULL, NULL, &len) != SCARD_E_INVALID_HANDLE)
		log_reentries++;
	if (!strstr(msg, "from inside the callback"))
		calais_backend_log(NULL, CALAIS_LOG_DEBUG, "logged from inside the callback");
}

Test(lifecycle, log_callbacks_run_with_no_library_lock_held)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.log_level = CALAIS_LOG_DEBUG;
	cfg.log_level_set = true;
	cfg.log_cb = reentrant_cb;
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &log_ctx), SCARD_S_SUCCESS);
	/* Readers come and go: "reader added/removed" are logged under the manager lock. */
	calais_sim_reader *r;
	for (int i = 0; i < 5; i++) {
		assert_rv(calais_sim_reader_add("Log Reader", &r), SCARD_S_SUCCESS);
		assert_rv(calais_sim_reader_unplug(r), SCARD_S_SUCCESS);
	}
	cr_assert_gt(log_lines, 10);
	cr_assert_gt(log_reentries, 5);
	SCardReleaseContext(log_ctx);
	log_ctx = 0;
	calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
}

static atomic_bool sink_slow;
static atomic_int sink_waiting;

static void slow_cb(enum calais_log_level level, const char *domain, const char *msg, void *user)
{
	(void)level, (void)domain, (void)msg, (void)user;
	if (atomic_load(&sink_slow)) {
		sink_waiting++;
		t_sleep_ms(1000);
	}
}

static LONG log_once(void *arg)
{
	(void)arg;
	calais_backend_log(NULL, CALAIS_LOG_INFO, "a line for the slow sink");
	return SCARD_S_SUCCESS;
}

Test(lifecycle, a_slow_log_sink_stalls_no_other_thread)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.log_level = CALAIS_LOG_DEBUG;
	cfg.log_level_set = true;
	cfg.log_cb = slow_cb;
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	SCARDCONTEXT ctx;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	atomic_store(&sink_slow, true);
	t_thread *t = t_spawn(log_once, NULL);
	for (int i = 0; i < 200 && !sink_waiting; i++)
		t_sleep_ms(5);
	cr_assert(sink_waiting, "the line never reached the sink");
	/* While the sink sleeps, this thread's calls (which log) go on. */
	long t0 = now_ms();
	calais_sim_reader *r;
	for (int i = 0; i < 5; i++) {
		char list[1024];
		DWORD len = sizeof(list);
		assert_rv(SCardListReaders(ctx, NULL, list, &len), SCARD_S_SUCCESS);
		assert_rv(calais_sim_reader_add("Sink Reader", &r), SCARD_S_SUCCESS);
		assert_rv(calais_sim_reader_unplug(r), SCARD_S_SUCCESS);
	}
	long took = now_ms() - t0;
	atomic_store(&sink_slow, false);
	t_join(t);
	cr_assert_lt(took, 500, "calls waited %ld ms for another thread's log sink", took);
	calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
}

static atomic_bool logging_on;

static LONG toggle_levels(void *arg)
{
	(void)arg;
	while (atomic_load(&logging_on)) {
		calais_log_set(CALAIS_LOG_DEBUG, NULL, NULL);
		calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
	}
	return SCARD_S_SUCCESS;
}

Test(lifecycle, log_settings_change_while_other_threads_log)
{
	/* ThreadSanitizer reports any unsynchronised access here. */
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.trace_apdu_data = true;
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	SCARDCONTEXT ctx;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	FILE *saved = stderr;
	stderr = fopen("/dev/null", "w");
	atomic_store(&logging_on, true);
	t_thread *t = t_spawn(toggle_levels, NULL);
	char name[MAX_READERNAME];
	snprintf(name, sizeof(name), "%s", calais_reader_name(cards[1]));
	for (int i = 0; i < 200; i++) {
		SCARDHANDLE h;
		DWORD proto;
		if (SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto) ==
		    SCARD_S_SUCCESS) {
			static const BYTE apdu[] = { 0x00, 0x20, 0x00, 0x81, 0x04, 1, 2, 3, 4 };
			BYTE resp[16];
			DWORD rl = sizeof(resp);
			SCardTransmit(h, SCARD_PCI_T0, apdu, sizeof(apdu), NULL, resp, &rl);
			SCardDisconnect(h, SCARD_LEAVE_CARD);
		}
	}
	atomic_store(&logging_on, false);
	t_join(t);
	fclose(stderr);
	stderr = saved;
}

/* ---- reader descriptions at their limits ---------------------------------------------- */

static LONG lb_init(calais_backend_instance *bi)
{
	char longname[600], longifc[600], longsn[600];
	memset(longname, 'N', sizeof(longname) - 1), longname[sizeof(longname) - 1] = 0;
	memset(longifc, 'I', sizeof(longifc) - 1), longifc[sizeof(longifc) - 1] = 0;
	memset(longsn, 'S', sizeof(longsn) - 1), longsn[sizeof(longsn) - 1] = 0;
	const char *names[] = { longname, "Short", "Short" };
	const char *ifcs[] = { NULL, longifc, "Ifc" };
	const char *sns[] = { NULL, NULL, longsn };
	for (int i = 0; i < 3; i++) {
		struct calais_reader_desc d = { .name = names[i], .interface_name = ifcs[i],
			                        .serial = sns[i], .slot = (uint32_t)i };
		calais_reader *r;
		LONG rv = calais_reader_new(bi, &d, &r);
		if (rv == SCARD_S_SUCCESS)
			rv = calais_reader_publish(r, false);
		if (rv != SCARD_S_SUCCESS)
			return rv;
	}
#if !defined(__SANITIZE_ADDRESS__) && !CALAIS_TEST_CLANG_ASAN && !CALAIS_TEST_TSAN
	/* A feature list too large to copy: the out-of-memory path frees a reader whose
	 * locks were initialised (the sanitizers refuse such a calloc outright instead). */
	if (getenv("CALAIS_TEST_UNDER_VALGRIND"))
		return SCARD_S_SUCCESS;
	static const struct calais_feature f = { FEATURE_VERIFY_PIN_DIRECT, 1 };
	struct calais_reader_desc d = { .name = "Too Many Features", .features = &f,
		                        .n_features = SIZE_MAX / 8 };
	calais_reader *r = NULL;
	if (calais_reader_new(bi, &d, &r) != SCARD_E_NO_MEMORY || r)
		return SCARD_F_INTERNAL_ERROR;
#endif
	return SCARD_S_SUCCESS;
}

static const struct calais_backend long_backend = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "longtest",
	.init = lb_init,
	.power_on = sb_power_on,
	.transmit = sb_transmit,
};

Test(lifecycle, reader_names_of_any_length_are_cut_to_the_pcsc_limit)
{
	assert_rv(calais_backend_register(&long_backend), SCARD_S_SUCCESS);
	SCARDCONTEXT ctx;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	char list[8192];
	DWORD len = sizeof(list);
	assert_rv(SCardListReaders(ctx, NULL, list, &len), SCARD_S_SUCCESS);
	int n = 0;
	for (const char *p = list; *p; p += strlen(p) + 1) {
		cr_assert_lt(strlen(p), MAX_READERNAME, "\"%s\" is too long", p);
		n++;
	}
	cr_assert_eq(n, N_CARDS + 3);
}

/* ---- presence probed after publish (CALAIS_READER_PROBE_PRESENCE) ----------------------- */

static atomic_int probes;

static LONG pb_init(calais_backend_instance *bi)
{
	for (int i = 0; i < 2; i++) {
		char base[32];
		snprintf(base, sizeof(base), "Probed Reader %d", i);
		struct calais_reader_desc d = { .name = base, .flags = CALAIS_READER_PROBE_PRESENCE };
		calais_reader *r;
		LONG rv = calais_reader_new(bi, &d, &r);
		if (rv == SCARD_S_SUCCESS)
			rv = calais_reader_publish(r, false);
		if (rv != SCARD_S_SUCCESS)
			return rv;
	}
	return SCARD_S_SUCCESS;
}

static LONG pb_slot_status(calais_reader *r, bool *present)
{
	/* Reader 0's device takes its time to answer. */
	if (strstr(calais_reader_name(r), "Reader 0"))
		t_sleep_ms(300);
	probes++;
	*present = true;
	return SCARD_S_SUCCESS;
}

static const struct calais_backend probe_backend = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "probetest",
	.init = pb_init,
	.power_on = sb_power_on,
	.transmit = sb_transmit,
	.slot_status = pb_slot_status,
};

Test(lifecycle, presence_probed_after_publish_is_in_the_first_listing)
{
	calais_shutdown(); /* without the start-up backend */
	probes = 0;
	assert_rv(calais_backend_register(&probe_backend), SCARD_S_SUCCESS);
	SCARDCONTEXT ctx;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	cr_assert_eq(probes, 2, "each reader probed once before the start-up ended");
	SCARD_READERSTATE rs[2] = { { .szReader = "Probed Reader 0 00 00" },
		                    { .szReader = "Probed Reader 1 00 00" } };
	assert_rv(SCardGetStatusChange(ctx, 0, rs, 2), SCARD_S_SUCCESS);
	for (int i = 0; i < 2; i++)
		cr_assert((rs[i].dwEventState & SCARD_STATE_PRESENT) && rs[i].cbAtr, "%s: 0x%lX",
		          rs[i].szReader, (unsigned long)rs[i].dwEventState);
	t_sleep_ms(100);
	cr_assert_eq(probes, 2, "probed once, not polled");
}
