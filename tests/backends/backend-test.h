/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the backend suites share: a PC/SC code assertion that prints both codes, the
 * manager's start with the suites' logging switch, the check of a counting answer, and a
 * monotonic clock in milliseconds. Include after Criterion. */
#ifndef CALAIS_BACKEND_TEST_H
#define CALAIS_BACKEND_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <winscard.h>
#include <calais/calais.h>

#define assert_rv(expr, want)                                                            \
	do {                                                                             \
		LONG got_ = (expr), want_ = (want);                                      \
		cr_assert_eq(got_, want_, "%s: got 0x%lX, want 0x%lX", #expr,            \
		             (unsigned long)got_, (unsigned long)want_);                 \
	} while (0)

/* Starts the manager with cfg, at debug level when CALAIS_TEST_LOG is set (unless the
 * suite chose a level itself), and establishes *ctx. */
static inline void bt_start(struct calais_config *cfg, SCARDCONTEXT *ctx)
{
	if (getenv("CALAIS_TEST_LOG") && !cfg->log_level_set) {
		cfg->log_level = CALAIS_LOG_DEBUG;
		cfg->log_level_set = true;
	}
	assert_rv(calais_start(cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, ctx), SCARD_S_SUCCESS);
}

/* The test cards' counting answers (vcard's "source", READ BINARY at offset 0): n bytes,
 * byte i = i, then 90 00. */
static inline void bt_assert_counting(const uint8_t *resp, unsigned long len, size_t n,
                                      const char *what)
{
	cr_assert_eq(len, n + 2, "%s of %zu: %lu bytes back", what, n, len);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(resp[i], (uint8_t)i, "%s of %zu: byte %zu", what, n, i);
	cr_assert(resp[n] == 0x90 && resp[n + 1] == 0x00);
}

static inline long bt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

#endif
