/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared fixtures for the unit suites (see helpers.h). */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

calais_sim_reader *t_reader;
char t_name[MAX_READERNAME];
SCARDCONTEXT t_ctx;

const char *t_err(LONG rv)
{
	/* pcsc_stringify_error's buffer is per thread; two calls in one message need two
	 * buffers. */
	static _Thread_local char bufs[2][128];
	static _Thread_local int i;
	i ^= 1;
	strncpy(bufs[i], pcsc_stringify_error(rv), sizeof(bufs[i]) - 1);
	return bufs[i];
}

calais_sim_reader *t_add_reader(const char *base, char name[MAX_READERNAME])
{
	calais_sim_reader *r;
	assert_rv(calais_sim_reader_add(base, &r), SCARD_S_SUCCESS);
	cr_assert_not_null(calais_sim_reader_name(r));
	if (name)
		snprintf(name, MAX_READERNAME, "%s", calais_sim_reader_name(r));
	return r;
}

void t_wait_presence(const char *name, bool present)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	for (int i = 0; i < 20; i++) {
		LONG rv = SCardGetStatusChange(t_ctx, 100, &rs, 1);
		cr_assert(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, "wait: %s", t_err(rv));
		bool is_present = rs.dwEventState & SCARD_STATE_PRESENT;
		if (is_present == present && (!present || rs.cbAtr > 0))
			return;
		rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	}
	cr_assert_fail("reader %s never became %s", name, present ? "present" : "empty");
}

void t_setup_cfg(const struct calais_config *cfg)
{
	/* Criterion runs a suite's .init before a test's own: start from scratch. */
	calais_shutdown();
	assert_rv(calais_start(cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &t_ctx), SCARD_S_SUCCESS);
	t_reader = t_add_reader("Test Reader", t_name);
	assert_rv(calais_sim_card_insert(t_reader, calais_sim_democard()), SCARD_S_SUCCESS);
	t_wait_presence(t_name, true);
}

void t_setup(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = ""; /* nothing but the readers a test adds */
	t_setup_cfg(&cfg);
}

void t_teardown(void)
{
	calais_shutdown();
}

SCARDHANDLE t_connect(DWORD share, DWORD protocols)
{
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	assert_rv(SCardConnect(t_ctx, t_name, share, protocols, &h, &proto), SCARD_S_SUCCESS);
	cr_assert_neq(h, 0);
	return h;
}

static LONG t_card_apdu(void *user, const uint8_t *apdu, size_t n, uint8_t *resp, size_t *len)
{
	struct t_card *c = user;
	(void)apdu;
	(void)n;
	c->apdus++;
	if (c->reply_len + 2 > *len)
		return SCARD_E_INSUFFICIENT_BUFFER;
	for (size_t i = 0; i < c->reply_len; i++)
		resp[i] = (uint8_t)i;
	uint16_t sw = c->sw ? c->sw : 0x9000;
	resp[c->reply_len] = (uint8_t)(sw >> 8);
	resp[c->reply_len + 1] = (uint8_t)sw;
	*len = c->reply_len + 2;
	return SCARD_S_SUCCESS;
}

static void t_card_reset(void *user)
{
	((struct t_card *)user)->resets++;
}

struct calais_sim_card t_card_desc(struct t_card *state, const uint8_t *atr, size_t atr_len)
{
	struct calais_sim_card c = {
		.atr = atr,
		.atr_len = atr_len,
		.apdu = t_card_apdu,
		.reset = t_card_reset,
		.user = state,
	};
	return c;
}

struct t_thread {
	pthread_t tid;
	LONG (*fn)(void *);
	void *arg;
	LONG rv;
	atomic_bool done;
};

static void *t_thread_main(void *p)
{
	struct t_thread *t = p;
	t->rv = t->fn(t->arg);
	atomic_store(&t->done, true);
	return NULL;
}

t_thread *t_spawn(LONG (*fn)(void *), void *arg)
{
	struct t_thread *t = calloc(1, sizeof(*t));
	cr_assert_not_null(t);
	t->fn = fn;
	t->arg = arg;
	cr_assert_eq(pthread_create(&t->tid, NULL, t_thread_main, t), 0);
	return t;
}

bool t_done(t_thread *t)
{
	return atomic_load(&t->done);
}

LONG t_join(t_thread *t)
{
	pthread_join(t->tid, NULL);
	LONG rv = t->rv;
	free(t);
	return rv;
}

void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

LONG t_transmit(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *resp, DWORD *resp_len)
{
	DWORD proto = 0, state, atr_len = 0;
	DWORD name_len = 0;
	LONG rv = SCardStatus(h, NULL, &name_len, &state, &proto, NULL, &atr_len);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	return SCardTransmit(h, proto == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1, apdu,
	                     (DWORD)n, NULL, resp, resp_len);
}
