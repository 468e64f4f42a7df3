/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID backend through the PC/SC API, on the HID device simulator (hidsim.c) at the
 * HID seam: enumeration, names and configuration, hotplug seen by a waiting
 * SCardGetStatusChange(), devices that cannot be opened, the FIDO card's NFC binding
 * (SELECT, U2F through CTAPHID_MSG, NFCCTAP_MSG/GETRESPONSE through CTAPHID_CBOR, chaining,
 * 61xx), every CTAPHID fault with its PC/SC code, and the Ledger framing. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

#include "backend-test.h"
#include "readers-test.h"

#include "hidsim.h"
#include "hid.h"

static SCARDCONTEXT ctx;

static const char *err(LONG rv)
{
	return pcsc_stringify_error(rv);
}

static void start_with(const char *kinds, uint32_t exchange_ms)
{
	calais_shutdown();
	hidsim_reset();
	hidsim_install();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "hid";
	cfg.poll_interval_ms = 50;
	cfg.hid_devices = kinds;
	cfg.exchange_timeout_ms = exchange_ms;
	bt_start(&cfg, &ctx);
}

static void start(void)
{
	start_with(NULL, 0);
}

static void stop(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	cr_assert_eq(hidsim_open_handles(), 0, "every device closed at shutdown");
	hidsim_reset();
}

static struct hidsim_cfg key(uint8_t caps)
{
	return (struct hidsim_cfg){ .path = "/dev/hidraw0", .vid = 0x1050, .pid = 0x0407,
	                            .serial = "12345", .manufacturer = "Yubico",
	                            .product = "YubiKey OTP+FIDO+CCID", .caps = caps };
}

/* A FIDO key plugged and connected. */
static SCARDHANDLE plug(const struct hidsim_cfg *cfg, hidsim_dev **out, char *name)
{
	hidsim_dev *d = hidsim_add(cfg);
	char local[MAX_READERNAME];
	if (!name)
		name = local;
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                       &h, &proto),
	          SCARD_S_SUCCESS);
	cr_assert_eq(proto, SCARD_PROTOCOL_T1);
	if (out)
		*out = d;
	return h;
}

static LONG xfer(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *rx, DWORD *rl)
{
	return SCardTransmit(h, SCARD_PCI_T1, apdu, (DWORD)n, NULL, rx, rl);
}

static const uint8_t SELECT[] = { 0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00,
                                  0x00, 0x06, 0x47, 0x2F, 0x00, 0x01 };

static void expect(SCARDHANDLE h, const uint8_t *apdu, size_t n, const char *data, size_t dn,
                   uint16_t sw)
{
	uint8_t rx[8192];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, apdu, n, rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, dn + 2, "%lu bytes back, %zu expected", (unsigned long)rl, dn + 2);
	if (dn)
		cr_assert_arr_eq(rx, data, dn);
	cr_assert_eq(rx[dn] << 8 | rx[dn + 1], sw, "SW %02X%02X", rx[dn], rx[dn + 1]);
}

static void select_fido(SCARDHANDLE h, const char *version)
{
	expect(h, SELECT, sizeof(SELECT), version, strlen(version), 0x9000);
}

/* A CBOR and U2F key (capabilities 0x05), plugged, connected, the FIDO application
 * selected. */
static SCARDHANDLE selected(hidsim_dev **d)
{
	struct hidsim_cfg k = key(0x05);
	SCARDHANDLE h = plug(&k, d, NULL);
	select_fido(h, "U2F_V2");
	return h;
}

/* Gathers a whole answer: 61xx pieces fetched with GET RESPONSE. */
static size_t gather(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *out, uint16_t *sw,
                     unsigned *pieces)
{
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	size_t got = 0;
	*pieces = 0;
	assert_rv(xfer(h, apdu, n, rx, &rl), SCARD_S_SUCCESS);
	for (;;) {
		cr_assert_geq(rl, 2);
		cr_assert_leq(rl, 258, "a piece of %lu bytes for a short APDU", (unsigned long)rl);
		memcpy(out + got, rx, rl - 2);
		got += rl - 2;
		(*pieces)++;
		if (rx[rl - 2] != 0x61)
			break;
		uint8_t gr[5] = { 0x00, 0xC0, 0x00, 0x00, rx[rl - 1] };
		rl = sizeof(rx);
		assert_rv(xfer(h, gr, 5, rx, &rl), SCARD_S_SUCCESS);
	}
	*sw = (uint16_t)(rx[rl - 2] << 8 | rx[rl - 1]);
	return got;
}

TestSuite(hid, .init = start, .fini = stop, .timeout = 60);

Test(hid, fido_keys_listed_by_usage_page_with_their_interface_word)
{
	struct hidsim_cfg kb = { .path = "/dev/hidraw1", .vid = 0x046D, .pid = 0xC31C,
	                         .usage_page = 0x0001, .usage = 0x0006, .product = "Keyboard" };
	hidsim_add(&kb);
	struct hidsim_cfg k = key(0x05);
	hidsim_dev *yd = hidsim_add(&k);
	struct hidsim_cfg anon = { .path = "/dev/hidraw2", .vid = 0x1209, .pid = 0x5070,
	                           .caps = 0x05 };
	hidsim_add(&anon);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 2, name), 2);
	char a[MAX_READERNAME], b[MAX_READERNAME];
	bt_list(ctx, 0, a);
	bt_list(ctx, 1, b);
	const char *yk = strstr(a, "Yubico") ? a : b, *other = yk == a ? b : a;
	cr_assert_str_eq(yk, "Yubico YubiKey OTP+FIDO+CCID [FIDO] (12345) 00 00");
	cr_assert_str_eq(other, "HID FIDO 1209:5070 [FIDO] 00 00");
	usleep(200000); /* several rescans: nothing changes for known devices */
	cr_assert_eq(bt_list(ctx, 0, NULL), 2);
	struct hidsim_stats st;
	hidsim_stats(yd, &st);
	cr_assert_eq(st.opens, 1, "a known device is not opened again");
	cr_assert_eq(st.inits, 1, "nor talked to");
}

Test(hid, card_is_present_with_the_documented_atr)
{
	struct hidsim_cfg k = key(0x05);
	char name[MAX_READERNAME];
	SCARDHANDLE h = plug(&k, NULL, name);
	uint8_t atr[MAX_ATR_SIZE];
	DWORD atr_len = sizeof(atr), state, proto, nl = 0;
	assert_rv(SCardStatus(h, NULL, &nl, &state, &proto, atr, &atr_len), SCARD_S_SUCCESS);
	static const uint8_t want[] = { 0x3B, 0x8A, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21,
	                                0xC0, 0x54, 0x46, 0x49, 0x44, 0x4F, 0x89 };
	cr_assert_eq(atr_len, sizeof(want));
	cr_assert_arr_eq(atr, want, sizeof(want));
	uint8_t tck = 0;
	for (size_t i = 1; i < sizeof(want); i++)
		tck ^= want[i];
	cr_assert_eq(tck, 0, "TCK makes the XOR of T0..TCK zero");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, select_answers_after_the_capabilities)
{
	struct hidsim_cfg k = key(0x05); /* CBOR and MSG */
	SCARDHANDLE h = plug(&k, NULL, NULL);
	select_fido(h, "U2F_V2");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, select_fido_2_0_when_the_key_has_no_u2f)
{
	struct hidsim_cfg k = key(0x0C); /* CBOR, NMSG */
	SCARDHANDLE h = plug(&k, NULL, NULL);
	select_fido(h, "FIDO_2_0");
	/* No U2F on such a key: the VERSION APDU is an unknown instruction. */
	static const uint8_t version[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
	expect(h, version, sizeof(version), NULL, 0, 0x6D00);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, commands_before_select_and_other_aids)
{
	struct hidsim_cfg k = key(0x05);
	SCARDHANDLE h = plug(&k, NULL, NULL);
	static const uint8_t version[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
	expect(h, version, sizeof(version), NULL, 0, 0x6985);
	static const uint8_t other[] = { 0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08 };
	expect(h, other, sizeof(other), NULL, 0, 0x6A82);
	static const uint8_t cla[] = { 0xA0, 0x03, 0x00, 0x00, 0x00 };
	expect(h, cla, sizeof(cla), NULL, 0, 0x6E00);
	static const uint8_t bad[] = { 0x00, 0x03, 0x00 };
	expect(h, bad, sizeof(bad), NULL, 0, 0x6700);
	/* Six bytes with a 0 fifth: neither short nor extended (found by fuzz_fido_apdu, which
	 * read past such a command's end). */
	static const uint8_t six[] = { 0x00, 0x03, 0x00, 0x00, 0x00, 0x00 };
	expect(h, six, sizeof(six), NULL, 0, 0x6700);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, u2f_version_goes_through_ctaphid_msg_in_extended_form)
{
	struct hidsim_cfg k = key(0x01); /* a U2F-only key */
	hidsim_dev *d;
	SCARDHANDLE h = plug(&k, &d, NULL);
	select_fido(h, "U2F_V2");
	static const uint8_t version[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
	expect(h, version, sizeof(version), "U2F_V2", 6, 0x9000);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	static const uint8_t sent[] = { 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00 };
	cr_assert_eq(st.last_msg_len, sizeof(sent));
	cr_assert_arr_eq(st.last_msg, sent, sizeof(sent));
	/* No CBOR on this key: NFCCTAP_MSG is an unknown instruction (python-fido2's probe). */
	static const uint8_t info[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00 };
	expect(h, info, sizeof(info), NULL, 0, 0x6D00);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, u2f_register_comes_in_pieces_to_short_clients_and_whole_to_extended_ones)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	uint8_t reg[5 + 64 + 1] = { 0x00, 0x01, 0x03, 0x00, 64 };
	for (int i = 0; i < 64; i++)
		reg[5 + i] = (uint8_t)(0xA0 ^ i);
	static uint8_t out[4096];
	uint16_t sw;
	unsigned pieces;
	size_t n = gather(h, reg, sizeof(reg), out, &sw, &pieces);
	cr_assert_eq(n, HIDSIM_REGISTER_LEN);
	cr_assert_eq(sw, 0x9000);
	cr_assert_eq(pieces, 4, "1000 bytes in 256-byte pieces");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(out[i], (uint8_t)i);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.last_msg_len, 7 + 64 + 2);
	cr_assert_eq(st.last_msg[4], 0);
	cr_assert_eq(st.last_msg[5] << 8 | st.last_msg[6], 64);
	cr_assert_arr_eq(st.last_msg + 7, reg + 5, 64);

	uint8_t ext[7 + 64 + 2] = { 0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 64 };
	memcpy(ext + 7, reg + 5, 64);
	uint8_t rx[2048];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, ext, sizeof(ext), rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, HIDSIM_REGISTER_LEN + 2);
	cr_assert_eq(rx[HIDSIM_REGISTER_LEN], 0x90);
	/* A GET RESPONSE with nothing pending. */
	static const uint8_t gr[] = { 0x00, 0xC0, 0x00, 0x00, 0x00 };
	expect(h, gr, sizeof(gr), NULL, 0, 0x6985);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, nfcctap_msg_get_info_through_ctaphid_cbor)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	static const uint8_t info[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00 };
	expect(h, info, sizeof(info), (const char *)vauth_get_info, vauth_get_info_len, 0x9000);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.cbors, 1);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, keepalives_become_9100_and_getresponse_polls)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_cbor_keepalives(d, 3);
	static const uint8_t mc[] = { 0x80, 0x10, 0x80, 0x00, 0x03, 0x01, 0xA0, 0x55, 0x00 };
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, mc, sizeof(mc), rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 3);
	cr_assert(rx[0] == 0x02 && rx[1] == 0x91 && rx[2] == 0x00, "status 2 (user presence) 91 00");
	static const uint8_t getresp[] = { 0x80, 0x11, 0x00, 0x00, 0x00 };
	unsigned polls = 0;
	do {
		rl = sizeof(rx);
		assert_rv(xfer(h, getresp, sizeof(getresp), rx, &rl), SCARD_S_SUCCESS);
		polls++;
	} while (rl == 3 && rx[1] == 0x91 && polls < 20);
	cr_assert_eq(polls, 3, "two more keepalives, then the answer");
	static const uint8_t want[] = { 0x00, 0x01, 0xA0, 0x55, 0x90, 0x00 };
	cr_assert_eq(rl, sizeof(want));
	cr_assert_arr_eq(rx, want, sizeof(want));
	/* Nothing pending any more. */
	expect(h, getresp, sizeof(getresp), NULL, 0, 0x6985);

	/* Without P1 bit 0x80 the card waits through the keepalives. */
	static const uint8_t mc2[] = { 0x80, 0x10, 0x00, 0x00, 0x03, 0x01, 0xA0, 0x55, 0x00 };
	expect(h, mc2, sizeof(mc2), (const char *)want, 4, 0x9000);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, a_new_command_cancels_the_pending_cbor_one)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_cbor_keepalives(d, 5);
	static const uint8_t mc[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x01, 0x00 };
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, mc, sizeof(mc), rx, &rl), SCARD_S_SUCCESS);
	cr_assert(rl == 3 && rx[1] == 0x91);
	hidsim_cbor_keepalives(d, 0);
	static const uint8_t info[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00 };
	expect(h, info, sizeof(info), (const char *)vauth_get_info, vauth_get_info_len, 0x9000);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.cancels, 1);
	cr_assert_eq(st.inits, 2, "the abandoned channel is replaced");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, chained_cbor_request_and_long_answer)
{
	SCARDHANDLE h = selected(NULL);
	static uint8_t req[2000];
	for (size_t i = 0; i < sizeof(req); i++)
		req[i] = (uint8_t)(i * 7);
	size_t off = 0;
	uint8_t rx[300];
	while (sizeof(req) - off > 250) {
		uint8_t apdu[5 + 250] = { 0x90, 0x10, 0x80, 0x00, 250 };
		memcpy(apdu + 5, req + off, 250);
		off += 250;
		DWORD rl = sizeof(rx);
		assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_S_SUCCESS);
		cr_assert(rl == 2 && rx[0] == 0x90 && rx[1] == 0x00);
	}
	uint8_t last[5 + 250 + 1] = { 0x80, 0x10, 0x80, 0x00, (uint8_t)(sizeof(req) - off) };
	memcpy(last + 5, req + off, sizeof(req) - off);
	size_t n = 5 + (sizeof(req) - off) + 1;
	static uint8_t out[4096];
	uint16_t sw;
	unsigned pieces;
	size_t got = gather(h, last, n, out, &sw, &pieces);
	cr_assert_eq(sw, 0x9000);
	cr_assert_eq(got, 1 + sizeof(req));
	cr_assert_eq(out[0], 0x00);
	cr_assert_arr_eq(out + 1, req, sizeof(req));
	cr_assert_eq(pieces, 8);

	/* A chain whose header changes midway is refused. */
	uint8_t a[6] = { 0x90, 0x10, 0x80, 0x00, 1, 0x01 }, b[7] = { 0x80, 0x10, 0x00, 0x00, 1, 0x01, 0 };
	expect(h, a, sizeof(a), NULL, 0, 0x9000);
	expect(h, b, sizeof(b), NULL, 0, 0x6883);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, extended_length_cbor_request)
{
	SCARDHANDLE h = selected(NULL);
	static uint8_t apdu[7 + 3000 + 2] = { 0x80, 0x10, 0x00, 0x00, 0x00, 3000 >> 8, 3000 & 0xFF };
	for (int i = 0; i < 3000; i++)
		apdu[7 + i] = (uint8_t)(i ^ 0x3C);
	static uint8_t rx[4096];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 1 + 3000 + 2);
	cr_assert_arr_eq(rx + 1, apdu + 7, 3000);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* ---- CTAPHID faults ---------------------------------------------------------------- */

static const uint8_t VERSION[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };

static LONG version_rv(SCARDHANDLE h)
{
	uint8_t rx[64];
	DWORD rl = sizeof(rx);
	return xfer(h, VERSION, sizeof(VERSION), rx, &rl);
}

/* A REGISTER: its 1000-byte answer takes several packets. */
static const uint8_t REGISTER[5 + 64 + 1] = { 0x00, 0x01, 0x03, 0x00, 64 };

/* The fault ends the exchange of apdu with want; the next exchange works on a fresh
 * channel. Returns how long the faulty exchange took, in ms. */
static long fault_on(enum hidsim_fault f, unsigned arg, const uint8_t *apdu, size_t n, LONG want)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, f, arg);
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	long t0 = bt_now_ms();
	assert_rv(xfer(h, apdu, n, rx, &rl), want);
	long dt = bt_now_ms() - t0;
	hidsim_fault(d, HS_NONE, 0);
	expect(h, VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	return dt;
}

static void fault_then_recovery(enum hidsim_fault f, unsigned arg, LONG want)
{
	fault_on(f, arg, VERSION, sizeof(VERSION), want);
}

Test(hid, silence_after_a_command_is_a_timeout)
{
	/* No answer and no keepalive for 3 s. */
	long dt = fault_on(HS_SILENT_COMMANDS, 0, VERSION, sizeof(VERSION), SCARD_E_TIMEOUT);
	cr_assert(dt >= 2900 && dt < 5000, "%ld ms", dt);
}

Test(hid, answers_on_another_channel_are_dropped)
{
	fault_then_recovery(HS_WRONG_CHANNEL, 0, SCARD_E_TIMEOUT);
}

Test(hid, a_stray_message_on_another_channel_is_skipped)
{
	fault_then_recovery(HS_OTHER_CHANNEL_FIRST, 0, SCARD_S_SUCCESS);
}

Test(hid, a_stray_continuation_is_skipped)
{
	fault_then_recovery(HS_STRAY_CONT, 0, SCARD_S_SUCCESS);
}

Test(hid, wrong_sequence_is_a_comm_error)
{
	fault_on(HS_BAD_SEQ, 0, REGISTER, sizeof(REGISTER), SCARD_F_COMM_ERROR);
}

Test(hid, a_new_message_in_mid_message_is_a_comm_error)
{
	fault_on(HS_NEW_MSG_MID, 0, REGISTER, sizeof(REGISTER), SCARD_F_COMM_ERROR);
}

Test(hid, a_truncated_message_ends_within_the_packet_timeout)
{
	long dt = fault_on(HS_TRUNCATED, 0, REGISTER, sizeof(REGISTER), SCARD_F_COMM_ERROR);
	cr_assert(dt >= 450 && dt < 2000, "%ld ms", dt);
}

Test(hid, an_over_long_message_is_a_comm_error)
{
	fault_then_recovery(HS_OVERLONG, 0, SCARD_F_COMM_ERROR);
}

Test(hid, device_errors_map_to_pcsc_codes)
{
	fault_then_recovery(HS_ERROR, 0x7F, SCARD_F_COMM_ERROR);
	stop();
	start();
	fault_then_recovery(HS_ERROR, 0x0A, SCARD_E_SHARING_VIOLATION);
	stop();
	start();
	fault_then_recovery(HS_ERROR, 0x04, SCARD_F_COMM_ERROR);
	stop();
	start();
	/* Invalid command: to a PC/SC client, an instruction the card does not know. */
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_ERROR, 0x01);
	expect(h, VERSION, sizeof(VERSION), NULL, 0, 0x6D00);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, a_busy_channel_is_tried_again_every_100_ms)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_BUSY, 3);
	long t0 = bt_now_ms();
	expect(h, VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	long dt = bt_now_ms() - t0;
	cr_assert(dt >= 280 && dt < 2000, "%ld ms", dt);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.msgs, 1, "select is local; VERSION reached the model once");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, a_channel_busy_for_ever_is_a_sharing_violation)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_BUSY, 1000);
	long t0 = bt_now_ms();
	assert_rv(version_rv(h), SCARD_E_SHARING_VIOLATION);
	long dt = bt_now_ms() - t0;
	cr_assert(dt >= 2800 && dt < 5000, "%ld ms", dt);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, a_lost_channel_is_allocated_again)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_INVALID_CHANNEL, 0);
	expect(h, VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.inits, 2);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, endless_keepalives_end_at_the_exchange_limit, .timeout = 30)
{
	start_with(NULL, 700);
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_KEEPALIVE_FOREVER, 0);
	long t0 = bt_now_ms();
	assert_rv(version_rv(h), SCARD_E_TIMEOUT);
	long dt = bt_now_ms() - t0;
	cr_assert(dt >= 650 && dt < 2000, "%ld ms", dt);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_geq(st.cancels, 1, "the device is told to stop");
	hidsim_fault(d, HS_NONE, 0);
	expect(h, VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, init_silence_or_wrong_nonce_is_a_mute_card, .timeout = 30)
{
	struct hidsim_cfg k = key(0x05);
	hidsim_dev *d = hidsim_add(&k);
	hidsim_fault(d, HS_WRONG_NONCE, 0);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_MUTE);
	SCARDHANDLE h;
	DWORD proto;
	hidsim_fault(d, HS_SILENT, 0);
	LONG rv = SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto);
	assert_rv(rv, SCARD_W_UNRESPONSIVE_CARD);
	/* Another program's INIT answer first, then ours: accepted. */
	hidsim_fault(d, HS_OTHER_NONCE_FIRST, 0);
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_S_SUCCESS);
	hidsim_fault(d, HS_NONE, 0);
	select_fido(h, "U2F_V2");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, unplug_in_mid_message)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_UNPLUG_MID, 0);
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	LONG rv = xfer(h, REGISTER, sizeof(REGISTER), rx, &rl);
	cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_W_REMOVED_CARD, "%s", err(rv));
	cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

struct bg {
	SCARDHANDLE h;
	LONG rv;
	long ms;
};

static void *bg_version(void *arg)
{
	struct bg *b = arg;
	long t0 = bt_now_ms();
	b->rv = version_rv(b->h);
	b->ms = bt_now_ms() - t0;
	return NULL;
}

Test(hid, shutdown_cancels_a_waiting_exchange_within_a_second)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	hidsim_fault(d, HS_KEEPALIVE_FOREVER, 0);
	struct bg b = { .h = h };
	pthread_t t;
	pthread_create(&t, NULL, bg_version, &b);
	usleep(300000);
	long t0 = bt_now_ms();
	calais_shutdown();
	long dt = bt_now_ms() - t0;
	pthread_join(t, NULL);
	cr_assert_lt(dt, 1000, "shutdown took %ld ms", dt);
	assert_rv(b.rv, SCARD_E_NO_SERVICE);
}

/* ---- hotplug and access ----------------------------------------------------------------- */

Test(hid, hotplug_arrival_and_removal_wake_a_pnp_waiter)
{
	SCARD_READERSTATE pnp = { .szReader = "\\\\?PnP?\\Notification" };
	LONG rv0 = SCardGetStatusChange(ctx, 0, &pnp, 1);
	cr_assert(rv0 == SCARD_S_SUCCESS || rv0 == SCARD_E_TIMEOUT);
	pnp.dwCurrentState = pnp.dwEventState;
	struct hidsim_cfg k = key(0x05);
	hidsim_dev *d = hidsim_add(&k);
	long t0 = bt_now_ms();
	assert_rv(SCardGetStatusChange(ctx, 5000, &pnp, 1), SCARD_S_SUCCESS);
	cr_assert_lt(bt_now_ms() - t0, 1000);
	pnp.dwCurrentState = pnp.dwEventState;
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	hidsim_unplug(d);
	assert_rv(SCardGetStatusChange(ctx, 5000, &pnp, 1), SCARD_S_SUCCESS);
	cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	/* Plugged again (same node): a new reader, a new channel. */
	hidsim_dev *d2 = hidsim_add(&k);
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	struct hidsim_stats st;
	hidsim_stats(d2, &st);
	cr_assert_eq(st.inits, 1);
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_seen[4096];

static void keep_log(enum calais_log_level level, const char *domain, const char *line,
                     void *user)
{
	pthread_mutex_lock(&log_lock);
	if (strstr(line, "cannot open"))
		snprintf(log_seen, sizeof(log_seen), "%s: %s", domain, line);
	pthread_mutex_unlock(&log_lock);
}

Test(hid, a_device_that_cannot_be_opened_is_listed_unavailable)
{
	calais_log_set(CALAIS_LOG_WARNING, keep_log, NULL);
	struct hidsim_cfg k = key(0x05);
	k.deny_open = true;
	hidsim_dev *d = hidsim_add(&k);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_UNAVAILABLE);
	SCARDHANDLE h;
	DWORD proto;
	cr_assert_neq(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	              SCARD_S_SUCCESS);
	pthread_mutex_lock(&log_lock);
	cr_assert(strstr(log_seen, "hid: ") && strstr(log_seen, "/dev/hidraw0") &&
	          strstr(log_seen, "permission") && strstr(log_seen, "udev rule"),
	          "the warning says why: \"%s\"", log_seen);
	pthread_mutex_unlock(&log_lock);
	hidsim_allow_open(d);
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_S_SUCCESS);
	select_fido(h, "U2F_V2");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
}

/* ---- Ledger ----------------------------------------------------------------------------- */

static struct hidsim_cfg ledger(void)
{
	return (struct hidsim_cfg){ .path = "/dev/hidraw5", .vid = 0x2C97, .pid = 0x4011,
	                            .usage_page = 0xFFA0, .usage = 0x01, .interface = 0,
	                            .manufacturer = "Ledger", .product = "Nano X",
	                            .ledger = true, .serial = "0001" };
}

Test(hid, ledger_devices_are_off_unless_configured)
{
	struct hidsim_cfg l = ledger();
	hidsim_add(&l);
	struct hidsim_cfg k = key(0x05);
	hidsim_add(&k);
	cr_assert_eq(bt_wait_readers(ctx, 1, NULL), 1);
	usleep(150000);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_list(ctx, 0, name), 1);
	cr_assert(strstr(name, "[FIDO]"), "%s", name);
}

Test(hid, ledger_apdus_through_the_framing)
{
	start_with("ledger", 0);
	struct hidsim_cfg l = ledger();
	hidsim_dev *d = hidsim_add(&l);
	struct hidsim_cfg k = key(0x05);
	hidsim_add(&k); /* not asked for: "fido" is not in the list */
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	usleep(150000);
	cr_assert_eq(bt_list(ctx, 0, name), 1);
	cr_assert_str_eq(name, "Ledger Nano X [Ledger] (0001) 00 00");
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_S_SUCCESS);
	uint8_t atr[MAX_ATR_SIZE];
	DWORD atr_len = sizeof(atr), state, nl = 0;
	assert_rv(SCardStatus(h, NULL, &nl, &state, &proto, atr, &atr_len), SCARD_S_SUCCESS);
	static const uint8_t want[] = { 0x3B, 0x88, 0x80, 0x01, 0x80, 0x56, 0x4C, 0x65,
	                                0x64, 0x67, 0x65, 0x72, 0xE2 };
	cr_assert_eq(atr_len, sizeof(want));
	cr_assert_arr_eq(atr, want, sizeof(want));
	uint8_t apdu[5 + 255] = { 0xE0, 0x01, 0x00, 0x00, 255 };
	for (int i = 0; i < 255; i++)
		apdu[5 + i] = (uint8_t)(i + 1);
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 257);
	cr_assert_arr_eq(rx, apdu + 5, 255);
	cr_assert(rx[255] == 0x90 && rx[256] == 0x00);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.last_msg_len, sizeof(apdu));
	cr_assert_arr_eq(st.last_msg, apdu, sizeof(apdu));

	hidsim_fault(d, HS_LEDGER_BAD_TAG, 0);
	rl = sizeof(rx);
	assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_F_COMM_ERROR);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(hid, ledger_wrong_sequence_and_configured_ids)
{
	start_with("fido, ledger=1234:5678,bogus,ledger=zz", 0);
	struct hidsim_cfg l = ledger();
	l.vid = 0x1234;
	l.pid = 0x5678;
	l.usage_page = 0;
	hidsim_dev *d = hidsim_add(&l); /* interface 0 where no usage page is known */
	struct hidsim_cfg k = key(0x05);
	hidsim_add(&k);
	cr_assert_eq(bt_wait_readers(ctx, 2, NULL), 2);
	char a[MAX_READERNAME], b[MAX_READERNAME];
	bt_list(ctx, 0, a);
	bt_list(ctx, 1, b);
	const char *ln = strstr(a, "[Ledger]") ? a : b;
	cr_assert(strstr(ln, "[Ledger]"), "%s / %s", a, b);
	bt_wait_state(ctx, ln, SCARD_STATE_PRESENT);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, ln, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_S_SUCCESS);
	hidsim_fault(d, HS_LEDGER_BAD_SEQ, 0);
	uint8_t apdu[5 + 100] = { 0xE0, 0x01, 0x00, 0x00, 100 };
	uint8_t rx[300];
	DWORD rl = sizeof(rx);
	assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_F_COMM_ERROR);
	hidsim_fault(d, HS_NONE, 0);
	rl = sizeof(rx);
	assert_rv(xfer(h, apdu, sizeof(apdu), rx, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 102);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* ---- reset, and the transport's own commands ------------------------------------------ */

Test(hid, a_reset_allocates_a_new_channel_and_deselects)
{
	hidsim_dev *d;
	SCARDHANDLE h = selected(&d);
	DWORD proto;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &proto),
	          SCARD_S_SUCCESS);
	struct hidsim_stats st;
	hidsim_stats(d, &st);
	cr_assert_eq(st.inits, 2);
	expect(h, VERSION, sizeof(VERSION), NULL, 0, 0x6985);
	select_fido(h, "U2F_V2");
	expect(h, VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* PING (a long one, several packets each way) and WINK straight on the CTAPHID layer, on
 * a handle of the test's own (the manager stopped: nothing else reads the device). */
Test(hid, ping_and_wink_on_the_transport)
{
	calais_shutdown();
	struct hidsim_cfg k = key(0x05);
	hidsim_dev *d = hidsim_add(&k);
	static struct calais__ctaphid c;
	memset(&c, 0, sizeof(c));
	c.ops = calais__hid_transport;
	c.name = "ping test";
	cr_assert_eq(c.ops->open(k.path, &c.h), CALAIS__HID_OK);
	uint8_t data[300];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13);
	uint8_t rc, st;
	assert_rv(calais__ctaphid_call(&c, CALAIS__CTAPHID_PING, data, sizeof(data),
	                               CALAIS__CTAPHID_KA_WAIT, &rc, &st, calais__now_ms() + 5000),
	          SCARD_S_SUCCESS);
	cr_assert_eq(rc, CALAIS__CTAPHID_PING);
	cr_assert_eq(c.msg_len, sizeof(data));
	cr_assert_arr_eq(c.msg, data, sizeof(data));
	cr_assert_eq(c.caps, 0x05);
	cr_assert_eq(c.version, 2);
	assert_rv(calais__ctaphid_call(&c, CALAIS__CTAPHID_WINK, NULL, 0, CALAIS__CTAPHID_KA_WAIT,
	                               &rc, &st, calais__now_ms() + 5000),
	          SCARD_S_SUCCESS);
	cr_assert_eq(c.msg_len, 0);
	/* Over the largest message: refused before anything is sent. */
	static uint8_t big[CALAIS__CTAPHID_MAX_MSG + 1];
	assert_rv(calais__ctaphid_call(&c, CALAIS__CTAPHID_PING, big, sizeof(big),
	                               CALAIS__CTAPHID_KA_WAIT, &rc, &st, calais__now_ms() + 5000),
	          SCARD_E_INVALID_PARAMETER);
	/* The largest one goes through whole. */
	for (size_t i = 0; i < CALAIS__CTAPHID_MAX_MSG; i++)
		big[i] = (uint8_t)(i ^ (i >> 8));
	assert_rv(calais__ctaphid_call(&c, CALAIS__CTAPHID_PING, big, CALAIS__CTAPHID_MAX_MSG,
	                               CALAIS__CTAPHID_KA_WAIT, &rc, &st, calais__now_ms() + 5000),
	          SCARD_S_SUCCESS);
	cr_assert_eq(c.msg_len, CALAIS__CTAPHID_MAX_MSG);
	cr_assert_arr_eq(c.msg, big, CALAIS__CTAPHID_MAX_MSG);
	struct hidsim_stats s;
	hidsim_stats(d, &s);
	cr_assert_eq(s.pings, 2);
	cr_assert_eq(s.winks, 1);
	c.ops->close(c.h);
}

/* ---- isolation ------------------------------------------------------------------------------ */

/* A key stuck in an exchange (keepalives for ever) holds up no other key: another one's
 * exchange is answered at once, and a key plugged meanwhile is listed. The bounds are
 * stretched under valgrind. */
Test(hid, a_stuck_key_holds_up_no_other)
{
	long slow = getenv("CALAIS_TEST_UNDER_VALGRIND") ? 20 : 1;
	struct hidsim_cfg k1 = key(0x05), k2 = key(0x05), k3 = key(0x05);
	k2.path = "/dev/hidraw7";
	k2.serial = "777";
	k3.path = "/dev/hidraw8";
	k3.serial = "888";
	hidsim_dev *d1 = hidsim_add(&k1);
	hidsim_add(&k2);
	cr_assert_eq(bt_wait_readers(ctx, 2, NULL), 2);
	char a[MAX_READERNAME], b[MAX_READERNAME];
	bt_list(ctx, 0, a);
	bt_list(ctx, 1, b);
	const char *n1 = strstr(a, "(12345)") ? a : b, *n2 = n1 == a ? b : a;
	SCARDHANDLE h[2];
	DWORD proto;
	const char *names[2] = { n1, n2 };
	for (int i = 0; i < 2; i++) {
		bt_wait_state(ctx, names[i], SCARD_STATE_PRESENT);
		assert_rv(SCardConnect(ctx, names[i], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h[i],
		                       &proto),
		          SCARD_S_SUCCESS);
		select_fido(h[i], "U2F_V2");
	}
	hidsim_fault(d1, HS_KEEPALIVE_FOREVER, 0);
	struct bg stuck = { .h = h[0] };
	pthread_t t;
	pthread_create(&t, NULL, bg_version, &stuck);
	usleep(200000);
	long t0 = bt_now_ms();
	expect(h[1], VERSION, sizeof(VERSION), "U2F_V2", 6, 0x9000);
	long dt = bt_now_ms() - t0;
	cr_assert_lt(dt, 200 * slow, "the other key's exchange took %ld ms", dt);
	hidsim_add(&k3);
	t0 = bt_now_ms();
	cr_assert_eq(bt_wait_readers(ctx, 3, NULL), 3);
	dt = bt_now_ms() - t0;
	cr_assert_lt(dt, 1000 * slow, "a new key listed after %ld ms", dt);
	/* The stuck exchange ends when its key leaves. */
	hidsim_unplug(d1);
	pthread_join(t, NULL);
	cr_assert(stuck.rv == SCARD_E_READER_UNAVAILABLE || stuck.rv == SCARD_W_REMOVED_CARD,
	          "%s", err(stuck.rv));
	cr_assert_lt(stuck.ms, 2000 * slow);
	SCardDisconnect(h[0], SCARD_LEAVE_CARD);
	SCardDisconnect(h[1], SCARD_LEAVE_CARD);
}
