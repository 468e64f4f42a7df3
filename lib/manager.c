/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The manager's life cycle: configuration (explicit or from the environment), the
 * backend registry, start (every thread's first call waits for it), shutdown, and
 * fork(): a child gets a manager of its own. Deferred reader jobs are lib/jobs.c's. */
#include "calais-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(CALAIS_PLATFORM_POSIX)
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

struct calais__manager calais__mgr = {
	.lock = CALAIS__MUTEX_INIT,
};

/* The longest start-up waits for the cards present at start to be powered up. */
#define STARTUP_POWER_UP_MS 2000

/* Serialises start, shutdown and backend registration (see the lock order). */
static calais__mutex_t start_lock = CALAIS__MUTEX_INIT;

/* Built-in backends. `by_default`: enabled when CALAIS_BACKENDS is unset (backends that
 * need no declaration; the simulated one is only enabled on request). */
static const struct {
	const struct calais_backend *be;
	bool by_default;
} builtin[] = {
#if defined(CALAIS_HAVE_SIM)
	{ &calais__backend_sim, false },
#endif
#if defined(CALAIS_HAVE_CCID)
	{ &calais__backend_ccid, true },
#endif
#if defined(CALAIS_HAVE_PCSC)
	/* Asked for only: next to ccid it would list pcscd's readers a second time. */
	{ &calais__backend_pcsc, false },
#endif
#if defined(CALAIS_HAVE_SERIAL)
	/* Declared readers only (CALAIS_SERIAL_READERS): nothing to do without them. */
	{ &calais__backend_serial, true },
#endif
#if defined(CALAIS_HAVE_HID)
	/* Asked for only: it would open every FIDO key of the machine and talk to each at
	 * start-up. */
	{ &calais__backend_hid, false },
#endif
#if defined(CALAIS_HAVE_VPCD)
	/* Asked for only: it opens TCP ports. */
	{ &calais__backend_vpcd, false },
#endif
	{ NULL, false },
};

/* Third-party backends (calais_backend_register()); start_lock. */
#define MAX_REGISTERED 32
static const struct calais_backend *registered[MAX_REGISTERED];
static size_t n_registered;

uint32_t calais_version(void)
{
	return CALAIS_VERSION;
}

const char *calais_version_str(void)
{
	return CALAIS_VERSION_STR;
}

void calais_config_init(struct calais_config *cfg)
{
	if (cfg)
		memset(cfg, 0, sizeof(*cfg));
}

/* A library linked into a setuid or setgid program must not take orders from the
 * caller's environment: there every CALAIS_* variable is ignored. glibc says so with
 * secure_getenv(); elsewhere the kernel's AT_SECURE flag (Linux with musl or bionic),
 * issetugid() (the BSDs, macOS), or, on other POSIX systems, real and effective ids that
 * differ. Windows has no such programs. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 17))
#define CALAIS__GLIBC_SECURE_GETENV 1
#else
#define CALAIS__GLIBC_SECURE_GETENV 0
#endif
#if !CALAIS__GLIBC_SECURE_GETENV
static bool env_untrusted(void)
{
#if defined(_WIN32)
	return false;
#elif defined(__linux__)
	return getauxval(AT_SECURE) != 0;
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) ||               \
	defined(__NetBSD__) || defined(__DragonFly__)
	return issetugid() != 0;
#else
	return getuid() != geteuid() || getgid() != getegid();
#endif
}
#endif

const char *calais__getenv(const char *name)
{
#if CALAIS__GLIBC_SECURE_GETENV
	extern char *secure_getenv(const char *);
	return secure_getenv(name);
#else
	return env_untrusted() ? NULL : getenv(name);
#endif
}

LONG calais__parse_ms(const char *name, const char *s, uint32_t *v)
{
	if (!s || !*s)
		return SCARD_S_SUCCESS;
	char *end;
	/* Digits only: strtoull would take a sign or leading blanks ("-1" as 2^64 - 1). */
	if (*s < '0' || *s > '9')
		goto bad;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (*end || errno || x > UINT32_MAX)
		goto bad;
	*v = (uint32_t)x;
	return SCARD_S_SUCCESS;
bad:
	calais__warn("%s=%s is not a number of milliseconds; ignored", name, s);
	return SCARD_E_INVALID_VALUE;
}

bool calais__parse_flag(const char *s)
{
	return s && *s && strcmp(s, "0") != 0;
}

/* Reads a duration in ms from the environment; keeps *v when unset or malformed. */
static void env_ms(const char *name, uint32_t *v)
{
	calais__parse_ms(name, calais__getenv(name), v);
}

static void seed_rng(void)
{
	uint64_t seed = calais__now_us() ^ ((uint64_t)(uintptr_t)&seed << 16);
#if defined(CALAIS_PLATFORM_POSIX)
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		uint64_t r;
		if (read(fd, &r, sizeof(r)) == (ssize_t)sizeof(r))
			seed ^= r;
		close(fd);
	}
#endif
	calais__mgr.rng = seed ? seed : 0x9E3779B97F4A7C15ull;
}

/* xorshift64*: handles are random 32-bit values (as pcsc-lite's) so a stale or forged
 * value is unlikely to hit a live object; lookups still validate every value. */
uint32_t calais__random32(void)
{
	uint64_t x = calais__mgr.rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	calais__mgr.rng = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static const struct calais_backend *find_backend(const char *name, size_t len)
{
	for (size_t i = 0; builtin[i].be; i++)
		if (strlen(builtin[i].be->name) == len && strncasecmp(builtin[i].be->name, name, len) == 0)
			return builtin[i].be;
	for (size_t i = 0; i < n_registered; i++)
		if (strlen(registered[i]->name) == len && strncasecmp(registered[i]->name, name, len) == 0)
			return registered[i];
	return NULL;
}

LONG calais__parse_backends(const char *list, bool from_env, const struct calais_backend **want,
                            size_t cap, size_t *n)
{
	size_t n_want = 0;
	if (list) {
		const char *p = list;
		while (*p) {
			size_t len = strcspn(p, ", ");
			if (len) {
				const struct calais_backend *be = find_backend(p, len);
				if (!be) {
					if (!from_env) {
						calais__err("unknown backend \"%.*s\"", (int)len, p);
						return SCARD_E_INVALID_VALUE;
					}
					/* Said even at the default (silent) level, as for a bad
					 * CALAIS_LOG: a typo would otherwise just show no readers. */
					fprintf(stderr, "calais: CALAIS_BACKENDS: unknown backend \"%.*s\" "
					                "ignored\n", (int)len, p);
				} else {
					bool dup = false;
					for (size_t i = 0; i < n_want; i++)
						dup |= want[i] == be;
					if (!dup && n_want < cap)
						want[n_want++] = be;
				}
			}
			p += len;
			while (*p == ',' || *p == ' ')
				p++;
		}
	} else {
		for (size_t i = 0; builtin[i].be && n_want < cap; i++)
			if (builtin[i].by_default)
				want[n_want++] = builtin[i].be;
	}
	*n = n_want;
	return SCARD_S_SUCCESS;
}

static calais_backend_instance *find_instance(const struct calais_backend *be)
{
	for (calais_backend_instance *bi = calais__mgr.backends; bi; bi = bi->next)
		if (bi->be == be)
			return bi;
	return NULL;
}

/* Creates and starts one backend instance; start_lock held, mgr.lock not held. */
static calais_backend_instance *start_backend(const struct calais_backend *be, bool configured)
{
	calais_backend_instance *bi = find_instance(be);
	if (bi)
		return bi;
	bi = calloc(1, sizeof(*bi));
	if (!bi)
		return NULL;
	bi->be = be;
	bi->configured = configured;
	if (be->instance_priv_size) {
		bi->priv = calloc(1, be->instance_priv_size);
		if (!bi->priv) {
			free(bi);
			return NULL;
		}
	}
	/* Linked before init() so readers it publishes find their instance. */
	bi->next = calais__mgr.backends;
	calais__mgr.backends = bi;
	LONG rv = be->init(bi);
	if (rv != SCARD_S_SUCCESS) {
		calais__err("backend %s failed to start: %s (0x%08lX); disabled", be->name,
		            pcsc_stringify_error(rv), (unsigned long)rv);
		return bi; /* kept (not started) so shutdown frees it in one place */
	}
	bi->started = true;
	calais__info("backend %s started", be->name);
	return bi;
}

/* ---- fork() ------------------------------------------------------------------------ */

#if defined(CALAIS_PLATFORM_POSIX)
/* What a child of fork() inherits is a copy of the parent's manager whose threads do not
 * exist there: readers, contexts and handles that only the parent's threads can serve,
 * and locks those threads may have held. The prepare handler takes the manager's locks
 * so the copy is consistent; the child forgets the copy (kept reachable, never used:
 * backends' resources such as USB handles and sockets belong to the parent) and starts
 * a manager of its own at its first SCardEstablishContext(). The parent's handles then
 * answer SCARD_E_INVALID_HANDLE in the child. */
/* volatile: only ever written, and it must stay (it keeps the copy reachable). */
static struct calais__manager *volatile forgotten;

static void atfork_prepare(void)
{
	calais__mutex_lock(&start_lock);
	calais__mutex_lock(&calais__mgr.lock);
	calais__log_atfork_prepare();
}

static void atfork_parent(void)
{
	calais__log_atfork_parent();
	calais__mutex_unlock(&calais__mgr.lock);
	calais__mutex_unlock(&start_lock);
}

static void atfork_child(void)
{
	struct calais__manager *m = &calais__mgr;
	calais__log_atfork_child();
	if (m->running) {
		struct calais__manager *copy = malloc(sizeof(*copy));
		if (copy) {
			memcpy(copy, m, sizeof(*copy));
			copy->lock = (calais__mutex_t)CALAIS__MUTEX_INIT; /* a copy, never locked */
			forgotten = copy;
		}
	}
	calais__mutex_unlock(&m->lock);
	calais__mutex_unlock(&start_lock);
	calais__mutex_init(&m->lock);
	calais__mutex_init(&start_lock);
	calais__jobs_forget();
	m->running = m->stopping = m->ready = false;
	m->active_calls = 0;
	m->backends = NULL;
	m->readers = m->dead_readers = NULL;
	memset(m->reader_hash, 0, sizeof(m->reader_hash));
	memset(m->ctx_hash, 0, sizeof(m->ctx_hash));
	memset(m->handle_hash, 0, sizeof(m->handle_hash));
	m->n_readers = 0;
	m->sc_waiters = NULL;
}
#endif

/* Once per process, at the first start. start_lock held. */
static void atfork_register(void)
{
#if defined(CALAIS_PLATFORM_POSIX)
	static bool done;
	if (!done && pthread_atfork(atfork_prepare, atfork_parent, atfork_child) == 0)
		done = true;
#endif
}

/* Starts the manager; start_lock held. */
static LONG do_start(const struct calais_config *cfg)
{
	struct calais__manager *m = &calais__mgr;
	struct calais_config c;

	if (cfg)
		c = *cfg;
	else
		calais_config_init(&c);

	if (c.log_level_set || c.log_cb)
		calais_log_set(c.log_level_set ? c.log_level : (enum calais_log_level)calais__log_level,
		               c.log_cb, c.log_user);
	if (!c.log_level_set)
		calais__log_init_from_env();
	calais__log_set_trace_apdu(c.trace_apdu_data);

	const char *list = c.backends;
	bool from_env = false;
	if (!list) {
		list = calais__getenv("CALAIS_BACKENDS");
		from_env = list != NULL;
	}
	if (!cfg || !cfg->poll_interval_ms)
		env_ms("CALAIS_POLL_MS", &c.poll_interval_ms);
	if (!cfg || !cfg->power_down_delay_ms)
		env_ms("CALAIS_POWER_DOWN_MS", &c.power_down_delay_ms);
	if (!cfg || !cfg->transaction_timeout_ms)
		env_ms("CALAIS_TRANSACTION_TIMEOUT_MS", &c.transaction_timeout_ms);
	if (!cfg || !cfg->exchange_timeout_ms)
		env_ms("CALAIS_EXCHANGE_TIMEOUT_MS", &c.exchange_timeout_ms);
	if (!c.exchange_timeout_ms)
		c.exchange_timeout_ms = CALAIS__EXCHANGE_TIMEOUT_MS;
	if (!c.poll_interval_ms)
		c.poll_interval_ms = 400;
	if (!c.power_down_delay_ms)
		c.power_down_delay_ms = 5000;

	/* Resolve the backend list before anything starts, so a bad explicit list fails
	 * cleanly. */
	const struct calais_backend *want[CALAIS__ARRAY_SIZE(builtin) + MAX_REGISTERED];
	size_t n_want = 0;
	LONG lrv = calais__parse_backends(list, from_env, want, CALAIS__ARRAY_SIZE(want), &n_want);
	if (lrv != SCARD_S_SUCCESS)
		return lrv;
	/* Registered backends are declared by the application, so always enabled. */
	for (size_t i = 0; i < n_registered; i++) {
		bool dup = false;
		for (size_t j = 0; j < n_want; j++)
			dup |= want[j] == registered[i];
		if (!dup)
			want[n_want++] = registered[i];
	}

	calais__mutex_lock(&m->lock);
	calais__cond_init(&m->state_cond);
	calais__cond_init(&m->worker_cond);
	calais__cond_init(&m->drain_cond);
	m->cfg = c;
	m->cfg.backends = NULL;
	m->cfg.log_cb = NULL;
	seed_rng();
	m->stopping = false;
	m->running = true;
	/* Never 0: callers pass 0 to mean "no count known", so the first reader arrival
	 * after they read the state must already differ from what they hold. */
	m->pnp_counter = 1;
	m->ready = false;
	if (calais__jobs_start() != SCARD_S_SUCCESS) {
		m->running = false;
		calais__mutex_unlock(&m->lock);
		calais__err("cannot start the scheduler thread");
		return SCARD_E_NO_MEMORY;
	}
	calais__mutex_unlock(&m->lock);
	atfork_register();

	calais__info("Calais %s starting", CALAIS_VERSION_STR);
	for (size_t i = 0; i < n_want; i++)
		if (!start_backend(want[i], true))
			calais__err("backend %s: out of memory", want[i]->name);

	/* Cards present at start are shown once their ATR is read (by runners): wait for
	 * those first power-ups (and presence probes), briefly, so the first SCardListReaders() and
	 * SCardGetStatusChange() of a program see the cards already in the readers rather
	 * than empty readers that fill a few milliseconds later. */
	calais__mutex_lock(&m->lock);
	uint64_t until = calais__now_ms() + STARTUP_POWER_UP_MS;
	for (;;) {
		bool pending = false;
		for (struct calais_reader *r = m->readers; r && !pending; r = r->next)
			pending = r->card == CALAIS__CARD_INSERTED || r->probe_pending;
		if (!pending || !calais__cond_wait_until(&m->state_cond, &m->lock, until))
			break;
	}
	/* From here on SCardEstablishContext() proceeds: every thread's first listing shows
	 * what start-up found (calais__ensure_started). */
	m->ready = true;
	calais__mutex_unlock(&m->lock);
	return SCARD_S_SUCCESS;
}

LONG calais_start(const struct calais_config *cfg)
{
	LONG rv;
	calais__mutex_lock(&start_lock);
	if (calais__mgr.running)
		rv = SCARD_E_INVALID_VALUE;
	else
		rv = do_start(cfg);
	calais__mutex_unlock(&start_lock);
	return rv;
}

LONG calais__ensure_started(void)
{
	struct calais__manager *m = &calais__mgr;
	calais__mutex_lock(&m->lock);
	bool ready = m->running && m->ready && !m->stopping, stopping = m->stopping;
	calais__mutex_unlock(&m->lock);
	if (ready)
		return SCARD_S_SUCCESS;
	/* A call racing calais_shutdown() fails; it does not start a manager behind it. */
	if (stopping)
		return SCARD_E_NO_SERVICE;
	/* Starting or not started: start_lock is held for the whole start-up, so a thread
	 * arriving meanwhile waits here for it to finish, and no longer. */
	LONG rv = SCARD_S_SUCCESS;
	calais__mutex_lock(&start_lock);
	calais__mutex_lock(&m->lock);
	bool running = m->running, stop = m->stopping;
	calais__mutex_unlock(&m->lock);
	if (stop)
		rv = SCARD_E_NO_SERVICE;
	else if (!running)
		rv = do_start(NULL);
	calais__mutex_unlock(&start_lock);
	return rv;
}

bool calais_is_running(void)
{
	calais__mutex_lock(&calais__mgr.lock);
	bool r = calais__mgr.running && !calais__mgr.stopping;
	calais__mutex_unlock(&calais__mgr.lock);
	return r;
}

calais_backend_instance *calais__backend_activate(const struct calais_backend *be)
{
	calais_backend_instance *bi = NULL;
	calais__mutex_lock(&start_lock);
	if (calais__mgr.running || do_start(NULL) == SCARD_S_SUCCESS) {
		bi = start_backend(be, false);
		if (bi && !bi->started)
			bi = NULL;
	}
	calais__mutex_unlock(&start_lock);
	return bi;
}

bool calais__backend_configured(calais_backend_instance *bi)
{
	return bi->configured;
}

void *calais_backend_priv(calais_backend_instance *bi)
{
	return bi ? bi->priv : NULL;
}

LONG calais_backend_register(const struct calais_backend *be)
{
	if (!be || !be->name || !*be->name || !be->init || !be->power_on || !be->transmit ||
	    be->abi_version < 1 || be->abi_version > CALAIS_BACKEND_ABI_VERSION)
		return SCARD_E_INVALID_PARAMETER;

	LONG rv = SCARD_S_SUCCESS;
	calais__mutex_lock(&start_lock);
	if (find_backend(be->name, strlen(be->name)))
		rv = SCARD_E_DUPLICATE_READER;
	else if (n_registered == MAX_REGISTERED)
		rv = SCARD_E_NO_MEMORY;
	else {
		registered[n_registered++] = be;
		if (calais__mgr.running && !start_backend(be, true))
			rv = SCARD_E_NO_MEMORY;
	}
	calais__mutex_unlock(&start_lock);
	return rv;
}

void calais_shutdown(void)
{
	struct calais__manager *m = &calais__mgr;

	calais__mutex_lock(&start_lock);
	calais__mutex_lock(&m->lock);
	if (!m->running) {
		calais__mutex_unlock(&m->lock);
		n_registered = 0;
		calais__mutex_unlock(&start_lock);
		return;
	}
	m->stopping = true;
	m->ready = false;
	calais__reader_state_changed(NULL);
	for (struct calais_reader *r = m->readers; r; r = r->next)
		calais__cond_broadcast(&r->lock_cond);
	/* Ends the I/O in progress (the backends' cancel(), so the drain does not wait for a
	 * slow card), waits for the calls to drain, joins the scheduler and the runners. */
	calais__jobs_stop();
	calais__mutex_unlock(&m->lock);

	/* No application call and no worker job runs now: stop the backends' own threads,
	 * close every reader, then free the backends. */
	for (calais_backend_instance *bi = m->backends; bi; bi = bi->next)
		if (bi->started && bi->be->stop)
			bi->be->stop(bi);
	calais__reader_close_all();
	calais__contexts_free_all();
	while (m->backends) {
		calais_backend_instance *bi = m->backends;
		m->backends = bi->next;
		if (bi->started && bi->be->exit)
			bi->be->exit(bi);
		free(bi->priv);
		free(bi);
	}

	calais__mutex_lock(&m->lock);
	calais__cond_destroy(&m->state_cond);
	calais__cond_destroy(&m->worker_cond);
	calais__cond_destroy(&m->drain_cond);
	m->running = false;
	m->stopping = false;
	m->n_readers = 0;
	m->readers = NULL;
	m->dead_readers = NULL;
	calais__mutex_unlock(&m->lock);
	n_registered = 0;
	calais__info("Calais stopped");
	calais__mutex_unlock(&start_lock);
}
