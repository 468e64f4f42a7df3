/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The one logging path: levels, the user's callback or stderr, and APDU dumps that never
 * show command bodies unless asked.
 *
 * Delivery. Lines are formatted by the thread that logs and put in a bounded queue; a
 * thread that holds no library lock (calais__locks_held, counted by calais__mutex_lock)
 * delivers the queue at once, and a thread that holds one leaves its line there until it
 * releases its last lock (calais__mutex_unlock calls calais__log_deliver). So the user's
 * callback never runs with a library lock held: it may log, call calais_version() or any
 * PC/SC function, and a slow sink delays only the thread delivering to it, never a
 * thread that waits for a lock. One thread delivers at a time (in queue order); a line
 * logged meanwhile by another thread is delivered by that one. A full queue drops new
 * lines and says how many. */
#include "calais-internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

atomic_int calais__log_level = CALAIS_LOG_NONE;
static atomic_bool trace_apdu;

_Thread_local unsigned calais__locks_held;
atomic_int calais__log_queued;

#define QUEUE_LEN 128u
#define LINE_MAX 512u

struct line {
	int level;
	char domain[16];
	char msg[LINE_MAX];
	uint64_t t_us;
	unsigned long tid;
};

/* Guarded by q_lock (a raw lock: see threads.h). */
static calais__mutex_t q_lock = CALAIS__MUTEX_INIT;
static struct line queue[QUEUE_LEN];
static unsigned q_head, q_len, q_dropped;
static bool delivering;
static calais_log_cb log_cb;
static void *log_user;
static uint64_t log_t0_us;

static const char *const level_names[] = { "none", "error", "warning", "info", "debug" };

void calais_log_set(enum calais_log_level level, calais_log_cb cb, void *user)
{
	if ((int)level < CALAIS_LOG_NONE || level > CALAIS_LOG_DEBUG)
		level = CALAIS_LOG_DEBUG;
	calais__mutex_lock_raw(&q_lock);
	log_cb = cb;
	log_user = user;
	calais__mutex_unlock_raw(&q_lock);
	atomic_store(&calais__log_level, (int)level);
}

void calais__log_set_trace_apdu(bool on)
{
	atomic_store(&trace_apdu, on);
}

bool calais__log_card_bytes(void)
{
	return atomic_load(&trace_apdu);
}

int calais__log_level_parse(const char *v)
{
	int level = -1;
	for (size_t i = 0; i < CALAIS__ARRAY_SIZE(level_names); i++)
		if (strcasecmp(v, level_names[i]) == 0)
			level = (int)i;
	if (strcasecmp(v, "warn") == 0)
		level = CALAIS_LOG_WARNING;
	if (v[0] >= '0' && v[0] <= '4' && v[1] == '\0')
		level = v[0] - '0';
	return level;
}

/* CALAIS_LOG accepts a level name or digit; unknown values are reported and ignored. */
void calais__log_init_from_env(void)
{
	const char *v = calais__getenv("CALAIS_LOG");
	if (!v || !*v)
		return;
	int level = calais__log_level_parse(v);
	if (level < 0) {
		fprintf(stderr, "calais: CALAIS_LOG=%s is not a level (none, error, warning, "
		                "info, debug); ignored\n", v);
		return;
	}
	atomic_store(&calais__log_level, level);
}

static void emit(const struct line *l, calais_log_cb cb, void *user)
{
	if (cb) {
		cb((enum calais_log_level)l->level, l->domain, l->msg, user);
		return;
	}
	if (atomic_load_explicit(&calais__log_level, memory_order_relaxed) >= CALAIS_LOG_DEBUG)
		fprintf(stderr, "calais [%llu.%06llu] [%lx] %s %s: %s\n",
		        (unsigned long long)(l->t_us / 1000000u),
		        (unsigned long long)(l->t_us % 1000000u), l->tid, level_names[l->level],
		        l->domain, l->msg);
	else
		fprintf(stderr, "calais %s %s: %s\n", level_names[l->level], l->domain, l->msg);
}

void calais__log_deliver(void)
{
	struct line l;
	calais__mutex_lock_raw(&q_lock);
	if (delivering) {
		calais__mutex_unlock_raw(&q_lock);
		return;
	}
	delivering = true;
	while (q_len || q_dropped) {
		if (q_dropped && !q_len) {
			/* Said after the lines that did fit, so the gap shows where it was. */
			l.level = CALAIS_LOG_WARNING;
			snprintf(l.domain, sizeof(l.domain), "core");
			snprintf(l.msg, sizeof(l.msg), "%u log lines dropped (the log sink is slow)",
			         q_dropped);
			l.t_us = calais__now_us() - log_t0_us;
			l.tid = calais__tid();
			q_dropped = 0;
		} else {
			l = queue[q_head];
			q_head = (q_head + 1) % QUEUE_LEN;
			q_len--;
		}
		atomic_store_explicit(&calais__log_queued, (int)q_len + (q_dropped != 0),
		                      memory_order_relaxed);
		calais_log_cb cb = log_cb;
		void *user = log_user;
		calais__mutex_unlock_raw(&q_lock);
		emit(&l, cb, user);
		calais__mutex_lock_raw(&q_lock);
	}
	delivering = false;
	calais__mutex_unlock_raw(&q_lock);
}

void calais__log(int level, const char *domain, const char *fmt, ...)
{
	char msg[LINE_MAX];
	va_list ap;

	if (level > atomic_load_explicit(&calais__log_level, memory_order_relaxed) ||
	    level <= CALAIS_LOG_NONE)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(msg)) /* mark truncation instead of cutting silently */
		memcpy(msg + sizeof(msg) - 4, "...", 4);
	/* Device strings reach the log through %s: none may forge a line or drive a
	 * terminal. */
	calais__sanitise(msg, '?');

	uint64_t now = calais__now_us();
	calais__mutex_lock_raw(&q_lock);
	if (!log_t0_us)
		log_t0_us = now;
	if (q_len == QUEUE_LEN) {
		q_dropped++;
	} else {
		struct line *l = &queue[(q_head + q_len) % QUEUE_LEN];
		l->level = level;
		snprintf(l->domain, sizeof(l->domain), "%s", domain);
		memcpy(l->msg, msg, sizeof(msg));
		l->t_us = now - log_t0_us;
		l->tid = calais__tid();
		q_len++;
	}
	atomic_store_explicit(&calais__log_queued, 1, memory_order_relaxed);
	calais__mutex_unlock_raw(&q_lock);
	if (!calais__locks_held)
		calais__log_deliver();
}

#if defined(CALAIS_PLATFORM_POSIX)
/* fork(): the child's only thread cannot be inside the queue (the prepare handler holds
 * its lock), but a parent's thread may have been delivering: the child delivers anew. */
void calais__log_atfork_prepare(void)
{
	calais__mutex_lock_raw(&q_lock);
}

void calais__log_atfork_parent(void)
{
	calais__mutex_unlock_raw(&q_lock);
}

void calais__log_atfork_child(void)
{
	delivering = false;
	calais__mutex_unlock_raw(&q_lock);
}
#endif

void calais__log_apdu(const char *domain, const char *what, const uint8_t *buf, size_t len)
{
	char hex[3 * 64 + 8];
	size_t shown, pos = 0;

	if (!CALAIS__LOG_ON(CALAIS_LOG_DEBUG))
		return;
	/* Without the trace option only the header and length byte are shown: the body of
	 * VERIFY or CHANGE REFERENCE DATA is a PIN. */
	shown = atomic_load(&trace_apdu) ? len : (len < 5 ? len : 5);
	if (shown > 64)
		shown = 64;
	for (size_t i = 0; i < shown; i++)
		pos += (size_t)snprintf(hex + pos, sizeof(hex) - pos, "%02X ", buf[i]);
	if (shown < len)
		snprintf(hex + pos, sizeof(hex) - pos, "...");
	else if (pos)
		hex[pos - 1] = '\0';
	else
		hex[0] = '\0';
	calais__log(CALAIS_LOG_DEBUG, domain, "%s (%zu bytes): %s", what, len, hex);
}

void calais_backend_log(calais_backend_instance *bi, int level, const char *fmt, ...)
{
	char msg[480];
	va_list ap;

	if (!CALAIS__LOG_ON(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	calais__log(level, bi && bi->be ? bi->be->name : "backend", "%s", msg);
}
