/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Transactions: recursive per handle, other handles blocked until the release (woken by
 * the release itself), released on Disconnect, ReleaseContext and removal, dispositions,
 * and the optional idle-transaction timeout. */
#include "helpers.h"

TestSuite(transaction, .init = t_setup, .fini = t_teardown, .timeout = 10);

static const uint8_t select_mf[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00 };

Test(transaction, recursive_per_handle)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	assert_rv(SCardBeginTransaction(h), SCARD_S_SUCCESS);
	assert_rv(SCardBeginTransaction(h), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	assert_rv(SCardEndTransaction(h, 9), SCARD_E_INVALID_VALUE);
}

static LONG begin_then_end(void *arg)
{
	SCARDHANDLE h = *(SCARDHANDLE *)arg;
	LONG rv = SCardBeginTransaction(h);
	if (rv == SCARD_S_SUCCESS)
		rv = SCardEndTransaction(h, SCARD_LEAVE_CARD);
	return rv;
}

static LONG transmit_select(void *arg)
{
	uint8_t resp[8];
	DWORD len = sizeof(resp);
	return SCardTransmit(*(SCARDHANDLE *)arg, SCARD_PCI_T1, select_mf, sizeof(select_mf), NULL, resp, &len);
}

static LONG status_only(void *arg)
{
	return SCardStatus(*(SCARDHANDLE *)arg, NULL, NULL, NULL, NULL, NULL, NULL);
}

/* fn on `other` must stay blocked while `owner` holds the lock, and finish with `want`
 * once it is released by `release`. */
static void check_blocked(SCARDHANDLE owner, SCARDHANDLE *other, LONG (*fn)(void *),
                          void (*release)(SCARDHANDLE), LONG want)
{
	assert_rv(SCardBeginTransaction(owner), SCARD_S_SUCCESS);
	t_thread *t = t_spawn(fn, other);
	t_sleep_ms(200);
	cr_assert_not(t_done(t), "the other handle must wait for the transaction");
	release(owner);
	assert_rv(t_join(t), want);
}

static void end_leave(SCARDHANDLE h)
{
	assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

static void disconnect_leave(SCARDHANDLE h)
{
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

static void remove_card(SCARDHANDLE h)
{
	(void)h;
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
}

Test(transaction, begin_transmit_status_block_until_end)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	check_blocked(a, &b, begin_then_end, end_leave, SCARD_S_SUCCESS);
	check_blocked(a, &b, transmit_select, end_leave, SCARD_S_SUCCESS);
	check_blocked(a, &b, status_only, end_leave, SCARD_S_SUCCESS);
}

static LONG reconnect_leave(void *arg)
{
	DWORD p;
	return SCardReconnect(*(SCARDHANDLE *)arg, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                      SCARD_LEAVE_CARD, &p);
}

static LONG disconnect_reset(void *arg)
{
	return SCardDisconnect(*(SCARDHANDLE *)arg, SCARD_RESET_CARD);
}

/* pcsc-lite's client retries Reconnect as it does Transmit and Status; pcscd waits for
 * the transaction before a Disconnect that resets the card. */
Test(transaction, reconnect_and_resetting_disconnect_block_until_end)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	check_blocked(a, &b, reconnect_leave, end_leave, SCARD_S_SUCCESS);
	check_blocked(a, &b, disconnect_reset, end_leave, SCARD_S_SUCCESS);
}

static LONG control_features(void *arg)
{
	BYTE out[64];
	DWORD ret;
	return SCardControl(*(SCARDHANDLE *)arg, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out,
	                    sizeof(out), &ret);
}

static LONG get_attrib_name(void *arg)
{
	BYTE out[MAX_BUFFER_SIZE];
	DWORD len = sizeof(out);
	return SCardGetAttrib(*(SCARDHANDLE *)arg, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, out, &len);
}

static LONG set_attrib_any(void *arg)
{
	const BYTE v = 1;
	return SCardSetAttrib(*(SCARDHANDLE *)arg, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, &v, 1);
}

static LONG disconnect_leave_fn(void *arg)
{
	return SCardDisconnect(*(SCARDHANDLE *)arg, SCARD_LEAVE_CARD);
}

/* fn on `other` returns `want` at once while `owner` holds a transaction. */
static void check_not_blocked(SCARDHANDLE owner, SCARDHANDLE *other, LONG (*fn)(void *),
                              LONG want)
{
	assert_rv(SCardBeginTransaction(owner), SCARD_S_SUCCESS);
	t_thread *t = t_spawn(fn, other);
	for (int i = 0; i < 100 && !t_done(t); i++)
		t_sleep_ms(10);
	cr_assert(t_done(t), "the other handle must not wait for the transaction");
	assert_rv(t_join(t), want);
	assert_rv(SCardEndTransaction(owner, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

/* pcsc-lite's SCardBlockingBehaviourTest table (Windows 7: GetAttrib does not block) and
 * its client: Control, GetAttrib and SetAttrib are not retried, so they answer
 * SCARD_E_SHARING_VIOLATION at once; so do EndTransaction and a Disconnect that leaves
 * the card (which succeeds). */
Test(transaction, control_attributes_end_and_leaving_disconnect_do_not_block)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	check_not_blocked(a, &b, control_features, SCARD_E_SHARING_VIOLATION);
	check_not_blocked(a, &b, get_attrib_name, SCARD_E_SHARING_VIOLATION);
	check_not_blocked(a, &b, set_attrib_any, SCARD_E_SHARING_VIOLATION);
	check_not_blocked(a, &b, disconnect_leave_fn, SCARD_S_SUCCESS);
	/* Without a transaction the same calls work. */
	b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(control_features(&b), SCARD_S_SUCCESS);
	assert_rv(get_attrib_name(&b), SCARD_S_SUCCESS);
	/* The lock is reported before a pending reset, as pcscd checks it first. */
	DWORD p;
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(a, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardReconnect(a, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p),
	          SCARD_S_SUCCESS);
	check_not_blocked(a, &b, get_attrib_name, SCARD_E_SHARING_VIOLATION);
	assert_rv(get_attrib_name(&b), SCARD_W_RESET_CARD);
}

Test(transaction, released_by_disconnect)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	check_blocked(a, &b, begin_then_end, disconnect_leave, SCARD_S_SUCCESS);
}

Test(transaction, released_by_card_removal)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	check_blocked(a, &b, begin_then_end, remove_card, SCARD_W_REMOVED_CARD);
	assert_rv(SCardEndTransaction(a, SCARD_LEAVE_CARD), SCARD_W_REMOVED_CARD);
}

Test(transaction, released_by_release_context)
{
	SCARDCONTEXT c;
	SCARDHANDLE a, b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	DWORD p;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	assert_rv(SCardConnect(c, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &a, &p), SCARD_S_SUCCESS);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	t_thread *t = t_spawn(begin_then_end, &b);
	t_sleep_ms(200);
	cr_assert_not(t_done(t));
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	/* The context's open transaction ended with a reset. */
	assert_rv(t_join(t), SCARD_W_RESET_CARD);
}

Test(transaction, end_by_non_owner)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(b, SCARD_LEAVE_CARD), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardEndTransaction(a, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(transaction, end_with_reset_tells_every_handle)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(a, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	/* pcsc-lite: the caller is told of its own reset too. */
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	assert_rv(SCardStatus(b, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	assert_rv(SCardBeginTransaction(b), SCARD_W_RESET_CARD);
}

Test(transaction, cancel_wakes_a_blocked_begin)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	t_thread *t = t_spawn(begin_then_end, &b);
	t_sleep_ms(100);
	cr_assert_not(t_done(t));
	assert_rv(SCardCancel(t_ctx), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_E_CANCELLED);
	assert_rv(SCardEndTransaction(a, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(transaction, connect_does_not_block_on_a_transaction)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	/* Deliberate difference from pcsc-lite (PCSC#254): connecting is not using the card. */
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(b, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(a, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

static void setup_timeout(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.transaction_timeout_ms = 300;
	t_setup_cfg(&cfg);
}

Test(transaction, idle_timeout_ends_it_with_a_reset, .init = setup_timeout, .fini = t_teardown, .timeout = 10)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(a), SCARD_S_SUCCESS);
	/* b waits; the owner stays idle; the timeout frees b. */
	assert_rv(SCardBeginTransaction(b), SCARD_W_RESET_CARD);
	DWORD p;
	assert_rv(SCardReconnect(b, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	assert_rv(SCardBeginTransaction(b), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(b, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
}
