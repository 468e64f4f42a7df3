/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* SCardGetStatusChange and SCardCancel: state bits, event counters, the PnP
 * pseudo-reader, timeouts, and waits woken by the events themselves. */
#include "helpers.h"

#include <string.h>
#include <time.h>

TestSuite(status_change, .init = t_setup, .fini = t_teardown, .timeout = 15);

#define PNP "\\\\?PnP?\\Notification"

static SCARD_READERSTATE rs_now(const char *name)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	return rs;
}

Test(status_change, unaware_returns_at_once)
{
	SCARD_READERSTATE rs = { .szReader = t_name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_CHANGED);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	cr_assert_not(rs.dwEventState & SCARD_STATE_EMPTY);
	cr_assert_eq(rs.cbAtr, calais_sim_democard()->atr_len);
	cr_assert_arr_eq(rs.rgbAtr, calais_sim_democard()->atr, rs.cbAtr);
	cr_assert_geq(rs.dwEventState >> 16, 1);
}

Test(status_change, arguments)
{
	SCARD_READERSTATE rs = { .szReader = NULL };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_E_INVALID_VALUE);
	assert_rv(SCardGetStatusChange(t_ctx, 0, NULL, 1), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardGetStatusChange(t_ctx, 0, NULL, 0), SCARD_S_SUCCESS);
	rs.szReader = "Nope 00 00";
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_E_UNKNOWN_READER);
	rs.dwCurrentState = SCARD_STATE_IGNORE;
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, &rs, 1), SCARD_S_SUCCESS);
}

Test(status_change, timeouts)
{
	SCARD_READERSTATE rs = rs_now(t_name);
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_E_TIMEOUT);
	cr_assert_not(rs.dwEventState & SCARD_STATE_CHANGED);
	uint64_t t0 = (uint64_t)time(NULL);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_rv(SCardGetStatusChange(t_ctx, 300, &rs, 1), SCARD_E_TIMEOUT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	(void)t0;
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	cr_assert_geq(ms, 290, "returned after %ld ms", ms);
}

static LONG remove_after(void *arg)
{
	t_sleep_ms(100);
	return calais_sim_card_remove(arg);
}

static LONG insert_after(void *arg)
{
	t_sleep_ms(100);
	return calais_sim_card_insert(arg, calais_sim_democard());
}

Test(status_change, insertion_and_removal_wake_infinite_waits)
{
	SCARD_READERSTATE rs = rs_now(t_name);
	DWORD count = rs.dwEventState >> 16;
	t_thread *t = t_spawn(remove_after, t_reader);
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, &rs, 1), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_CHANGED);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY);
	cr_assert_eq(rs.cbAtr, 0);
	cr_assert_eq(rs.dwEventState >> 16, count + 1);

	rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	t = t_spawn(insert_after, t_reader);
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, &rs, 1), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	cr_assert_eq(rs.cbAtr, calais_sim_democard()->atr_len, "the ATR comes with the insertion");
	cr_assert_eq(rs.dwEventState >> 16, count + 2);
}

Test(status_change, quick_remove_insert_seen_through_the_counter)
{
	SCARD_READERSTATE rs = rs_now(t_name);
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, calais_sim_democard()), SCARD_S_SUCCESS);
	/* Present before and after; only the counter tells. */
	assert_rv(SCardGetStatusChange(t_ctx, 2000, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_CHANGED);
	cr_assert_neq(rs.dwEventState >> 16, rs.dwCurrentState >> 16);
}

Test(status_change, inuse_and_exclusive)
{
	SCARD_READERSTATE rs = rs_now(t_name);
	cr_assert_not(rs.dwEventState & (SCARD_STATE_INUSE | SCARD_STATE_EXCLUSIVE));
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_INUSE);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	rs.dwCurrentState = rs.dwEventState & ~SCARD_STATE_CHANGED;
	h = t_connect(SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1);
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_EXCLUSIVE);
	cr_assert_not(rs.dwEventState & SCARD_STATE_INUSE);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(status_change, ignore_entries_are_left_alone)
{
	SCARD_READERSTATE rs[2] = { rs_now(t_name), { .szReader = "Nope", .dwCurrentState = SCARD_STATE_IGNORE } };
	assert_rv(SCardGetStatusChange(t_ctx, 0, rs, 2), SCARD_E_TIMEOUT);
	cr_assert_eq(rs[1].dwEventState, 0, "cleared, as pcsc-lite does");
}

static LONG add_reader_after(void *arg)
{
	t_sleep_ms(100);
	calais_sim_reader *r;
	(void)arg;
	return calais_sim_reader_add("Hotplugged", &r);
}

Test(status_change, pnp_notification)
{
	SCARD_READERSTATE pnp = { .szReader = PNP };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &pnp, 1), SCARD_E_TIMEOUT);
	DWORD count = pnp.dwEventState >> 16;
	cr_assert_geq(count, 1);
	pnp.dwCurrentState = pnp.dwEventState;
	t_thread *t = t_spawn(add_reader_after, NULL);
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, &pnp, 1), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	cr_assert(pnp.dwEventState & SCARD_STATE_CHANGED);
	cr_assert_eq(pnp.dwEventState >> 16, count + 1);
	/* A caller holding an old counter learns of the change at once. */
	pnp.dwCurrentState = count << 16;
	assert_rv(SCardGetStatusChange(t_ctx, 0, &pnp, 1), SCARD_S_SUCCESS);
	/* Case does not matter in the pseudo-reader's name. */
	SCARD_READERSTATE lower = { .szReader = "\\\\?pnp?\\notification", .dwCurrentState = pnp.dwEventState & ~SCARD_STATE_CHANGED };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &lower, 1), SCARD_E_TIMEOUT);
}

Test(status_change, first_reader_arrival_between_two_calls)
{
	calais_shutdown();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &t_ctx), SCARD_S_SUCCESS);
	SCARD_READERSTATE pnp = { .szReader = PNP };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &pnp, 1), SCARD_E_TIMEOUT);
	cr_assert_neq(pnp.dwEventState >> 16, 0, "the counter is never 0");
	pnp.dwCurrentState = pnp.dwEventState;
	t_add_reader("Late", NULL);
	assert_rv(SCardGetStatusChange(t_ctx, 0, &pnp, 1), SCARD_S_SUCCESS);
	cr_assert(pnp.dwEventState & SCARD_STATE_CHANGED);
}

static LONG unplug_after(void *arg)
{
	t_sleep_ms(100);
	return calais_sim_reader_unplug(arg);
}

Test(status_change, unplug_during_a_wait)
{
	SCARD_READERSTATE rs[2] = { rs_now(t_name), { .szReader = PNP } };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs[1], 1), SCARD_E_TIMEOUT);
	rs[1].dwCurrentState = rs[1].dwEventState;
	t_thread *t = t_spawn(unplug_after, t_reader);
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, rs, 2), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	cr_assert_eq(rs[0].dwEventState & 0xFFFF,
	             SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE | SCARD_STATE_CHANGED);
	cr_assert(rs[1].dwEventState & SCARD_STATE_CHANGED);
	/* Now the name is unknown. */
	SCARD_READERSTATE again = { .szReader = t_name };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &again, 1), SCARD_E_UNKNOWN_READER);
}

static LONG wait_forever(void *arg)
{
	SCARD_READERSTATE rs = rs_now(arg);
	return SCardGetStatusChange(t_ctx, INFINITE, &rs, 1);
}

Test(status_change, cancel_from_another_thread)
{
	t_thread *t = t_spawn(wait_forever, t_name);
	t_sleep_ms(150);
	cr_assert_not(t_done(t));
	assert_rv(SCardCancel(t_ctx), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_E_CANCELLED);
	/* The next wait is a normal one. */
	SCARD_READERSTATE rs = rs_now(t_name);
	assert_rv(SCardGetStatusChange(t_ctx, 50, &rs, 1), SCARD_E_TIMEOUT);
}

Test(status_change, release_context_wakes_its_waiter)
{
	t_thread *t = t_spawn(wait_forever, t_name);
	t_sleep_ms(150);
	cr_assert_not(t_done(t));
	assert_rv(SCardReleaseContext(t_ctx), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_E_CANCELLED);
}

Test(status_change, many_readers_one_wait)
{
	enum { N = 64 };
	SCARD_READERSTATE rs[N];
	static char names[N][MAX_READERNAME];
	calais_sim_reader *last = NULL;
	for (int i = 0; i < N; i++) {
		char base[32];
		snprintf(base, sizeof(base), "Bank %d", i);
		last = t_add_reader(base, names[i]);
		rs[i] = rs_now(names[i]);
	}
	t_thread *t = t_spawn(insert_after, last);
	assert_rv(SCardGetStatusChange(t_ctx, INFINITE, rs, N), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	for (int i = 0; i < N - 1; i++)
		cr_assert_not(rs[i].dwEventState & SCARD_STATE_CHANGED, "reader %d", i);
	cr_assert(rs[N - 1].dwEventState & SCARD_STATE_PRESENT);
}

static void setup_power(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.power_down_delay_ms = 150;
	t_setup_cfg(&cfg);
}

Test(status_change, idle_card_is_powered_down_and_up_again, .init = setup_power, .fini = t_teardown)
{
	static const uint8_t atr[] = { 0x3B, 0x00 };
	struct t_card st = { 0 };
	struct calais_sim_card c = t_card_desc(&st, atr, sizeof(atr));
	calais_sim_reader *r = t_add_reader("Power", NULL);
	char name[MAX_READERNAME];
	snprintf(name, sizeof(name), "%s", calais_sim_reader_name(r));
	assert_rv(calais_sim_card_insert(r, &c), SCARD_S_SUCCESS);
	t_wait_presence(name, true);
	cr_assert_eq(st.resets, 1, "powered at insertion to read the ATR");
	SCARDHANDLE d;
	DWORD p;
	BYTE on = 9;
	DWORD len = 1;
	assert_rv(SCardConnect(t_ctx, name, SCARD_SHARE_DIRECT, 0, &d, &p), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(d, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	t_sleep_ms(500);
	assert_rv(SCardConnect(t_ctx, name, SCARD_SHARE_DIRECT, 0, &d, &p), SCARD_S_SUCCESS);
	assert_rv(SCardGetAttrib(d, SCARD_ATTR_ICC_INTERFACE_STATUS, &on, &len), SCARD_S_SUCCESS);
	cr_assert_eq(on, 0, "idle card powered down");
	/* Still listed as present, with its ATR. */
	SCARD_READERSTATE rs = rs_now(name);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
	cr_assert_eq(rs.cbAtr, 2);
	SCARDHANDLE h;
	assert_rv(SCardConnect(t_ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &p), SCARD_S_SUCCESS);
	cr_assert_eq(st.resets, 2, "powered up on demand");
	len = 1;
	assert_rv(SCardGetAttrib(d, SCARD_ATTR_ICC_INTERFACE_STATUS, &on, &len), SCARD_S_SUCCESS);
	cr_assert_eq(on, 1);
}
