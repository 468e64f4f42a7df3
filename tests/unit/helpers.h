/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared fixtures for the unit suites: a manager with simulated readers, the demo card
 * and a scriptable card, plus assertions that print PC/SC codes by name. */
#ifndef CALAIS_TEST_HELPERS_H
#define CALAIS_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

/* Asserts a PC/SC return code, naming both sides on failure. */
#define assert_rv(expr, want)                                                           \
	do {                                                                            \
		LONG got_ = (expr);                                                     \
		LONG want_ = (want);                                                    \
		cr_assert_eq(got_, want_, "%s: got 0x%08lX (%s), want 0x%08lX (%s)", #expr,\
		             (unsigned long)got_, t_err(got_), (unsigned long)want_,     \
		             t_err(want_));                                             \
	} while (0)

const char *t_err(LONG rv);

/* The fixture: the manager started with `sim` off (so no default reader), one simulated
 * reader "Test Reader" with the demo card inserted and powered, and a context. */
extern calais_sim_reader *t_reader;
extern char t_name[MAX_READERNAME];
extern SCARDCONTEXT t_ctx;
void t_setup(void);
void t_setup_cfg(const struct calais_config *cfg);
void t_teardown(void);

/* Adds a simulated reader and copies its PC/SC name into name. */
calais_sim_reader *t_add_reader(const char *base, char name[MAX_READERNAME]);
/* Waits (up to 2 s) until the reader shows the wanted presence with an ATR. */
void t_wait_presence(const char *name, bool present);
SCARDHANDLE t_connect(DWORD share, DWORD protocols);

/* A card answering every APDU with 90 00 (or `sw` when set) and counting resets. */
struct t_card {
	unsigned apdus;
	unsigned resets;
	uint16_t sw;
	size_t reply_len; /* bytes of data before the SW (value i & 0xFF) */
};
struct calais_sim_card t_card_desc(struct t_card *state, const uint8_t *atr, size_t atr_len);

/* Runs fn(arg) in a thread; t_join returns its result. */
typedef struct t_thread t_thread;
t_thread *t_spawn(LONG (*fn)(void *), void *arg);
LONG t_join(t_thread *t);
/* True when the thread has returned (does not join). */
bool t_done(t_thread *t);
void t_sleep_ms(unsigned ms);

/* Exchanges an APDU with the handle's protocol PCI; returns the SW or -1 on error rv. */
LONG t_transmit(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *resp, DWORD *resp_len);

#endif
