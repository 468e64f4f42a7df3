/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A virtual clock for the fuzz targets that compile a backend's source into themselves
 * (fuzz_iccd, fuzz_serial_*, fuzz_vpcd): included before that source, it renames the
 * platform's clock and sleep in it, so a device's silence or "busy, poll again later"
 * costs no real time. Every wait still ends: a sleep moves the clock on, and a fake
 * device that answers "timeout" moves it by the time it was given. What ends a
 * runaway loop is then the target's fixed cap on device calls, not the input's length. */
#ifndef CALAIS_FUZZ_VCLOCK_H
#define CALAIS_FUZZ_VCLOCK_H

#include "calais-internal.h"

static uint64_t fz_clock_us = 1000000000u;

static inline uint64_t fz_now_us(void)
{
	return fz_clock_us;
}

static inline uint64_t fz_now_ms(void)
{
	return fz_clock_us / 1000u;
}

static inline void fz_sleep_us(uint32_t us)
{
	fz_clock_us += us ? us : 1;
}

/* CALAIS_LOG=debug shows the path an input takes (reproducing a finding). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	calais__log_init_from_env();
	return 0;
}

#define calais__now_us fz_now_us
#define calais__now_ms fz_now_ms
#define calais__sleep_us fz_sleep_us

#endif
