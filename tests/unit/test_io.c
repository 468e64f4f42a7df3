/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Status, Transmit, Control and attributes: buffers, protocols, and the values the core
 * answers itself. */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

TestSuite(io, .init = t_setup, .fini = t_teardown, .timeout = 10);

static const uint8_t sel_hello[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x00, 0x01 };
static const uint8_t sel_df[] = { 0x00, 0xA4, 0x04, 0x0C, 0x08, 0xA0, 0x00, 0x00, 0x06, 0x47, 0x43, 0x41, 0x4C };
static const uint8_t sel_big[] = { 0x00, 0xA4, 0x00, 0x0C, 0x02, 0x50, 0x01 };
static const uint8_t read_all[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };

Test(io, status_reports_everything)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	char name[MAX_READERNAME];
	BYTE atr[MAX_ATR_SIZE];
	DWORD name_len = sizeof(name), state = 0, proto = 0, atr_len = sizeof(atr);
	assert_rv(SCardStatus(h, name, &name_len, &state, &proto, atr, &atr_len), SCARD_S_SUCCESS);
	cr_assert_str_eq(name, t_name);
	cr_assert_eq(name_len, strlen(t_name) + 1);
	cr_assert_eq(state & 0xFFFF, SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE, "as pcscd: never SCARD_SPECIFIC");
	cr_assert_geq(state >> 16, 1, "card event counter in the upper 16 bits");
	cr_assert_eq(proto, SCARD_PROTOCOL_T1);
	const struct calais_sim_card *demo = calais_sim_democard();
	cr_assert_eq(atr_len, demo->atr_len);
	cr_assert_arr_eq(atr, demo->atr, atr_len);
	cr_assert_eq(atr[0], 0x3B);
}

Test(io, status_buffers)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	char small[4];
	BYTE atr[4];
	DWORD name_len = sizeof(small), atr_len = sizeof(atr);
	assert_rv(SCardStatus(h, small, &name_len, NULL, NULL, atr, &atr_len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(name_len, strlen(t_name) + 1);
	cr_assert_eq(atr_len, calais_sim_democard()->atr_len);
	/* NULL buffers are size queries; NULL lengths are skipped. */
	name_len = 0, atr_len = 0;
	assert_rv(SCardStatus(h, NULL, &name_len, NULL, NULL, NULL, &atr_len), SCARD_S_SUCCESS);
	cr_assert_eq(name_len, strlen(t_name) + 1);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_S_SUCCESS);
	char *pname = NULL;
	BYTE *patr = NULL;
	name_len = atr_len = SCARD_AUTOALLOCATE;
	assert_rv(SCardStatus(h, (LPSTR)&pname, &name_len, NULL, NULL, (LPBYTE)&patr, &atr_len), SCARD_S_SUCCESS);
	cr_assert_str_eq(pname, t_name);
	cr_assert_eq(atr_len, calais_sim_democard()->atr_len);
	cr_assert_arr_eq(patr, calais_sim_democard()->atr, atr_len);
	assert_rv(SCardFreeMemory(t_ctx, pname), SCARD_S_SUCCESS);
	assert_rv(SCardFreeMemory(t_ctx, patr), SCARD_S_SUCCESS);
}

Test(io, transmit_reads_files)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	uint8_t resp[300];
	DWORD len = sizeof(resp);
	SCARD_IO_REQUEST recv = { 0, 0 };
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), &recv, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 2);
	cr_assert_eq(resp[0], 0x90);
	cr_assert_eq(recv.dwProtocol, SCARD_PROTOCOL_T1);
	cr_assert_eq(recv.cbPciLength, sizeof(SCARD_IO_REQUEST));
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, read_all, sizeof(read_all), NULL, resp, &len), SCARD_S_SUCCESS);
	const char *hello = "Hello from the Calais demo card!\n";
	cr_assert_eq(len, strlen(hello) + 2);
	cr_assert_arr_eq(resp, hello, strlen(hello));
	cr_assert_eq(resp[len - 2], 0x62, "shorter than Le: 62 82");
	/* 256 bytes of EF 5001 inside the DF selected by AID. */
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_df, sizeof(sel_df), NULL, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(resp[0], 0x90);
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_big, sizeof(sel_big), NULL, resp, &len), SCARD_S_SUCCESS);
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, read_all, sizeof(read_all), NULL, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 258);
	for (int i = 0; i < 256; i++)
		cr_assert_eq(resp[i], i);
	cr_assert_eq(resp[256], 0x90);
	cr_assert_eq(resp[257], 0x00);
}

Test(io, transmit_errors)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	uint8_t resp[300];
	DWORD len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T0, sel_hello, sizeof(sel_hello), NULL, resp, &len), SCARD_E_PROTO_MISMATCH);
	assert_rv(SCardTransmit(h, NULL, sel_hello, sizeof(sel_hello), NULL, resp, &len), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, NULL, 7, NULL, resp, &len), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, 0, NULL, resp, &len), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, NULL, &len), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, resp, NULL), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, MAX_BUFFER_SIZE_EXTENDED + 1, NULL, resp, &len), SCARD_E_INSUFFICIENT_BUFFER);
	len = 1;
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, resp, &len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, 2, "the command ran: its answer's length");
	/* A response longer than the buffer. */
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, resp, &len), SCARD_S_SUCCESS);
	len = 10;
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, read_all, sizeof(read_all), NULL, resp, &len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, 35, "the needed size");
	/* Card-level errors are status words, not PC/SC errors. */
	static const uint8_t bad_ins[] = { 0x00, 0xEE, 0x00, 0x00 };
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, bad_ins, sizeof(bad_ins), NULL, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 2);
	cr_assert_eq(resp[0], 0x6D);
	/* RAW passes through. */
	len = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_RAW, bad_ins, sizeof(bad_ins), NULL, resp, &len), SCARD_S_SUCCESS);
}

static LONG slow_card(void *user, const uint8_t *apdu, size_t n, uint8_t *resp, size_t *len)
{
	(void)user, (void)apdu, (void)n;
	resp[0] = 0x90, resp[1] = 0x00, *len = 2;
	return SCARD_S_SUCCESS;
}

static LONG remove_later(void *arg)
{
	t_sleep_ms(150);
	return calais_sim_card_remove(arg);
}

Test(io, removal_during_a_slow_exchange)
{
	static const uint8_t atr[] = { 0x3B, 0x00 };
	struct calais_sim_card c = { .atr = atr, .atr_len = 2, .apdu = slow_card, .latency_us = 5000000 };
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_insert(t_reader, &c), SCARD_S_SUCCESS);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0);
	t_thread *t = t_spawn(remove_later, t_reader);
	uint8_t resp[8];
	DWORD len = sizeof(resp);
	static const uint8_t apdu[] = { 0x00, 0x84, 0x00, 0x00, 0x08 };
	assert_rv(SCardTransmit(h, SCARD_PCI_T0, apdu, sizeof(apdu), NULL, resp, &len), SCARD_W_REMOVED_CARD);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_REMOVED_CARD);
}

Test(io, transmit_without_card_or_protocol)
{
	SCARDHANDLE d;
	DWORD p;
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &d, &p), SCARD_S_SUCCESS);
	uint8_t resp[8];
	DWORD len = sizeof(resp);
	assert_rv(SCardTransmit(d, SCARD_PCI_T1, sel_hello, sizeof(sel_hello), NULL, resp, &len), SCARD_E_NO_SMARTCARD);
}

Test(io, control_feature_request_and_unknown_codes)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE out[64];
	DWORD ret = 99;
	/* The simulated reader declares no part 10 feature. */
	assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), &ret), SCARD_S_SUCCESS);
	cr_assert_eq(ret, 0);
	assert_rv(SCardControl(h, SCARD_CTL_CODE(1), NULL, 0, out, sizeof(out), &ret), SCARD_E_UNSUPPORTED_FEATURE);
	assert_rv(SCardControl(h, SCARD_CTL_CODE(1), NULL, 4, out, sizeof(out), &ret), SCARD_E_INVALID_PARAMETER);
	/* The simulated reader's echo escape, in DIRECT mode without a card. */
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(calais_sim_card_remove(t_reader), SCARD_S_SUCCESS);
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &h, &p), SCARD_S_SUCCESS);
	const BYTE in[] = { 1, 2, 3 };
	assert_rv(SCardControl(h, SCARD_CTL_CODE(3500), in, sizeof(in), out, sizeof(out), &ret), SCARD_S_SUCCESS);
	cr_assert_eq(ret, 3);
	cr_assert_arr_eq(out, in, 3);
	assert_rv(SCardControl(h, SCARD_CTL_CODE(3500), in, sizeof(in), out, 2, &ret), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(ret, 3);
}

Test(io, attributes_from_the_core)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	BYTE buf[300];
	DWORD len = sizeof(buf);
	const struct calais_sim_card *demo = calais_sim_democard();
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, buf, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, demo->atr_len);
	cr_assert_arr_eq(buf, demo->atr, len);
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq((char *)buf, "Calais");
	cr_assert_eq(len, 7);
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq((char *)buf, t_name);
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_SYSTEM_NAME_A, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq((char *)buf, t_name);
	DWORD dw = 0;
	len = sizeof(dw);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_IFD_VERSION, (LPBYTE)&dw, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 4);
	cr_assert_eq(dw, 0x00010000);
	len = sizeof(dw);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_CURRENT_PROTOCOL_TYPE, (LPBYTE)&dw, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 4);
	cr_assert_eq(dw, SCARD_PROTOCOL_T1);
	len = sizeof(dw);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_CHANNEL_ID, (LPBYTE)&dw, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 4);
	cr_assert_eq(dw >> 16, 0x00F0);
	uint32_t maxin = 0;
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAXINPUT, buf, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 4);
	memcpy(&maxin, buf, 4);
	cr_assert_eq(maxin, MAX_BUFFER_SIZE_EXTENDED);
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ICC_PRESENCE, buf, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 1);
	cr_assert_eq(buf[0], 2);
	/* Passed to the backend. */
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_IFD_SERIAL_NO, buf, &len), SCARD_S_SUCCESS);
	cr_assert_eq(strncmp((char *)buf, "SIM-", 4), 0);
	len = sizeof(buf);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAX_IFSD, buf, &len), SCARD_E_UNSUPPORTED_FEATURE);
}

Test(io, attribute_buffers)
{
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	DWORD len = 0;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, NULL, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, strlen(t_name) + 1);
	BYTE small[3];
	len = sizeof(small);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, small, &len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, strlen(t_name) + 1);
	BYTE *p = NULL;
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, (LPBYTE)&p, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, calais_sim_democard()->atr_len);
	assert_rv(SCardFreeMemory(t_ctx, p), SCARD_S_SUCCESS);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, NULL, NULL), SCARD_E_INVALID_PARAMETER);
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, NULL, &len), SCARD_E_INVALID_PARAMETER);
	const BYTE v = 1;
	assert_rv(SCardSetAttrib(h, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, &v, 1), SCARD_E_UNSUPPORTED_FEATURE);
	assert_rv(SCardSetAttrib(h, SCARD_ATTR_SUPRESS_T1_IFS_REQUEST, NULL, 1), SCARD_E_INVALID_PARAMETER);
}
