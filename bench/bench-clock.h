// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The benchmark harnesses' clock, sleep and pause spreader (bench/ops, bench/neighbour):
 * the same definitions on both sides of every comparison. Header only.
 */
#ifndef CALAIS_BENCH_CLOCK_H
#define CALAIS_BENCH_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in microseconds. */
static inline double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline void sleep_us(double us)
{
	long long ns = (long long)(us * 1e3);
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* xorshift: pauses only need to be spread, not secret. One stream per process, used by
 * one thread. */
static uint64_t bench_rng_state;

static inline void rand_seed(void)
{
	bench_rng_state = (uint64_t)now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
}

/* Uniform in [0, 1). */
static inline double rand_unit(void)
{
	bench_rng_state ^= bench_rng_state << 13;
	bench_rng_state ^= bench_rng_state >> 7;
	bench_rng_state ^= bench_rng_state << 17;
	return (double)(bench_rng_state >> 11) / (double)(1ull << 53);
}

#endif
