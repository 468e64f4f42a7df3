/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the backend suites share: a PC/SC code assertion that prints both codes, and a
 * monotonic clock in milliseconds. */
#ifndef CALAIS_BACKEND_TEST_H
#define CALAIS_BACKEND_TEST_H

#include <time.h>

#define assert_rv(expr, want)                                                            \
	do {                                                                             \
		LONG got_ = (expr), want_ = (want);                                      \
		cr_assert_eq(got_, want_, "%s: got 0x%lX, want 0x%lX", #expr,            \
		             (unsigned long)got_, (unsigned long)want_);                 \
	} while (0)

static inline long bt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

#endif
