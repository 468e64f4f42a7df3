/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What each PC/SC call writes, on success and on failure, held to pcsc-lite's client
 * library (winscard_clnt.c) rule by rule: outputs set before the checks that can fail,
 * the lengths reported with SCARD_E_INSUFFICIENT_BUFFER, the order in which arguments
 * and handles are checked, SCARD_AUTOALLOCATE, the 264-byte attribute limit, and
 * integer attributes as 4 little-endian bytes. The README's table of differences lists
 * the rules Calais keeps apart on purpose; they are tested here as Calais' own. */
#include "helpers.h"

#include <string.h>

TestSuite(outputs, .init = t_setup, .fini = t_teardown, .timeout = 10);

#define JUNK 0xA5A5A5A5u

static const uint8_t sel_hello[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
static const uint8_t atr_t1[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };

/* ---- SCardStatus ---------------------------------------------------------------------- */

Test(outputs, status_sets_every_output_when_the_handle_is_invalid)
{
	char name[64];
	BYTE atr[MAX_ATR_SIZE];
	DWORD name_len = sizeof(name), state = JUNK, proto = JUNK, atr_len = sizeof(atr);
	assert_rv(SCardStatus(0x1234, name, &name_len, &state, &proto, atr, &atr_len),
	          SCARD_E_INVALID_HANDLE);
	cr_assert(state == 0 && proto == 0 && name_len == 0 && atr_len == 0,
	          "state %lx proto %lx lengths %lu %lu", (unsigned long)state, (unsigned long)proto,
	          (unsigned long)name_len, (unsigned long)atr_len);
}

Test(outputs, status_after_removal_reports_zeros_not_garbage)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	char name[64];
	BYTE atr[MAX_ATR_SIZE];
	memset(atr, 0x5A, sizeof(atr));
	DWORD name_len = sizeof(name), state = JUNK, proto = JUNK, atr_len = sizeof(atr);
	assert_rv(SCardStatus(h, name, &name_len, &state, &proto, atr, &atr_len), SCARD_W_REMOVED_CARD);
	cr_assert(state == 0 && proto == 0 && name_len == 0 && atr_len == 0,
	          "state %lx proto %lx lengths %lu %lu", (unsigned long)state, (unsigned long)proto,
	          (unsigned long)name_len, (unsigned long)atr_len);
	cr_assert_eq(atr[0], 0x5A, "no ATR bytes written on failure");
}

Test(outputs, status_short_name_buffer_gets_a_prefix_and_both_lengths)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	char small[4];
	BYTE atr[MAX_ATR_SIZE];
	DWORD name_len = sizeof(small), atr_len = sizeof(atr), state = 0, proto = 0;
	assert_rv(SCardStatus(h, small, &name_len, &state, &proto, atr, &atr_len),
	          SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(name_len, strlen(t_name) + 1);
	cr_assert_eq(memcmp(small, t_name, sizeof(small)), 0, "the first bytes of the name");
	const struct calais_sim_card *demo = calais_sim_democard();
	cr_assert_eq(atr_len, demo->atr_len);
	cr_assert_arr_eq(atr, demo->atr, atr_len, "the ATR is still stored");
	cr_assert_eq(proto, SCARD_PROTOCOL_T1);
	cr_assert_eq(state & 0xFFFF, SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE, "as pcscd: never SCARD_SPECIFIC");
	/* A short ATR buffer: its first bytes, and the needed length. */
	BYTE atr2[3];
	char name[MAX_READERNAME + 8];
	name_len = sizeof(name);
	atr_len = sizeof(atr2);
	assert_rv(SCardStatus(h, name, &name_len, NULL, NULL, atr2, &atr_len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_str_eq(name, t_name);
	cr_assert_eq(atr_len, demo->atr_len);
	cr_assert_arr_eq(atr2, demo->atr, sizeof(atr2));
}

Test(outputs, status_buffer_without_its_length_is_too_small)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	char name[64];
	BYTE atr[MAX_ATR_SIZE];
	assert_rv(SCardStatus(h, name, NULL, NULL, NULL, NULL, NULL), SCARD_E_INSUFFICIENT_BUFFER);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, atr, NULL), SCARD_E_INSUFFICIENT_BUFFER);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_S_SUCCESS);
}

Test(outputs, status_autoallocate_without_a_pointer)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE *patr = NULL;
	DWORD name_len = SCARD_AUTOALLOCATE, atr_len = SCARD_AUTOALLOCATE, state = 0;
	assert_rv(SCardStatus(h, NULL, &name_len, &state, NULL, (LPBYTE)&patr, &atr_len),
	          SCARD_E_INVALID_PARAMETER);
	cr_assert_eq(name_len, strlen(t_name) + 1, "the needed length is reported");
	cr_assert_eq(atr_len, calais_sim_democard()->atr_len);
	cr_assert_null(patr, "nothing allocated once the name failed");
	cr_assert_neq(state, 0, "the state is known");
}

Test(outputs, status_protocol_is_the_cards_for_a_direct_handle)
{
	SCARDHANDLE d, h;
	DWORD p = JUNK, proto = JUNK;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &d, &p), SCARD_S_SUCCESS);
	h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardStatus(d, NULL, NULL, NULL, &proto, NULL, NULL), SCARD_S_SUCCESS);
	cr_assert_eq(proto, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(d, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

/* ---- attributes ----------------------------------------------------------------------- */

Test(outputs, integer_attributes_are_4_bytes_little_endian)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	static const struct {
		DWORD id;
		uint32_t want;
	} ints[] = {
		{ SCARD_ATTR_VENDOR_IFD_VERSION, 0x00010000u },
		{ SCARD_ATTR_CHANNEL_ID, 0 },
		{ SCARD_ATTR_MAXINPUT, MAX_BUFFER_SIZE_EXTENDED },
		{ SCARD_ATTR_CURRENT_PROTOCOL_TYPE, SCARD_PROTOCOL_T1 },
		{ SCARD_ATTR_DEVICE_UNIT, 0 },
	};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		uint8_t v[16];
		memset(v, 0xEE, sizeof(v));
		DWORD len = sizeof(v);
		assert_rv(SCardGetAttrib(h, ints[i].id, v, &len), SCARD_S_SUCCESS);
		cr_assert_eq(len, 4, "attribute 0x%lx: %lu bytes", (unsigned long)ints[i].id,
		             (unsigned long)len);
		cr_assert_eq(v[4], 0xEE, "attribute 0x%lx: nothing past the 4 bytes",
		             (unsigned long)ints[i].id);
		uint32_t got = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 |
		               (uint32_t)v[3] << 24;
		if (ints[i].id == SCARD_ATTR_CHANNEL_ID)
			cr_assert_eq(got >> 16, 0x00F0u);
		else
			cr_assert_eq(got, ints[i].want, "attribute 0x%lx: 0x%x", (unsigned long)ints[i].id,
			             got);
		/* Exactly 4 bytes is enough; 3 is not. */
		len = 4;
		assert_rv(SCardGetAttrib(h, ints[i].id, v, &len), SCARD_S_SUCCESS);
		len = 3;
		assert_rv(SCardGetAttrib(h, ints[i].id, v, &len), SCARD_E_INSUFFICIENT_BUFFER);
		cr_assert_eq(len, 4);
	}
}

Test(outputs, attribute_lengths_on_failure)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	/* A size query starts from MAX_BUFFER_SIZE, which a failure leaves. */
	DWORD len = 7;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAX_IFSD, NULL, &len), SCARD_E_UNSUPPORTED_FEATURE);
	cr_assert_eq(len, MAX_BUFFER_SIZE);
	len = 7;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, NULL, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, calais_sim_democard()->atr_len);
	/* SCARD_AUTOALLOCATE that fails: NULL stored (nothing to free), MAX_BUFFER_SIZE. */
	BYTE *p = (BYTE *)&len;
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAX_IFSD, (LPBYTE)&p, &len), SCARD_E_UNSUPPORTED_FEATURE);
	cr_assert_null(p);
	cr_assert_eq(len, MAX_BUFFER_SIZE);
	/* A caller's buffer keeps its length on failure. */
	BYTE buf[32];
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAX_IFSD, buf, &len), SCARD_E_UNSUPPORTED_FEATURE);
	cr_assert_eq(len, sizeof(buf));
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(0x777, SCARD_ATTR_ATR_STRING, buf, &len), SCARD_E_INVALID_HANDLE);
	cr_assert_eq(len, sizeof(buf));
}

Test(outputs, attribute_short_buffer_gets_a_prefix)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	char small[5];
	DWORD len = sizeof(small);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, (LPBYTE)small, &len),
	          SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, strlen(t_name) + 1);
	cr_assert_eq(memcmp(small, t_name, sizeof(small)), 0);
}

Test(outputs, attribute_buffer_larger_than_max_buffer_size_is_used)
{
	/* A documented difference: pcsc-lite refuses it (SCARD_E_INSUFFICIENT_BUFFER). */
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE big[MAX_BUFFER_SIZE + 100];
	DWORD len = sizeof(big);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, big, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, calais_sim_democard()->atr_len);
}

Test(outputs, set_attrib_limits_and_order)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE v[MAX_BUFFER_SIZE + 1] = { 1 };
	assert_rv(SCardSetAttrib(h, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, v, sizeof(v)),
	          SCARD_E_INSUFFICIENT_BUFFER);
	assert_rv(SCardSetAttrib(0x777, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, v, sizeof(v)),
	          SCARD_E_INVALID_HANDLE);
	assert_rv(SCardSetAttrib(h, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, v, MAX_BUFFER_SIZE),
	          SCARD_E_UNSUPPORTED_FEATURE);
}

/* ---- SCardTransmit -------------------------------------------------------------------- */

Test(outputs, transmit_length_is_zero_on_failure)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	uint8_t resp[64];
	SCARD_IO_REQUEST recv = { .dwProtocol = JUNK, .cbPciLength = JUNK };
	DWORD len = sizeof(resp);
	assert_rv(SCardTransmit(0x777, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), &recv, resp, &len),
	          SCARD_E_INVALID_HANDLE);
	cr_assert_eq(len, 0);
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T0, sel_hello, sizeof(sel_hello), &recv, resp, &len),
	          SCARD_E_PROTO_MISMATCH);
	cr_assert_eq(len, 0);
	cr_assert(recv.dwProtocol == JUNK && recv.cbPciLength == JUNK, "pioRecvPci: success only");
	/* Reset by another handle: reported, and the length is 0. */
	SCARDHANDLE other = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	DWORD p;
	assert_rv(SCardReconnect(other, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &p),
	          SCARD_S_SUCCESS);
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), &recv, resp, &len),
	          SCARD_W_RESET_CARD);
	cr_assert_eq(len, 0);
	/* Checked after the handle, and the length is left alone. */
	len = sizeof(resp);
	assert_rv(SCardTransmit(other, SCARD_PCI_T1, sel_hello, MAX_BUFFER_SIZE_EXTENDED + 1, NULL,
	                        resp, &len),
	          SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, sizeof(resp));
	len = sizeof(resp);
	assert_rv(SCardTransmit(0x777, SCARD_PCI_T1, sel_hello, MAX_BUFFER_SIZE_EXTENDED + 1, NULL,
	                        resp, &len),
	          SCARD_E_INVALID_HANDLE);
	/* Success: pioRecvPci gets the protocol (a documented difference: pcsc-lite copies
	 * back what its driver left there). */
	len = sizeof(resp);
	assert_rv(SCardTransmit(other, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), &recv, resp, &len),
	          SCARD_S_SUCCESS);
	cr_assert(recv.dwProtocol == SCARD_PROTOCOL_T1 && recv.cbPciLength == sizeof(SCARD_IO_REQUEST));
}

Test(outputs, transmit_buffer_under_two_bytes_runs_the_command_and_reports_the_length)
{
	struct t_card st = { .reply_len = 3 };
	struct calais_sim_card c = t_card_desc(&st, atr_t1, sizeof(atr_t1));
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	t_wait_presence(t_name, true);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	uint8_t resp[8] = { 0x77 };
	for (DWORD cap = 0; cap < 2; cap++) {
		DWORD len = cap;
		unsigned before = st.apdus;
		assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, resp, &len),
		          SCARD_E_INSUFFICIENT_BUFFER);
		cr_assert_eq(len, 5, "the needed length (3 bytes and the SW)");
		cr_assert_eq(st.apdus, before + 1, "the command reached the card, as with pcscd");
		cr_assert_eq(resp[0], 0x77, "nothing written into a buffer too small");
	}
}

/* ---- SCardControl --------------------------------------------------------------------- */

Test(outputs, control_bytes_returned)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE out[64];
	DWORD ret = JUNK;
	assert_rv(SCardControl(0x777, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), &ret),
	          SCARD_E_INVALID_HANDLE);
	cr_assert_eq(ret, 0, "0 before the handle is checked");
	/* No count wanted: allowed, as in pcsc-lite. */
	assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), NULL),
	          SCARD_S_SUCCESS);
	ret = JUNK;
	assert_rv(SCardControl(h, SCARD_CTL_CODE(3500), NULL, MAX_BUFFER_SIZE_EXTENDED + 1, out,
	                       sizeof(out), &ret),
	          SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(ret, 0);
}

/* ---- connecting and handles ------------------------------------------------------------ */

Test(outputs, connect_outputs_and_order_of_checks)
{
	SCARDHANDLE h = JUNK;
	DWORD p = JUNK;
	assert_rv(SCardConnect(0x777, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p),
	          SCARD_E_INVALID_HANDLE);
	cr_assert(h == 0 && p == JUNK, "the handle is 0, the protocol untouched before the context");
	h = JUNK;
	assert_rv(SCardConnect(0x777, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p),
	          SCARD_E_UNKNOWN_READER);
	cr_assert_eq(h, 0);
	char longname[MAX_READERNAME + 2];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_rv(SCardConnect(t_ctx, longname, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p),
	          SCARD_E_INVALID_VALUE);
	assert_rv(SCardConnect(t_ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1,
	                       &h, &p),
	          SCARD_E_UNKNOWN_READER);
	cr_assert_eq(p, SCARD_PROTOCOL_UNDEFINED, "the protocol is 0 once the context is known");
	/* The protocols are checked before the share mode. */
	assert_rv(SCardConnect(t_ctx, t_name, 42, 0, &h, &p), SCARD_E_PROTO_MISMATCH);
	assert_rv(SCardConnect(t_ctx, t_name, 42, SCARD_PROTOCOL_T1, &h, &p), SCARD_E_INVALID_VALUE);
}

Test(outputs, handle_is_checked_before_the_other_arguments)
{
	DWORD p = JUNK;
	assert_rv(SCardReconnect(0x777, 42, 0, 42, &p), SCARD_E_INVALID_HANDLE);
	cr_assert_eq(p, JUNK);
	assert_rv(SCardDisconnect(0x777, 42), SCARD_E_INVALID_HANDLE);
	assert_rv(SCardEndTransaction(0x777, 42), SCARD_E_INVALID_HANDLE);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	/* Reconnect: the disposition, then the share mode, then the protocols. */
	assert_rv(SCardReconnect(h, 42, 0, 42, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardReconnect(h, 42, 0, SCARD_LEAVE_CARD, &p), SCARD_E_INVALID_VALUE);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, 0, SCARD_LEAVE_CARD, &p), SCARD_E_PROTO_MISMATCH);
	cr_assert_eq(p, JUNK, "the protocol is written on success only");
	assert_rv(SCardDisconnect(h, 42), SCARD_E_INVALID_VALUE);
	assert_rv(SCardEndTransaction(h, 42), SCARD_E_INVALID_VALUE);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

/* ---- lists ------------------------------------------------------------------------------ */

Test(outputs, list_lengths_on_every_path)
{
	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_E_INVALID_PARAMETER);
	cr_assert_eq(len, strlen(t_name) + 2, "the needed length, as pcsc-lite writes it");
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaderGroups(t_ctx, NULL, &len), SCARD_E_INVALID_PARAMETER);
	cr_assert_eq(len, sizeof("SCard$DefaultReaders\0"), "the 22-byte multi-string");
	assert_rv(SCardListReaderGroups(0x777, NULL, NULL), SCARD_E_INVALID_HANDLE);
	assert_rv(SCardListReaderGroups(t_ctx, NULL, NULL), SCARD_E_INVALID_PARAMETER);
	len = JUNK;
	assert_rv(SCardListReaders(0x777, NULL, (LPSTR)&list, &len), SCARD_E_INVALID_HANDLE);
	cr_assert_eq(len, JUNK, "untouched before the context is known");
	len = 5;
	assert_rv(SCardListReaders(t_ctx, "Kiosk$Nothing\0", NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
	cr_assert_eq(len, 1);
	assert_rv(calais_sim_reader_unplug(t_reader), SCARD_S_SUCCESS);
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, (LPSTR)&list, &len), SCARD_E_NO_READERS_AVAILABLE);
	cr_assert_eq(len, 1, "the empty multi-string's length");
	cr_assert_null(list);
}

/* ---- SCardGetStatusChange --------------------------------------------------------------- */

Test(outputs, status_change_checks_the_array_before_the_context)
{
	assert_rv(SCardGetStatusChange(0x777, 0, NULL, 0), SCARD_S_SUCCESS);
	SCARD_READERSTATE rs = { .szReader = NULL };
	assert_rv(SCardGetStatusChange(0x777, 0, &rs, 1), SCARD_E_INVALID_VALUE);
	rs.szReader = t_name;
	rs.dwCurrentState = SCARD_STATE_IGNORE;
	rs.dwEventState = JUNK;
	assert_rv(SCardGetStatusChange(0x777, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert_eq(rs.dwEventState, JUNK, "all ignored: nothing written");
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	assert_rv(SCardGetStatusChange(0x777, 0, &rs, 1), SCARD_E_INVALID_HANDLE);
}

Test(outputs, status_change_unknown_reader_writes_nothing)
{
	SCARD_READERSTATE rs[2] = {
		{ .szReader = t_name, .dwEventState = JUNK, .cbAtr = JUNK },
		{ .szReader = "Nope 00 00", .dwEventState = JUNK },
	};
	assert_rv(SCardGetStatusChange(t_ctx, 0, rs, 2), SCARD_E_UNKNOWN_READER);
	cr_assert(rs[0].dwEventState == JUNK && rs[0].cbAtr == JUNK && rs[1].dwEventState == JUNK);
}

Test(outputs, status_change_ignored_entry_is_cleared)
{
	SCARD_READERSTATE rs[2] = {
		{ .szReader = t_name },
		{ .szReader = t_name, .dwCurrentState = SCARD_STATE_IGNORE, .dwEventState = JUNK,
		  .cbAtr = 7 },
	};
	assert_rv(SCardGetStatusChange(t_ctx, 0, rs, 2), SCARD_S_SUCCESS);
	cr_assert_eq(rs[1].dwEventState, 0, "pcsc-lite clears an ignored entry's event state");
	cr_assert_eq(rs[1].cbAtr, 7, "and leaves the rest");
	cr_assert(rs[0].dwEventState & SCARD_STATE_PRESENT);
}
