/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The one logging path: levels, the user's callback or stderr, and APDU dumps that never
 * show command bodies unless asked. */
#include "calais-internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

volatile int calais__log_level = CALAIS_LOG_NONE;

static calais__mutex_t log_lock = CALAIS__MUTEX_INIT;
static calais_log_cb log_cb;
static void *log_user;
static bool trace_apdu;
static uint64_t log_t0_us;

static const char *const level_names[] = { "none", "error", "warning", "info", "debug" };

void calais_log_set(enum calais_log_level level, calais_log_cb cb, void *user)
{
	calais__mutex_lock(&log_lock);
	if ((int)level < CALAIS_LOG_NONE || level > CALAIS_LOG_DEBUG)
		level = CALAIS_LOG_DEBUG;
	calais__log_level = (int)level;
	log_cb = cb;
	log_user = user;
	calais__mutex_unlock(&log_lock);
}

void calais__log_set_trace_apdu(bool on)
{
	trace_apdu = on;
}

bool calais__log_trace_apdu(void)
{
	return trace_apdu;
}

/* CALAIS_LOG accepts a level name or digit; unknown values are reported and ignored. */
void calais__log_init_from_env(void)
{
	const char *v = calais__getenv("CALAIS_LOG");
	if (!v || !*v)
		return;
	int level = -1;
	for (size_t i = 0; i < CALAIS__ARRAY_SIZE(level_names); i++)
		if (strcasecmp(v, level_names[i]) == 0)
			level = (int)i;
	if (strcasecmp(v, "warn") == 0)
		level = CALAIS_LOG_WARNING;
	if (v[0] >= '0' && v[0] <= '4' && v[1] == '\0')
		level = v[0] - '0';
	if (level < 0) {
		fprintf(stderr, "calais: CALAIS_LOG=%s is not a level (none, error, warning, "
		                "info, debug); ignored\n", v);
		return;
	}
	calais__log_level = level;
}

void calais__log(int level, const char *domain, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (level > calais__log_level || level <= CALAIS_LOG_NONE)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(msg)) /* mark truncation instead of cutting silently */
		memcpy(msg + sizeof(msg) - 4, "...", 4);

	calais__mutex_lock(&log_lock);
	calais_log_cb cb = log_cb;
	void *user = log_user;
	if (!log_t0_us)
		log_t0_us = calais__now_us();
	uint64_t t = calais__now_us() - log_t0_us;
	calais__mutex_unlock(&log_lock);

	if (cb) {
		cb((enum calais_log_level)level, domain, msg, user);
		return;
	}
	if (calais__log_level >= CALAIS_LOG_DEBUG)
		fprintf(stderr, "calais [%llu.%06llu] [%lx] %s %s: %s\n",
		        (unsigned long long)(t / 1000000u), (unsigned long long)(t % 1000000u),
		        calais__tid(), level_names[level], domain, msg);
	else
		fprintf(stderr, "calais %s %s: %s\n", level_names[level], domain, msg);
}

void calais__log_apdu(const char *domain, const char *what, const uint8_t *buf, size_t len)
{
	char hex[3 * 64 + 8];
	size_t shown, pos = 0;

	if (calais__log_level < CALAIS_LOG_DEBUG)
		return;
	/* Without the trace option only the header and length byte are shown: the body of
	 * VERIFY or CHANGE REFERENCE DATA is a PIN. */
	shown = trace_apdu ? len : (len < 5 ? len : 5);
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

	if (level > calais__log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	calais__log(level, bi && bi->be ? bi->be->name : "backend", "%s", msg);
}
