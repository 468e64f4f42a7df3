/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* End-to-end test of the CCID backend on QEMU's emulated usb-ccid readers, run inside
 * the guest by tests/qemu/run. Written only against the standard PC/SC API, so the same
 * source also builds against pcsc-lite.
 *
 * The guest has two readers, told apart by their USB serial number, which is part of
 * the reader name ("QEMU QEMU USB CCID [CCID Interface] (PASS) 00 00" in pcsc-lite's
 * style):
 *   (PASS)  ccid-card-passthru with the host's scripted card (tests/qemu/vscard.py)
 *   (EMUL)  ccid-card-emulated: libcacard's CAC card
 * Lines the host reacts to (tests/qemu/orchestrate.py):
 *   SLOTWATCH-READY  the host pulls the scripted card 0.5 s later, and inserts it again
 *                    1 s after that with ATR 3B 88 80 01 "TESTCRD1" 7B
 *   HOTPLUG-READY    the host unplugs reader EMUL 0.5 s later, and plugs it back 1 s
 *                    after it is gone
 * Output is TAP: "ok N - ..." / "not ok N - ... (rv=0x...)", the plan last. The exit
 * status is 0 only when every check passed. -v: CALAIS_LOG=debug. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <winscard.h>
#include <reader.h>

#include "guest-tap.h"

#define WAIT_MS 10000
#define PNP_NAME "\\\\?PnP?\\Notification"

static const BYTE ATR_PASS[] = { 0x3B, 0x08, 'T', 'E', 'S', 'T', 'C', 'A', 'R', 'D' };
static const BYTE ATR_PASS2[] = { 0x3B, 0x88, 0x80, 0x01, 'T', 'E', 'S', 'T',
	                          'C',  'R',  'D',  '1',  0x7B };
static const BYTE ATR_EMUL[] = { 0x3B, 0x7A, 0x18, 0x00, 0x00, 0x73, 0x66, 0x74,
	                         0x65, 0x20, 0x63, 0x64, 0x31, 0x34, 0x34 };
static const BYTE TEST_AID[] = { 0xF0, 0x01, 0x02, 0x03, 0x04, 0x05 };
static const BYTE SELECT_CAC[] = { 0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00,
	                           0x00, 0x00, 0x79, 0x01, 0x00 };

static BYTE resp[MAX_BUFFER_SIZE_EXTENDED];

static const char *proto_name(DWORD p)
{
	return p == SCARD_PROTOCOL_T0 ? "T=0" : p == SCARD_PROTOCOL_T1 ? "T=1" : "other";
}

/* ---- readers ------------------------------------------------------------------------- */

struct readers {
	unsigned total, qemu;
	char pass[256], emul[256];
};

/* Lists the readers; finds the two QEMU ones by the USB serial number in their names
 * (libccid, for one, names them after its own table entry for QEMU's Gemplus VID/PID,
 * "Gemalto Gemplus USB SmartCard Reader 433-Swap [CCID Interface] (PASS) 01 00"). */
static LONG list_readers(SCARDCONTEXT ctx, struct readers *r)
{
	DWORD len = 0;
	memset(r, 0, sizeof(*r));
	LONG rv = SCardListReaders(ctx, NULL, NULL, &len);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	char *m = malloc(len ? len : 1);
	if (!m)
		return SCARD_E_NO_MEMORY;
	rv = SCardListReaders(ctx, NULL, m, &len);
	for (const char *p = m; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1) {
		r->total++;
		if (strstr(p, "(PASS)")) {
			r->qemu++;
			snprintf(r->pass, sizeof(r->pass), "%s", p);
		} else if (strstr(p, "(EMUL)")) {
			r->qemu++;
			snprintf(r->emul, sizeof(r->emul), "%s", p);
		}
	}
	free(m);
	return rv;
}

/* Waits until the reader's state has one of the bits in want; rs is kept up to date. */
static bool wait_state(SCARDCONTEXT ctx, SCARD_READERSTATE *rs, DWORD want, LONG *rv)
{
	long deadline = now_ms() + WAIT_MS;
	for (int rounds = 0; rounds < 1000; rounds++) {
		if (rs->dwCurrentState & want)
			return true;
		long left = deadline - now_ms();
		if (left <= 0) {
			*rv = SCARD_E_TIMEOUT;
			return false;
		}
		*rv = SCardGetStatusChange(ctx, (DWORD)left, rs, 1);
		if (*rv != SCARD_S_SUCCESS)
			return false;
		printf("# %s: state 0x%08lX\n", rs->szReader, (unsigned long)rs->dwEventState);
		rs->dwCurrentState = rs->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	}
	return false;
}

/* ---- APDUs --------------------------------------------------------------------------- */

static LONG transmit(SCARDHANDLE h, DWORD proto, const BYTE *apdu, DWORD n, DWORD *len)
{
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
	*len = sizeof(resp);
	return SCardTransmit(h, pci, apdu, n, NULL, resp, len);
}

/* Sends apdu; the check passes when the answer is exactly want. */
static void apdu_check(SCARDHANDLE h, DWORD proto, const char *what, const BYTE *apdu, DWORD n,
                       const BYTE *want, DWORD want_len)
{
	DWORD len;
	LONG rv = transmit(h, proto, apdu, n, &len);
	bool ok = rv == SCARD_S_SUCCESS && len == want_len && memcmp(resp, want, len) == 0;
	if (!ok && rv == SCARD_S_SUCCESS) {
		diag_hex("command", apdu, n);
		diag_hex("expected", want, want_len);
		diag_hex("got", resp, len);
	}
	check(ok, rv, "%s", what);
}

/* what: data of n bytes, then 90 00 */
static DWORD with_sw(BYTE *b, DWORD n)
{
	b[n] = 0x90;
	b[n + 1] = 0x00;
	return n + 2;
}

static void echo_check(SCARDHANDLE h, DWORD proto, DWORD n)
{
	BYTE apdu[5 + 255 + 1], want[255 + 2];
	const BYTE hdr[] = { 0x80, 0xEE, 0x00, 0x00, (BYTE)n };
	memcpy(apdu, hdr, 5);
	for (DWORD i = 0; i < n; i++)
		apdu[5 + i] = want[i] = (BYTE)(i * 13 + 5);
	apdu[5 + n] = 0x00; /* Le */
	char what[64];
	snprintf(what, sizeof(what), "PASS: echo of %lu bytes", (unsigned long)n);
	apdu_check(h, proto, what, apdu, 6 + n, want, with_sw(want, n));
}

static void source_check(SCARDHANDLE h, DWORD proto, DWORD n)
{
	static BYTE want[65536 + 2];
	BYTE apdu[7] = { 0x80, 0xEF, (BYTE)(n >> 8), (BYTE)n };
	DWORD alen;
	if (n <= 256) { /* short Le (00 = 256) */
		apdu[4] = (BYTE)n;
		alen = 5;
	} else { /* extended Le */
		apdu[4] = 0x00;
		apdu[5] = (BYTE)(n >> 8);
		apdu[6] = (BYTE)n;
		alen = 7;
	}
	for (DWORD i = 0; i < n; i++)
		want[i] = (BYTE)i;
	char what[128];
	snprintf(what, sizeof(what), "PASS: source of %lu bytes%s", (unsigned long)n,
	         n > 256 ? " (extended Le; 374 bytes is the most QEMU's usb-ccid returns)" : "");
	apdu_check(h, proto, what, apdu, alen, want, with_sw(want, n));
}

/* Connects (shared, T=0|T=1) and checks the ATR SCardStatus reports, and that the
 * name it reports is the reader's. Returns false when the connection failed. */
static bool connect_with_atr(SCARDCONTEXT ctx, const char *reader, const char *label,
                             const BYTE *want, size_t want_len, const char *atr_text,
                             SCARDHANDLE *h, DWORD *proto)
{
	LONG rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED,
	                       SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, h, proto);
	check(rv == SCARD_S_SUCCESS, rv, "%s: SCardConnect shared, T=0|T=1 (active: %s)", label,
	      proto_name(*proto));
	if (rv != SCARD_S_SUCCESS)
		return false;
	char name[512];
	BYTE atr[MAX_ATR_SIZE];
	DWORD nlen = sizeof(name), state = 0, sproto = 0, alen = sizeof(atr);
	rv = SCardStatus(*h, name, &nlen, &state, &sproto, atr, &alen);
	if (rv == SCARD_S_SUCCESS)
		diag_hex("ATR", atr, alen);
	check(rv == SCARD_S_SUCCESS && alen == want_len && memcmp(atr, want, alen) == 0 &&
	              strcmp(name, reader) == 0,
	      rv, "%s: SCardStatus: ATR %s, state 0x%lX", label, atr_text, (unsigned long)state);
	return true;
}

/* ---- the scripted card on reader PASS ------------------------------------------------ */

static void test_pass(SCARDCONTEXT ctx, const char *reader)
{
	SCARDHANDLE h;
	DWORD proto = 0;
	LONG rv;
	if (!connect_with_atr(ctx, reader, "PASS", ATR_PASS, sizeof(ATR_PASS),
	                      "3B 08 \"TESTCARD\"", &h, &proto))
		return;

	BYTE want[512];
	const BYTE select[] = { 0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x01, 0x02, 0x03, 0x04, 0x05 };
	const BYTE fci[] = { 0x6F, 0x08, 0x84, 0x06 };
	memcpy(want, fci, 4);
	memcpy(want + 4, TEST_AID, sizeof(TEST_AID));
	apdu_check(h, proto, "PASS: SELECT F0 01 02 03 04 05 -> FCI 90 00", select, sizeof(select),
	           want, with_sw(want, 4 + sizeof(TEST_AID)));

	echo_check(h, proto, 10);
	echo_check(h, proto, 200);
	source_check(h, proto, 2);
	source_check(h, proto, 256);
	source_check(h, proto, 372);

	const BYTE chain[] = { 0x80, 0xC6, 0x00, 0xC8, 0x00 };
	for (DWORD i = 0; i < 200; i++)
		want[i] = (BYTE)(i * 7);
	apdu_check(h, proto, "PASS: 61 C8 followed by the library (GET RESPONSE): 200 bytes 90 00",
	           chain, sizeof(chain), want, with_sw(want, 200));

	const BYTE unknown[] = { 0x80, 0x6A, 0x00, 0x00 };
	const BYTE sw6d00[] = { 0x6D, 0x00 };
	apdu_check(h, proto, "PASS: unknown INS -> 6D 00", unknown, sizeof(unknown), sw6d00, 2);

	/* QEMU 7.2 drops an answer of more than 374 bytes without a word: the card answers
	 * 400 bytes to a TPDU that asked for 256. The library must time out, abort and
	 * leave the reader usable, not hang. */
	const BYTE too_long[] = { 0x80, 0xEF, 0x01, 0x90, 0x00 };
	DWORD len;
	long t0 = now_ms();
	rv = transmit(h, proto, too_long, sizeof(too_long), &len);
	long took = now_ms() - t0;
	check(rv != SCARD_S_SUCCESS && took < 15000, rv,
	      "PASS: a 402-byte answer (dropped by QEMU) fails in %ld ms instead of hanging", took);
	apdu_check(h, proto, "PASS: unknown INS -> 6D 00 again: the reader recovered", unknown,
	           sizeof(unknown), sw6d00, 2);

	BYTE attr[MAX_BUFFER_SIZE]; /* pcsc-lite refuses a larger buffer (INSUFFICIENT_BUFFER) */
	DWORD attr_len = sizeof(attr);
	rv = SCardGetAttrib(h, SCARD_ATTR_ATR_STRING, attr, &attr_len);
	check(rv == SCARD_S_SUCCESS && attr_len == sizeof(ATR_PASS) &&
	              memcmp(attr, ATR_PASS, attr_len) == 0,
	      rv, "PASS: SCardGetAttrib(SCARD_ATTR_ATR_STRING) is the ATR");

	attr_len = sizeof(attr);
	rv = SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, attr, &attr_len);
	char vendor[MAX_BUFFER_SIZE + 1] = "";
	if (rv == SCARD_S_SUCCESS)
		snprintf(vendor, sizeof(vendor), "%.*s", (int)attr_len, (const char *)attr);
	check(rv == SCARD_S_SUCCESS && strstr(vendor, "QEMU") != NULL, rv,
	      "PASS: SCardGetAttrib(SCARD_ATTR_VENDOR_NAME) is \"%s\" (the USB iManufacturer: QEMU)",
	      vendor);

	rv = SCardDisconnect(h, SCARD_LEAVE_CARD);
	check(rv == SCARD_S_SUCCESS, rv, "PASS: SCardDisconnect");
}

/* ---- libcacard's CAC card on reader EMUL --------------------------------------------- */

static void test_emul(SCARDCONTEXT ctx, const char *reader, const char *label)
{
	SCARDHANDLE h;
	DWORD proto = 0;
	LONG rv;
	if (!connect_with_atr(ctx, reader, label, ATR_EMUL, sizeof(ATR_EMUL),
	                      "3B 7A 18 00 00 73 66 74 65 20 63 64 31 34 34", &h, &proto))
		return;

	DWORD len;
	rv = transmit(h, proto, SELECT_CAC, sizeof(SELECT_CAC), &len);
	if (rv == SCARD_S_SUCCESS)
		diag_hex("SELECT CAC answer", resp, len);
	check(rv == SCARD_S_SUCCESS && len > 2 && resp[len - 2] == 0x90 && resp[len - 1] == 0x00, rv,
	      "%s: SELECT A0 00 00 00 79 01 00: data and 90 00 (the library follows 61 0D)", label);

	rv = SCardDisconnect(h, SCARD_LEAVE_CARD);
	check(rv == SCARD_S_SUCCESS, rv, "%s: SCardDisconnect", label);
}

/* ---- card removal and insertion on reader PASS --------------------------------------- */

static void test_slot_watch(SCARDCONTEXT ctx, const char *reader)
{
	SCARD_READERSTATE rs;
	memset(&rs, 0, sizeof(rs));
	rs.szReader = reader;
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	LONG rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	check(rv == SCARD_S_SUCCESS && (rs.dwEventState & SCARD_STATE_PRESENT), rv,
	      "PASS: SCardGetStatusChange: card present (state 0x%08lX)",
	      (unsigned long)rs.dwEventState);
	if (rv != SCARD_S_SUCCESS)
		return;
	rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;

	printf("SLOTWATCH-READY\n");
	fflush(stdout);
	long t0 = now_ms();
	bool ok = wait_state(ctx, &rs, SCARD_STATE_EMPTY, &rv);
	check(ok, rv, "PASS: card removal seen: SCARD_STATE_EMPTY after %ld ms", now_ms() - t0);
	if (!ok)
		return;
	t0 = now_ms();
	ok = wait_state(ctx, &rs, SCARD_STATE_PRESENT, &rv);
	if (ok)
		diag_hex("ATR in the reader state", rs.rgbAtr, rs.cbAtr);
	check(ok && rs.cbAtr == sizeof(ATR_PASS2) && memcmp(rs.rgbAtr, ATR_PASS2, rs.cbAtr) == 0, rv,
	      "PASS: card insertion seen: SCARD_STATE_PRESENT with ATR 3B 88 80 01 \"TESTCRD1\" 7B "
	      "after %ld ms", now_ms() - t0);
	if (!ok)
		return;

	/* The new ATR offers T=0 and T=1; the reader (dwProtocols) only T=0. */
	SCARDHANDLE h;
	DWORD proto = 0;
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h,
	                  &proto);
	check(rv == SCARD_S_SUCCESS && proto == SCARD_PROTOCOL_T0, rv,
	      "PASS: SCardConnect to the new card: T=0, the only protocol the reader has (active: %s)",
	      proto_name(proto));
	if (rv != SCARD_S_SUCCESS)
		return;
	BYTE want[16];
	const BYTE select[] = { 0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x01, 0x02, 0x03, 0x04, 0x05 };
	const BYTE fci[] = { 0x6F, 0x08, 0x84, 0x06 };
	memcpy(want, fci, 4);
	memcpy(want + 4, TEST_AID, sizeof(TEST_AID));
	apdu_check(h, proto, "PASS: SELECT on the new card", select, sizeof(select), want,
	           with_sw(want, 4 + sizeof(TEST_AID)));
	rv = SCardDisconnect(h, SCARD_LEAVE_CARD);
	check(rv == SCARD_S_SUCCESS, rv, "PASS: SCardDisconnect");
}

/* ---- reader EMUL unplugged and plugged again ----------------------------------------- */

/* Keeps the PnP entry's current state in step: pcsc-lite reports the reader count in the
 * upper 16 bits, others an event counter; either way, what came back goes back. */
static void pnp_sync(SCARD_READERSTATE *pnp, unsigned total)
{
	if (pnp->dwEventState >> 16)
		pnp->dwCurrentState = pnp->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	else
		pnp->dwCurrentState = (DWORD)total << 16;
}

/* Waits on \\?PnP?\Notification until `want` QEMU readers are listed. */
static bool wait_qemu_readers(SCARDCONTEXT ctx, SCARD_READERSTATE *pnp, unsigned want,
                              struct readers *r, LONG *rv)
{
	long deadline = now_ms() + WAIT_MS;
	for (int rounds = 0; rounds < 1000; rounds++) {
		LONG lrv = list_readers(ctx, r);
		if (lrv != SCARD_S_SUCCESS && lrv != SCARD_E_NO_READERS_AVAILABLE) {
			*rv = lrv;
			return false;
		}
		if (r->qemu == want)
			return true;
		long left = deadline - now_ms();
		if (left <= 0) {
			*rv = SCARD_E_TIMEOUT;
			return false;
		}
		*rv = SCardGetStatusChange(ctx, (DWORD)left, pnp, 1);
		if (*rv == SCARD_E_TIMEOUT)
			continue; /* one last look at the list */
		if (*rv != SCARD_S_SUCCESS)
			return false;
		printf("# PnP: state 0x%08lX\n", (unsigned long)pnp->dwEventState);
		pnp_sync(pnp, r->total);
	}
	return false;
}

static void test_hotplug(SCARDCONTEXT ctx)
{
	struct readers r;
	LONG rv = list_readers(ctx, &r);
	SCARD_READERSTATE pnp;
	memset(&pnp, 0, sizeof(pnp));
	pnp.szReader = PNP_NAME;
	pnp.dwCurrentState = (DWORD)r.total << 16;
	rv = SCardGetStatusChange(ctx, 0, &pnp, 1);
	check(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, rv,
	      "PnP: SCardGetStatusChange(\\\\?PnP?\\Notification, %u readers << 16) answers "
	      "(state 0x%08lX)", r.total, (unsigned long)pnp.dwEventState);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT)
		return;
	pnp_sync(&pnp, r.total);

	printf("HOTPLUG-READY\n");
	fflush(stdout);
	long t0 = now_ms();
	bool ok = wait_qemu_readers(ctx, &pnp, 1, &r, &rv);
	check(ok && r.pass[0] && !r.emul[0], rv,
	      "PnP: reader EMUL unplugged: 1 QEMU reader left, seen after %ld ms", now_ms() - t0);
	if (!ok)
		return;
	t0 = now_ms();
	ok = wait_qemu_readers(ctx, &pnp, 2, &r, &rv);
	check(ok && r.pass[0] && r.emul[0], rv,
	      "PnP: reader EMUL plugged again: 2 QEMU readers, seen after %ld ms", now_ms() - t0);
	if (!ok || !r.emul[0])
		return;
	printf("# reader: %s\n", r.emul);

	/* QEMU adds the reader, then its card: wait for the card before using it. */
	SCARD_READERSTATE rs;
	memset(&rs, 0, sizeof(rs));
	rs.szReader = r.emul;
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(ctx, 0, &rs, 1);
	if (rv == SCARD_S_SUCCESS)
		rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	ok = rv == SCARD_S_SUCCESS && wait_state(ctx, &rs, SCARD_STATE_PRESENT, &rv);
	check(ok, rv, "EMUL (plugged again): card present");
	if (ok)
		test_emul(ctx, r.emul, "EMUL (plugged again)");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			setenv("CALAIS_LOG", "debug", 1);
		} else {
			fprintf(stderr, "usage: %s [-v]\n", argv[0]);
			return 2;
		}
	}
	setenv("CALAIS_BACKENDS", "ccid", 0);

	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	check(rv == SCARD_S_SUCCESS, rv, "SCardEstablishContext");
	if (rv == SCARD_S_SUCCESS) {
		/* a backend may announce its readers a little after the start */
		struct readers r;
		long deadline = now_ms() + WAIT_MS;
		do {
			rv = list_readers(ctx, &r);
			if (r.pass[0] && r.emul[0])
				break;
			sleep_ms(100);
		} while (now_ms() < deadline);
		for (int i = 0; i < 2; i++) {
			const char *n = i ? r.emul : r.pass;
			if (n[0])
				printf("# reader: %s%s\n", n,
				       strstr(n, "QEMU") ? "" : " (no \"QEMU\" in the name)");
		}
		check(r.pass[0] && r.emul[0], rv,
		      "SCardListReaders: readers (PASS) and (EMUL) found (%u readers, %u QEMU)",
		      r.total, r.qemu);

		if (r.pass[0])
			test_pass(ctx, r.pass);
		if (r.emul[0])
			test_emul(ctx, r.emul, "EMUL");
		if (r.pass[0])
			test_slot_watch(ctx, r.pass);
		if (r.pass[0] && r.emul[0])
			test_hotplug(ctx);

		rv = SCardReleaseContext(ctx);
		check(rv == SCARD_S_SUCCESS, rv, "SCardReleaseContext");
	}
	printf("1..%d\n", n_tests);
	printf("# %d of %d checks failed\n", n_failed, n_tests);
	return n_failed ? 1 : 0;
}
