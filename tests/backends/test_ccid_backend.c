/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The USB CCID backend through the PC/SC API, on the CCID device simulator (ccidsim.c)
 * plugged in at the USB seam: enumeration and names, every exchange level, PPS,
 * SetParameters and IFSD, presence by interrupt pipe and by polling, hotplug, sharing
 * with another process, part 10, and each transport fault with its PC/SC error. */
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

#include "ccidsim.h"
#include "ccid.h"

#define LVL_CHAR 0x00000u
#define LVL_TPDU 0x10000u
#define LVL_SHORT 0x20000u
#define LVL_EXT 0x40000u
/* Automatic everything: what APDU-level readers announce. */
#define AUTO 0x000004BEu

static const uint8_t ATR_T0[] = { 0x3B, 0x10, 0x96 }; /* TA1 = 96: PPS to 250 kbit/s */
static const uint8_t ATR_T1[] = { 0x3B, 0x80, 0x81, 0x31, 0x20, 0x45, 0x55 };
/* T=1 with the CRC: TD2 71 -> TA3 20 (IFSC 32), TB3 45, TC3 01 (CRC); TCK */
static const uint8_t ATR_T1_CRC[] = { 0x3B, 0x80, 0x81, 0x71, 0x20, 0x45, 0x01, 0x55 };

static SCARDCONTEXT ctx;

static const char *err(LONG rv)
{
	return pcsc_stringify_error(rv);
}


static void start_with(uint32_t poll_ms)
{
	calais_shutdown();
	ccidsim_reset();
	ccidsim_install();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "ccid";
	cfg.poll_interval_ms = poll_ms;
	bt_start(&cfg, &ctx);
}

static void start(void)
{
	start_with(50);
}

static void stop(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	ccidsim_reset();
}

static struct ccidsim_card card_t0(void)
{
	struct ccidsim_card c = { .atr_len = sizeof(ATR_T0) };
	memcpy(c.atr, ATR_T0, sizeof(ATR_T0));
	return c;
}

static struct ccidsim_card card_t1(void)
{
	struct ccidsim_card c = { .atr_len = sizeof(ATR_T1), .t1 = true };
	memcpy(c.atr, ATR_T1, sizeof(ATR_T1));
	return c;
}

static struct ccidsim_card card_t1_crc(void)
{
	struct ccidsim_card c = { .atr_len = sizeof(ATR_T1_CRC), .t1 = true, .t1_crc = true };
	memcpy(c.atr, ATR_T1_CRC, sizeof(ATR_T1_CRC));
	return c;
}

/* A one-slot reader with a card, connected; returns the handle. */
static SCARDHANDLE reader_with_card(const struct ccidsim_cfg *cfg, const struct ccidsim_card *card,
                                    ccidsim_dev **out, char *name)
{
	ccidsim_dev *d = ccidsim_add(cfg);
	ccidsim_insert(d, 0, card);
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
	if (out)
		*out = d;
	return h;
}

static LONG xmit(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *resp, DWORD *len)
{
	DWORD proto, state, rl = 0;
	char names[512];
	DWORD nl = sizeof(names);
	uint8_t atr[40];
	DWORD al = sizeof(atr);
	LONG rv = SCardStatus(h, names, &nl, &state, &proto, atr, &al);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	(void)rl;
	return SCardTransmit(h, proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0, apdu,
	                     (DWORD)n, NULL, resp, len);
}

/* Echo of n data bytes (case 4; case 3 when n > 255 on a short-APDU path is avoided). */
static void check_echo(SCARDHANDLE h, size_t n)
{
	static uint8_t apdu[70000], resp[70000];
	size_t off;
	apdu[0] = 0x80, apdu[1] = 0xEE, apdu[2] = 0, apdu[3] = 0;
	if (n <= 255) {
		apdu[4] = (uint8_t)n;
		off = 5;
	} else {
		apdu[4] = 0, apdu[5] = (uint8_t)(n >> 8), apdu[6] = (uint8_t)n;
		off = 7;
	}
	for (size_t i = 0; i < n; i++)
		apdu[off + i] = (uint8_t)(i * 3 + 1);
	size_t len = off + n;
	if (n <= 255)
		apdu[len++] = 0; /* Le */
	else
		apdu[len++] = 0, apdu[len++] = 0;
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, len, resp, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, n + 2, "echo of %zu: %lu bytes back", n, (unsigned long)rl);
	cr_assert_eq(memcmp(resp, apdu + off, n), 0, "echo of %zu: data differ", n);
	cr_assert(resp[n] == 0x90 && resp[n + 1] == 0x00);
}

/* "Source": P1P2 bytes from the card (case 2). */
static void check_source(SCARDHANDLE h, size_t n)
{
	static uint8_t resp[70000];
	uint8_t apdu[7] = { 0x80, 0xEF, (uint8_t)(n >> 8), (uint8_t)n, 0 };
	size_t len = 5;
	if (n > 256) {
		apdu[4] = 0, apdu[5] = 0, apdu[6] = 0;
		len = 7;
	} else {
		apdu[4] = (uint8_t)n;
	}
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, len, resp, &rl), SCARD_S_SUCCESS);
	bt_assert_counting(resp, rl, n, "source");
}

static void select_ok(SCARDHANDLE h, LONG want)
{
	uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 }, resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, sizeof(apdu), resp, &rl), want);
	if (want == SCARD_S_SUCCESS)
		cr_assert(rl == 2 && resp[0] == 0x90 && resp[1] == 0x00);
}

TestSuite(ccid, .init = start, .fini = stop, .timeout = 60);

Test(ccid, names_slots_and_attributes)
{
	struct ccidsim_cfg cfg = { .vid = 0x1234, .pid = 0x5678, .bcd_device = 0x0203,
	                           .manufacturer = "ACME", .product = "Dual Reader",
	                           .serial = "SN42", .iface = "Contact", .slots = 2, .intr = true,
	                           .features = LVL_SHORT | AUTO, .max_msg = 271 };
	ccidsim_add(&cfg);
	char a[MAX_READERNAME], b[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 2, a), 2);
	bt_list(ctx, 1, b);
	const char *x = strcmp(a, b) < 0 ? a : b, *y = x == a ? b : a;
	cr_assert_str_eq(x, "ACME Dual Reader [Contact] (SN42) 00 00");
	cr_assert_str_eq(y, "ACME Dual Reader [Contact] (SN42) 00 01");

	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, x, SCARD_SHARE_DIRECT, 0, &h, &proto), SCARD_S_SUCCESS);
	uint8_t v[64];
	DWORD vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, v, &vl), SCARD_S_SUCCESS);
	cr_assert_str_eq((char *)v, "ACME");
	vl = sizeof(v);
	/* Integer attributes: 4 bytes little-endian, as libccid answers them. */
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_IFD_VERSION, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == 4 && v[0] == 0 && v[1] == 0 && v[2] == 0x03 && v[3] == 0x02);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAXINPUT, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == 4 && *(uint32_t *)v == 261u);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_CHANNEL_ID, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == 4 && v[3] == 0x00 && v[2] == 0x20);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_IFD_SERIAL_NO, v, &vl), SCARD_S_SUCCESS);
	cr_assert(vl == 5 && memcmp(v, "SN42", 5) == 0, "serial number with its NUL, as libccid");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, vendor_class_and_descriptor_on_endpoint)
{
	struct ccidsim_cfg cfg = { .iface_class = 0xFF, .desc_on_endpoint = true, .intr = true,
	                           .features = LVL_SHORT | AUTO };
	ccidsim_add(&cfg);
	cr_assert_eq(bt_wait_readers(ctx, 1, NULL), 1);
}

Test(ccid, short_apdu_level)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO, .max_msg = 271 };
	struct ccidsim_card c = card_t0();
	SCARDHANDLE h = reader_with_card(&cfg, &c, NULL, NULL);
	select_ok(h, SCARD_S_SUCCESS);
	check_echo(h, 200);
	check_source(h, 256);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, extended_apdu_level_chains_both_ways)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_EXT | AUTO, .max_msg = 300 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	check_echo(h, 20);
	check_echo(h, 1000);  /* 4 command chunks, 4 answer blocks */
	check_source(h, 5000);
	struct ccidsim_stats st = ccidsim_stats(d);
	cr_assert_eq(st.levels_seen & 0x1E, 0x1E, "wLevelParameter kinds seen: 0x%X",
	             st.levels_seen);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, tpdu_t0_pps_set_parameters_and_procedure)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU, .max_msg = 271 };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	struct ccidsim_stats st = ccidsim_stats(d);
	cr_assert_eq(st.pps, 1, "PPS requests: %u", st.pps);
	cr_assert_eq(st.last_set_params_len, 5);
	cr_assert_eq(st.last_set_params[0], 0x96, "bmFindexDindex 0x%02X", st.last_set_params[0]);
	/* ISO order: class C first (bVoltageSupport 7, no automatic voltage). */
	cr_assert_eq(st.last_power_select, 3);
	select_ok(h, SCARD_S_SUCCESS);
	check_echo(h, 100);   /* case 4: 61xx then GET RESPONSE */
	check_source(h, 10);  /* case 2 */
	/* Le = 0 for a 10-byte answer: 6C 0A, then the command again with P3 = 0A. */
	uint8_t apdu[5] = { 0x80, 0xEF, 0x00, 0x0A, 0x00 }, resp[300];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, 5, resp, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 12);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, tpdu_t1_ifsd_and_chaining)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU | 0xBE, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	struct ccidsim_stats st = ccidsim_stats(d);
	cr_assert_eq(st.ifs_requests, 1);
	cr_assert_eq(st.pps, 0, "the reader negotiates PPS itself (0x80)");
	check_echo(h, 250);   /* 8 I-blocks to the card (IFSC 32) */
	check_source(h, 600); /* extended Le: 3 I-blocks back (IFSD 254) */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, tpdu_t1_no_ifsd_request_when_automatic)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU | 0x4BE, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	cr_assert_eq(ccidsim_stats(d).ifs_requests, 0);
	check_echo(h, 40);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, character_level_t0)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_CHAR, .max_msg = 271 };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	cr_assert_eq(ccidsim_stats(d).pps, 1);
	select_ok(h, SCARD_S_SUCCESS);
	check_echo(h, 60);
	check_source(h, 256);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, character_level_t1)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_CHAR, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	SCARDHANDLE h = reader_with_card(&cfg, &c, NULL, NULL);
	check_echo(h, 70);
	check_source(h, 300);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* A card whose ATR asks for the CRC (TC3 bit 0), at TPDU and at character level: the
 * blocks carry the CRC cards use (tests/serial/t1crc.h). */
Test(ccid, t1_crc_card_at_tpdu_and_character_level)
{
	static const uint32_t levels[] = { LVL_TPDU | 0xBE, LVL_CHAR };
	for (size_t i = 0; i < 2; i++) {
		struct ccidsim_cfg cfg = { .intr = true, .features = levels[i], .max_msg = 271 };
		struct ccidsim_card c = card_t1_crc();
		ccidsim_dev *d;
		char name[MAX_READERNAME];
		SCARDHANDLE h = reader_with_card(&cfg, &c, &d, name);
		check_echo(h, 70);
		check_source(h, 300);
		/* An answer too long for the buffer: the card's chain is aborted, the next
		 * APDU is in step. */
		uint8_t apdu[7] = { 0x80, 0xEF, 0x01, 0x2C, 0 }, small[100];
		DWORD rl = sizeof(small);
		assert_rv(SCardTransmit(h, SCARD_PCI_T1, apdu, 5, NULL, small, &rl),
		          SCARD_E_INSUFFICIENT_BUFFER);
		check_echo(h, 70);
		SCardDisconnect(h, SCARD_LEAVE_CARD);
		ccidsim_unplug(d);
		cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	}
}

/* A T=1 card that stops answering at TPDU level (the reader says ICC_MUTE): R-blocks,
 * then three RESYNCH requests, then SCARD_W_UNRESPONSIVE_CARD; the card is deactivated
 * and no longer shown powered, and a reconnect with a reset brings it back. */
Test(ccid, t1_card_mute_in_mid_session_is_deactivated)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU | 0xBE, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	char name[MAX_READERNAME];
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, name);
	check_echo(h, 20);
	unsigned xfrs = ccidsim_stats(d).commands[0x6F], offs = ccidsim_stats(d).commands[0x63];
	ccidsim_fault(d, CS_ICC_MUTE, 0);
	uint8_t apdu[5] = { 0x80, 0xEE, 0, 0, 0 }, resp[64];
	DWORD rl = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, apdu, 4, NULL, resp, &rl),
	          SCARD_W_UNRESPONSIVE_CARD);
	struct ccidsim_stats st = ccidsim_stats(d);
	cr_assert_eq(st.commands[0x6F] - xfrs, 1 + 3 + 3, "I-block, 3 R-blocks, 3 RESYNCH");
	cr_assert_gt(st.commands[0x63], offs, "the card was powered off");
	ccidsim_fault(d, CS_NONE, 0);
	char rn[MAX_READERNAME];
	DWORD rnl = sizeof(rn), state = 0, proto = 0, al = MAX_ATR_SIZE;
	uint8_t atr[MAX_ATR_SIZE];
	SCardStatus(h, rn, &rnl, &state, &proto, atr, &al);
	cr_assert(!(state & SCARD_POWERED), "state 0x%lX", (unsigned long)state);
	rl = sizeof(resp);
	assert_rv(SCardTransmit(h, SCARD_PCI_T1, apdu, 4, NULL, resp, &rl), SCARD_W_UNPOWERED_CARD);
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &proto),
	          SCARD_S_SUCCESS);
	check_echo(h, 20);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

static void movement(bool intr)
{
	struct ccidsim_cfg cfg = { .intr = intr, .features = LVL_SHORT | AUTO };
	ccidsim_dev *d = ccidsim_add(&cfg);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY);
	rs.dwCurrentState = rs.dwEventState;
	struct ccidsim_card c = card_t0();
	ccidsim_insert(d, 0, &c);
	assert_rv(SCardGetStatusChange(ctx, 5000, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_assert_eq(rs.cbAtr, sizeof(ATR_T0));
	rs.dwCurrentState = rs.dwEventState;
	ccidsim_eject(d, 0);
	assert_rv(SCardGetStatusChange(ctx, 5000, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY);
}

Test(ccid, card_movement_from_interrupt_pipe)
{
	movement(true);
}

Test(ccid, card_movement_polled_without_interrupt_pipe)
{
	movement(false);
}

Test(ccid, hotplug_arrival_and_removal)
{
	SCARD_READERSTATE pnp = { .szReader = "\\\\?PnP?\\Notification" };
	LONG rv0 = SCardGetStatusChange(ctx, 0, &pnp, 1);
	cr_assert(rv0 == SCARD_S_SUCCESS || rv0 == SCARD_E_TIMEOUT);
	pnp.dwCurrentState = pnp.dwEventState;
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO };
	ccidsim_dev *d = ccidsim_add(&cfg);
	assert_rv(SCardGetStatusChange(ctx, 5000, &pnp, 1), SCARD_S_SUCCESS);
	pnp.dwCurrentState = pnp.dwEventState;
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);

	struct ccidsim_card c = card_t0();
	ccidsim_insert(d, 0, &c);
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	          SCARD_S_SUCCESS);
	ccidsim_unplug(d);
	assert_rv(SCardGetStatusChange(ctx, 5000, &pnp, 1), SCARD_S_SUCCESS);
	cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x00 }, resp[8];
	DWORD rl = sizeof(resp);
	LONG rv = SCardTransmit(h, SCARD_PCI_T0, apdu, 4, NULL, resp, &rl);
	cr_assert(rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_W_REMOVED_CARD, "%s", err(rv));
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, interface_held_by_another_process)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO, .busy = true };
	ccidsim_dev *d = ccidsim_add(&cfg);
	struct ccidsim_card c = card_t0();
	ccidsim_insert(d, 0, &c);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1, "a busy reader is still listed");
	SCARDHANDLE h;
	DWORD proto;
	SCARD_READERSTATE rs = { .szReader = name };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	cr_assert(rs.dwEventState & SCARD_STATE_UNAVAILABLE);
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	          SCARD_E_SHARING_VIOLATION);
	ccidsim_set_busy(d, false);
	/* The backend claims it again on its next scan and reports the card. */
	bt_wait_state(ctx, name, SCARD_STATE_PRESENT);
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	          SCARD_S_SUCCESS);
	select_ok(h, SCARD_S_SUCCESS);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, direct_connection_to_a_held_interface_is_a_sharing_violation)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO, .busy = true,
	                           .pin_support = 3 };
	ccidsim_add(&cfg);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_DIRECT, 0, &h, &proto), SCARD_S_SUCCESS);
	uint8_t out[64];
	DWORD ol;
	assert_rv(SCardControl(h, CALAIS__CCID_IOCTL(FEATURE_IFD_PIN_PROPERTIES), NULL, 0, out,
	                       sizeof(out), &ol),
	          SCARD_E_SHARING_VIOLATION);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, mute_card_after_each_voltage)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU, .voltage = 7 };
	ccidsim_dev *d = ccidsim_add(&cfg);
	struct ccidsim_card c = card_t0();
	c.mute = true;
	ccidsim_insert(d, 0, &c);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	bt_wait_state(ctx, name, SCARD_STATE_MUTE);
	unsigned ons = ccidsim_stats(d).commands[0x62];
	cr_assert_eq(ons, 3, "1.8 V, 3 V and 5 V tried: %u power-ons", ons);
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	          SCARD_W_UNRESPONSIVE_CARD);
}

/* ---- part 10 ------------------------------------------------------------------------ */

static uint32_t feature(SCARDHANDLE h, uint8_t tag)
{
	uint8_t out[256];
	DWORD ol = 0;
	assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), &ol),
	          SCARD_S_SUCCESS);
	for (DWORD i = 0; i + 6 <= ol; i += 6)
		if (out[i] == tag)
			return (uint32_t)out[i + 2] << 24 | out[i + 3] << 16 | out[i + 4] << 8 | out[i + 5];
	return 0;
}

Test(ccid, pinpad_features_and_secure_verify)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO, .pin_support = 3 };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	uint32_t verify = feature(h, FEATURE_VERIFY_PIN_DIRECT);
	cr_assert_neq(verify, 0);
	cr_assert_neq(feature(h, FEATURE_MODIFY_PIN_DIRECT), 0);
	cr_assert_neq(feature(h, FEATURE_IFD_PIN_PROPERTIES), 0);
	cr_assert_neq(feature(h, FEATURE_GET_TLV_PROPERTIES), 0);
	cr_assert_eq(feature(h, FEATURE_CCID_ESC_COMMAND), 0, "escape is off by default");

	/* PIN_VERIFY_STRUCTURE with VERIFY 00 20 00 81 08 + 8 bytes of PIN block. */
	uint8_t in[19 + 13] = { 30, 30, 0x82, 0x08, 0x00, 8, 4, 0x02, 1, 0x09, 0x04, 0, 0, 0, 0,
	                        13, 0, 0, 0, 0x00, 0x20, 0x00, 0x81, 0x08, 0x20, 0xFF, 0xFF,
	                        0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
	uint8_t out[32];
	DWORD ol = 0;
	assert_rv(SCardControl(h, verify, in, sizeof(in), out, sizeof(out), &ol), SCARD_S_SUCCESS);
	cr_assert(ol == 2 && out[0] == 0x90 && out[1] == 0x00);
	struct ccidsim_stats st = ccidsim_stats(d);
	/* bPINOperation 0, bTimeOut, then the structure without bTimerOut2 and ulDataLength. */
	cr_assert_eq(st.last_secure_len, 1 + 1 + 13 + 13);
	cr_assert_eq(st.last_secure[0], 0x00);
	cr_assert_eq(st.last_secure[1], 30);
	cr_assert_eq(st.last_secure[2], 0x82);
	cr_assert_eq(memcmp(st.last_secure + 15, in + 19, 13), 0);

	ccidsim_fault(d, CS_PIN_TIMEOUT, 1);
	assert_rv(SCardControl(h, verify, in, sizeof(in), out, sizeof(out), &ol), SCARD_S_SUCCESS);
	cr_assert(ol == 2 && out[0] == 0x64 && out[1] == 0x00, "PIN timeout gives 64 00");

	in[15] = 12; /* ulDataLength disagrees with the bytes given */
	assert_rv(SCardControl(h, verify, in, sizeof(in), out, sizeof(out), &ol),
	          SCARD_E_INVALID_PARAMETER);

	uint8_t props[4];
	assert_rv(SCardControl(h, feature(h, FEATURE_IFD_PIN_PROPERTIES), NULL, 0, props,
	                       sizeof(props), &ol),
	          SCARD_S_SUCCESS);
	cr_assert_eq(ol, 4);
	uint8_t esc[3] = { 1, 2, 3 };
	assert_rv(SCardControl(h, CALAIS__CCID_IOCTL(FEATURE_CCID_ESC_COMMAND), esc, 3, out,
	                       sizeof(out), &ol),
	          SCARD_E_UNSUPPORTED_FEATURE);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* PIN verify over T=1 blocks (TPDU level): the reader builds the I-block with our N(S),
 * the card's block comes back and is checked like any other; one with a bad EDC fails
 * the call, and the block protocol is resynchronised, so the next APDU gets its own
 * answer (not the PIN's). */
Test(ccid, secure_verify_over_t1_blocks_checks_the_answer_block)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU | 0xBE, .max_msg = 271,
	                           .pin_support = 3 };
	for (int crc = 0; crc < 2; crc++) {
		struct ccidsim_card c = crc ? card_t1_crc() : card_t1();
		ccidsim_dev *d;
		SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
		uint32_t verify = feature(h, FEATURE_VERIFY_PIN_DIRECT);
		uint8_t in[19 + 13] = { 30, 30, 0x82, 0x08, 0x00, 8, 4, 0x02, 1, 0x09, 0x04, 0, 0,
		                        0, 0, 13, 0, 0, 0, 0x00, 0x20, 0x00, 0x81, 0x08, 0x20,
		                        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
		uint8_t out[32];
		DWORD ol = 0;
		check_echo(h, 40);
		assert_rv(SCardControl(h, verify, in, sizeof(in), out, sizeof(out), &ol),
		          SCARD_S_SUCCESS);
		cr_assert(ol == 2 && out[0] == 0x90 && out[1] == 0x00, "%lu bytes", (unsigned long)ol);
		check_echo(h, 40);
		ccidsim_fault(d, CS_PIN_BAD_EDC, 1);
		assert_rv(SCardControl(h, verify, in, sizeof(in), out, sizeof(out), &ol),
		          SCARD_F_COMM_ERROR);
		check_echo(h, 40);
		check_source(h, 300);
		SCardDisconnect(h, SCARD_LEAVE_CARD);
		ccidsim_unplug(d);
		cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	}
}

Test(ccid, escape_when_enabled)
{
	calais_shutdown();
	struct calais_config conf;
	calais_config_init(&conf);
	conf.backends = "ccid";
	conf.ccid_escape = true;
	assert_rv(calais_start(&conf), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO };
	ccidsim_add(&cfg);
	char name[MAX_READERNAME];
	cr_assert_eq(bt_wait_readers(ctx, 1, name), 1);
	SCARDHANDLE h;
	DWORD proto, ol;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_DIRECT, 0, &h, &proto), SCARD_S_SUCCESS);
	uint32_t code = feature(h, FEATURE_CCID_ESC_COMMAND);
	cr_assert_neq(code, 0);
	uint8_t esc[3] = { 1, 2, 3 }, out[16];
	assert_rv(SCardControl(h, code, esc, 3, out, sizeof(out), &ol), SCARD_S_SUCCESS);
	cr_assert(ol == 3 && memcmp(out, esc, 3) == 0);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, pinpad_modify_structure)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO, .pin_support = 2,
	                           .lcd_layout = 0x0210 };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	cr_assert_eq(feature(h, FEATURE_VERIFY_PIN_DIRECT), 0, "bPINSupport 2: modify only");
	uint32_t modify = feature(h, FEATURE_MODIFY_PIN_DIRECT);
	cr_assert_neq(modify, 0);
	/* PIN_MODIFY_STRUCTURE, bNumberMessage 3, then CHANGE REFERENCE DATA 00 24 00 81 10
	 * + 16 bytes. */
	uint8_t in[24 + 21] = { 30, 30, 0x82, 0x08, 0x00, 0, 8, 8, 4, 0x03, 0x02, 3, 0x09, 0x04,
	                        0, 1, 2, 0, 0, 0, 21, 0, 0, 0, 0x00, 0x24, 0x00, 0x81, 0x10 };
	uint8_t out[8];
	DWORD ol;
	assert_rv(SCardControl(h, modify, in, sizeof(in), out, sizeof(out), &ol), SCARD_S_SUCCESS);
	struct ccidsim_stats st = ccidsim_stats(d);
	/* bPINOperation 1, bTimeOut, 13 bytes up to bMsgIndex1, bMsgIndex2 and 3 (three
	 * messages), bTeoPrologue, the APDU. */
	cr_assert_eq(st.last_secure_len, 1 + 1 + 13 + 2 + 3 + 21);
	cr_assert_eq(st.last_secure[0], 0x01);
	cr_assert_eq(st.last_secure[15], 1);
	cr_assert_eq(st.last_secure[16], 2);
	cr_assert_eq(memcmp(st.last_secure + 20, in + 24, 21), 0);

	uint8_t tlv[64];
	assert_rv(SCardControl(h, feature(h, FEATURE_GET_TLV_PROPERTIES), NULL, 0, tlv, sizeof(tlv),
	                       &ol),
	          SCARD_S_SUCCESS);
	bool layout = false;
	for (DWORD i = 0; i + 2 <= ol; i += 2u + tlv[i + 1])
		if (tlv[i] == PCSCv2_PART10_PROPERTY_wLcdLayout)
			layout = tlv[i + 1] == 2 && tlv[i + 2] == 0x10 && tlv[i + 3] == 0x02;
	cr_assert(layout, "wLcdLayout in the TLV properties");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(ccid, warm_reset_on_reconnect)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_TPDU | 0xBE, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	check_echo(h, 40);
	unsigned ons = ccidsim_stats(d).commands[0x62], offs = ccidsim_stats(d).commands[0x63];
	DWORD proto;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &proto),
	          SCARD_S_SUCCESS);
	struct ccidsim_stats st = ccidsim_stats(d);
	cr_assert_eq(st.commands[0x62], ons + 1, "one IccPowerOn");
	cr_assert_eq(st.commands[0x63], offs, "no power-off for a warm reset");
	check_echo(h, 40); /* the T=1 state starts afresh */
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_UNPOWER_CARD, &proto),
	          SCARD_S_SUCCESS);
	cr_assert_gt(ccidsim_stats(d).commands[0x63], offs, "unpower: IccPowerOff");
	check_echo(h, 40);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* ---- transport faults ------------------------------------------------------------------ */

/* Injects one fault into a SELECT; checks its PC/SC code, the recovery the transport
 * needed (clear halt after a stall, the abort procedure after a timeout) and that the
 * next command works again. */
static void fault_case(enum ccidsim_fault f, LONG want, bool aborts)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
	struct ccidsim_stats before = ccidsim_stats(d);
	ccidsim_fault(d, f, 1);
	select_ok(h, want);
	struct ccidsim_stats after = ccidsim_stats(d);
	if (f == CS_STALL_IN || f == CS_STALL_OUT)
		cr_assert_gt(after.clear_halts, before.clear_halts, "clear halt after a stall");
	cr_assert_eq(after.class_aborts - before.class_aborts, aborts ? 1u : 0u, "ABORT requests");
	cr_assert_eq(after.commands[0x72] - before.commands[0x72], aborts ? 1u : 0u,
	             "PC_to_RDR_Abort messages");
	select_ok(h, SCARD_S_SUCCESS);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* A card the interrupt pipe reports (readers queue a NotifySlotChange for a card present
 * at enumeration) needs no presence probe: none may come after the card is shown, where
 * it would take a fault (or a slot) armed for the application's next command. */
Test(ccid, no_presence_probe_after_the_interrupt_pipe_told)
{
	for (int round = 0; round < 5; round++) {
		struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO };
		struct ccidsim_card c = card_t0();
		ccidsim_dev *d;
		SCARDHANDLE h = reader_with_card(&cfg, &c, &d, NULL);
		unsigned probes = ccidsim_stats(d).commands[0x65];
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		cr_assert_eq(ccidsim_stats(d).commands[0x65], probes,
		             "round %d: GetSlotStatus sent after the card was shown", round);
		SCardDisconnect(h, SCARD_LEAVE_CARD);
		ccidsim_unplug(d);
		cr_assert_eq(bt_wait_readers(ctx, 0, NULL), 0);
	}
}

Test(ccid, fault_stale_seq_is_skipped)
{
	fault_case(CS_STALE_SEQ, SCARD_S_SUCCESS, false);
}

Test(ccid, fault_wrong_seq_is_a_comm_error)
{
	fault_case(CS_WRONG_SEQ, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_short_reply)
{
	fault_case(CS_SHORT, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_garbage_reply)
{
	fault_case(CS_GARBAGE, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_length_beyond_the_bytes)
{
	fault_case(CS_BAD_LENGTH, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_oversized_reply)
{
	fault_case(CS_OVERSIZED, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_stall_out)
{
	fault_case(CS_STALL_OUT, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_stall_in)
{
	fault_case(CS_STALL_IN, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_time_extensions_honoured)
{
	fault_case(CS_TIME_EXT, SCARD_S_SUCCESS, false);
}

Test(ccid, fault_time_extension_storm_aborted)
{
	fault_case(CS_TIME_EXT_STORM, SCARD_F_COMM_ERROR, true);
}

Test(ccid, fault_mute_reader_times_out_and_aborts)
{
	fault_case(CS_MUTE, SCARD_E_TIMEOUT, true);
}

Test(ccid, fault_hardware_error)
{
	fault_case(CS_FAIL_HW, SCARD_F_COMM_ERROR, false);
}

Test(ccid, fault_device_gone_mid_transfer)
{
	struct ccidsim_cfg cfg = { .intr = true, .features = LVL_SHORT | AUTO };
	struct ccidsim_card c = card_t0();
	ccidsim_dev *d;
	char name[MAX_READERNAME];
	SCARDHANDLE h = reader_with_card(&cfg, &c, &d, name);
	ccidsim_fault(d, CS_GONE, 1);
	select_ok(h, SCARD_E_READER_UNAVAILABLE);
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_PRESENT };
	for (int i = 0; i < 50 && bt_list(ctx, 0, NULL) != 0; i++)
		usleep(20000);
	cr_assert_eq(bt_list(ctx, 0, NULL), 0, "the reader is removed");
	(void)rs;
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* ---- ICCD -------------------------------------------------------------------------------- */

Test(ccid, iccd_version_b_apdus_with_chaining_and_polling)
{
	struct ccidsim_cfg cfg = { .iface_protocol = 2, .intr = true,
	                           .features = LVL_EXT | AUTO, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	SCARDHANDLE h = reader_with_card(&cfg, &c, NULL, NULL);
	select_ok(h, SCARD_S_SUCCESS);
	check_echo(h, 200);
	check_source(h, 600); /* three data blocks, chained */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

struct xmit_call {
	SCARDHANDLE h;
	LONG rv;
	long ended_ms;
};

static void *select_thread(void *arg)
{
	struct xmit_call *c = arg;
	uint8_t apdu[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 }, resp[258];
	DWORD rl = sizeof(resp);
	c->rv = SCardTransmit(c->h, SCARD_PCI_T1, apdu, sizeof(apdu), NULL, resp, &rl);
	c->ended_ms = bt_now_ms();
	return NULL;
}

/* An ICCD token answering "poll again in 655 s": the wait is sliced and ends as soon as
 * the device goes (it was one sleep of 655 s). */
Test(ccid, iccd_poll_again_ends_when_the_device_goes)
{
	struct ccidsim_cfg cfg = { .iface_protocol = 2, .intr = true,
	                           .features = LVL_EXT | AUTO, .max_msg = 271 };
	struct ccidsim_card c = card_t1();
	ccidsim_dev *d;
	struct xmit_call call = { .h = reader_with_card(&cfg, &c, &d, NULL) };
	ccidsim_iccd_delay(d, 0xFFFF);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, select_thread, &call), 0);
	usleep(100000);
	long t0 = bt_now_ms();
	ccidsim_unplug(d);
	pthread_join(th, NULL);
	assert_rv(call.rv, SCARD_E_READER_UNAVAILABLE);
	double slow = getenv("CALAIS_TEST_UNDER_VALGRIND") ? 20.0 : 1.0;
	cr_assert_lt(call.ended_ms - t0, (long)(1000 * slow), "ended %ld ms after the unplug",
	             call.ended_ms - t0);
	SCardDisconnect(call.h, SCARD_LEAVE_CARD);
}

Test(ccid, iccd_version_a_t0_tpdus)
{
	struct ccidsim_cfg cfg = { .iface_protocol = 1, .features = LVL_SHORT | AUTO };
	struct ccidsim_card c = card_t0();
	SCARDHANDLE h = reader_with_card(&cfg, &c, NULL, NULL);
	select_ok(h, SCARD_S_SUCCESS);
	check_echo(h, 100);  /* header, data, 61xx, GET RESPONSE */
	check_source(h, 30); /* header, data block, SW */
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}
