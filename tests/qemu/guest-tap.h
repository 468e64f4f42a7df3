/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the QEMU guest programs (guest_test.c, guest_fido.c) share: TAP output (a numbered
 * check a line, "ok N - ..." or "not ok N - ... (rv=...)"), a hex dump as a diagnostic
 * line, and a monotonic clock in milliseconds. Standard C, POSIX and <winscard.h> only, so
 * the programs still build against pcsc-lite. */
#ifndef CALAIS_GUEST_TAP_H
#define CALAIS_GUEST_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <winscard.h>

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

static int n_tests, n_failed;

/* One check; on failure with a PC/SC code other than success, the code and its text.
 * Returns ok. */
static inline bool check(bool ok, LONG rv, const char *fmt, ...) PRINTF_LIKE(3, 4);
static inline bool check(bool ok, LONG rv, const char *fmt, ...)
{
	va_list ap;
	n_tests++;
	if (!ok)
		n_failed++;
	printf("%sok %d - ", ok ? "" : "not ", n_tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!ok && rv != SCARD_S_SUCCESS)
		printf(" (rv=0x%08lX %s)", (unsigned long)rv, pcsc_stringify_error(rv));
	printf("\n");
	fflush(stdout);
	return ok;
}

/* "# what (n): the first 24 bytes .. the last 4". */
static inline void diag_hex(const char *what, const BYTE *b, DWORD n)
{
	printf("# %s (%lu):", what, (unsigned long)n);
	for (DWORD i = 0; i < n && i < 24; i++)
		printf(" %02X", b[i]);
	if (n > 24) {
		printf(" ..");
		for (DWORD i = n - 4; i < n; i++)
			printf(" %02X", b[i]);
	}
	printf("\n");
}

static inline long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

#endif
