/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Connect, Reconnect, Disconnect: sharing, protocols, dispositions, and card events
 * reaching every handle. */
#include "helpers.h"

#include <string.h>

TestSuite(connect, .init = t_setup, .fini = t_teardown, .timeout = 10);

static const uint8_t atr_t0[] = { 0x3B, 0x02, 0x14, 0x50 };
/* T=0 and T=1 offered (TD1 = 80: T=0 then TD2; TD2 = 01: T=1), TCK present. */
static const uint8_t atr_t0_t1[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };

Test(connect, arguments)
{
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, NULL, &p), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, NULL), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardConnect(t_ctx, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_UNKNOWN_READER);
	assert_rv(SCardConnect(t_ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_UNKNOWN_READER);
	assert_rv(SCardConnect(t_ctx, t_name, 0, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardConnect(t_ctx, t_name, 4, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, 0, &h, &p), SCARD_E_PROTO_MISMATCH);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T15, &h, &p), SCARD_E_PROTO_MISMATCH);
}

Test(connect, shared_negotiates_the_card_protocol)
{
	SCARDHANDLE h;
	DWORD p = 0;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	cr_assert_eq(p, SCARD_PROTOCOL_T1, "the demo card is T=1 only");
	/* A later connect asking only for T=0 cannot be served. */
	SCARDHANDLE h2;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h2, &p), SCARD_E_PROTO_MISMATCH);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, t0_card)
{
	struct t_card st = { 0 };
	struct calais_sim_card c = t_card_desc(&st, atr_t0, sizeof(atr_t0));
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_PROTO_MISMATCH);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, &p), SCARD_S_SUCCESS);
	cr_assert_eq(p, SCARD_PROTOCOL_T0);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, dual_protocol_card_follows_the_preference)
{
	struct t_card st = { 0 };
	struct calais_sim_card c = t_card_desc(&st, atr_t0_t1, sizeof(atr_t0_t1));
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	SCARDHANDLE h;
	DWORD p;
	/* Only T=1 wanted: negotiated away from the default T=0. */
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	cr_assert_eq(p, SCARD_PROTOCOL_T1);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_RESET_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(p, SCARD_PROTOCOL_T0, "after a reset, both wanted: the card's default");
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, exclusive_and_shared_exclude_each_other)
{
	SCARDHANDLE h, h2;
	DWORD p;
	h = t_connect(SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h2, &p), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h2, &p), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &h2, &p), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h2, &p), SCARD_E_SHARING_VIOLATION);
	h2 = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(h2, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, no_card_and_direct)
{
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	SCARDHANDLE h;
	DWORD p = 99;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_NO_SMARTCARD);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &h, &p), SCARD_S_SUCCESS);
	cr_assert_eq(p, SCARD_PROTOCOL_UNDEFINED);
	DWORD state = 0, atr_len = 40;
	BYTE atr[40];
	assert_rv(SCardStatus(h, NULL, NULL, &state, NULL, atr, &atr_len), SCARD_S_SUCCESS);
	cr_assert_eq(state & 0xFFFF, SCARD_ABSENT);
	cr_assert_eq(atr_len, 0);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, mute_card)
{
	struct t_card st = { 0 };
	struct calais_sim_card c = t_card_desc(&st, atr_t0, sizeof(atr_t0));
	c.mute = true;
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, &p), SCARD_W_UNRESPONSIVE_CARD);
	SCARD_READERSTATE rs = { .szReader = t_name };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_MUTE);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT);
}

Test(connect, reconnect_arguments_and_sharing)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	DWORD p;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_EJECT_CARD, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardReconnect(h, 7, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, NULL), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, 0, SCARD_LEAVE_CARD, &p), SCARD_E_PROTO_MISMATCH);
	/* Alone: may become exclusive, and back. */
	assert_rv(SCardReconnect(h, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	SCARDHANDLE h2;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h2, &p), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	h2 = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardReconnect(h, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_E_SHARING_VIOLATION);
	assert_rv(SCardDisconnect(h2, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, reset_reaches_the_other_handles)
{
	static const uint8_t select[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
	uint8_t resp[16];
	DWORD len = sizeof(resp), p;
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardReconnect(a, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &p), SCARD_S_SUCCESS);
	/* a asked for it: a works; b is told, on every call, until it reconnects. */
	assert_rv(SCardTransmit(a, SCARD_PCI_T1, select, sizeof(select), NULL, resp, &len), SCARD_S_SUCCESS);
	len = sizeof(resp);
	assert_rv(SCardTransmit(b, SCARD_PCI_T1, select, sizeof(select), NULL, resp, &len), SCARD_W_RESET_CARD);
	assert_rv(SCardStatus(b, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	assert_rv(SCardBeginTransaction(b), SCARD_W_RESET_CARD);
	assert_rv(SCardReconnect(b, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	len = sizeof(resp);
	assert_rv(SCardTransmit(b, SCARD_PCI_T1, select, sizeof(select), NULL, resp, &len), SCARD_S_SUCCESS);
	/* Disconnect with RESET, and with UNPOWER, tells the remaining handle too. */
	SCARDHANDLE c = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(c, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(b, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	assert_rv(SCardReconnect(b, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(a, SCARD_UNPOWER_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(b, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	/* Reconnecting powers the card up again. */
	assert_rv(SCardReconnect(b, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	DWORD state;
	assert_rv(SCardStatus(b, NULL, NULL, &state, NULL, NULL, NULL), SCARD_S_SUCCESS);
	cr_assert(state & SCARD_POWERED);
	assert_rv(SCardDisconnect(b, SCARD_EJECT_CARD), SCARD_S_SUCCESS);
}

Test(connect, reset_and_unpower_really_reset_the_card)
{
	struct t_card st = { 0 };
	struct calais_sim_card c = t_card_desc(&st, atr_t0, sizeof(atr_t0));
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0);
	unsigned before = st.resets;
	DWORD p;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_RESET_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(st.resets, before + 1);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_UNPOWER_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(st.resets, before + 2);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	cr_assert_eq(st.resets, before + 2, "LEAVE does not touch the card");
	assert_rv(SCardDisconnect(h, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	cr_assert_eq(st.resets, before + 3);
}

Test(connect, removal_reaches_every_handle_until_reconnect)
{
	SCARDHANDLE a = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE b = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_REMOVED_CARD);
	assert_rv(SCardBeginTransaction(b), SCARD_W_REMOVED_CARD);
	/* A new card does not clear the event: it is another card. */
	assert_rv(calais_sim_card_insert(t_reader, calais_sim_democard()), SCARD_S_SUCCESS);
	t_wait_presence(t_name, true);
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_REMOVED_CARD);
	DWORD p;
	assert_rv(SCardReconnect(a, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(a, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(b, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_REMOVED_CARD);
	/* Reconnect without a card says so. */
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(SCardReconnect(b, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_E_NO_SMARTCARD);
	assert_rv(SCardDisconnect(a, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(b, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(connect, disconnect_arguments_and_unplugged_reader)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(h, 4), SCARD_E_INVALID_VALUE);
	assert_rv(calais_sim_reader_unplug(t_reader), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_READER_UNAVAILABLE);
	DWORD p;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_E_READER_UNAVAILABLE);
	/* As on pcsc-lite and Windows 10: disconnecting from a vanished reader succeeds. */
	assert_rv(SCardDisconnect(h, SCARD_RESET_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_E_INVALID_HANDLE);
}

Test(connect, forged_handles_are_rejected_everywhere)
{
	SCARDHANDLE real = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	SCARDHANDLE forged[] = { 0, 1, real ^ 0x5A5A, (SCARDHANDLE)0x7FFFFFFFFFll, -1 };
	static const uint8_t apdu[] = { 0x00, 0xA4, 0x00, 0x0C };
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		SCARDHANDLE h = forged[i];
		if (h == real)
			continue;
		uint8_t buf[64];
		DWORD len = sizeof(buf), p;
		assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardBeginTransaction(h), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardTransmit(h, SCARD_PCI_T1, apdu, sizeof(apdu), NULL, buf, &len), SCARD_E_INVALID_HANDLE);
		len = sizeof(buf);
		assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, buf, sizeof(buf), &len), SCARD_E_INVALID_HANDLE);
		len = sizeof(buf);
		assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, buf, &len), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardSetAttrib(h, SCARD_ATTR_ATR_STRING, buf, 1), SCARD_E_INVALID_HANDLE);
	}
	assert_rv(SCardDisconnect(real, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(real, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_INVALID_HANDLE);
}
