/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* FIDO round trips on the guest kernel's HID stack, run inside the QEMU guest by
 * bench/fido/run, against the virtual authenticator on /dev/uhid (tests/hid/vauth-uhid):
 *   -s calais  through Calais: SCardTransmit on the [FIDO] reader (hid backend, hidraw)
 *   -s floor   hidapi alone: this program's own CTAPHID framing on hid_write/hid_read,
 *              the least any PC/SC stack on hidapi must do for the same exchange
 * Two exchanges, each WARMUP untimed then N timed times, every answer checked:
 *   version  U2F VERSION (APDU 00 03 00 00 00; CTAPHID_MSG 00 03 00 00 00 00 00) -> U2F_V2
 *   getinfo  CTAP2 authenticatorGetInfo (APDU 80 10 00 00 01 04 00; CTAPHID_CBOR 04)
 *
 *   fido_bench -s SIDE [-n N] [-w WARMUP] [-o DIR]
 *
 * Appends each exchange's round trips in microseconds, one a line, to DIR/SIDE-OP.us
 * (default DIR /tmp) and prints "BENCH-READY side=SIDE ready_ms=.." (from the start to
 * the first exchange possible). Exit status 0, or 1 on any error (a BENCH-ERROR line). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <winscard.h>

#include <hidapi.h>

#include "../bench-clock.h"

#define REPORT 64
#define WAIT_MS 10000
#define IO_MS 3000

static const BYTE APDU_VERSION[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
static const BYTE APDU_GETINFO[] = { 0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00 };
static const uint8_t MSG_VERSION[] = { 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t CBOR_GETINFO[] = { 0x04 };

static const char *side = "?";

static int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error(const char *fmt, ...)
{
	va_list ap;
	printf("BENCH-ERROR side=%s ", side);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return 1;
}

/* One exchange: the answer (status word included for Calais, the CTAPHID payload for the
 * floor) into out; false on any error. */
typedef bool (*exchange_fn)(void *ctx, int op, uint8_t *out, size_t *out_len);

/* ---- Calais -------------------------------------------------------------------------- */

struct calais_side {
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
};

static bool calais_exchange(void *p, int op, uint8_t *out, size_t *out_len)
{
	struct calais_side *c = p;
	DWORD n = (DWORD)*out_len;
	LONG rv = op == 0 ? SCardTransmit(c->h, SCARD_PCI_T1, APDU_VERSION, sizeof(APDU_VERSION),
	                                  NULL, out, &n)
	                  : SCardTransmit(c->h, SCARD_PCI_T1, APDU_GETINFO, sizeof(APDU_GETINFO),
	                                  NULL, out, &n);
	*out_len = n;
	return rv == SCARD_S_SUCCESS && n >= 2 && out[n - 2] == 0x90 && out[n - 1] == 0x00;
}

static bool calais_open(struct calais_side *c)
{
	setenv("CALAIS_BACKENDS", "hid", 0);
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c->ctx);
	if (rv != SCARD_S_SUCCESS)
		return error("SCardEstablishContext: 0x%08lX", (unsigned long)rv) == 0;
	char list[4096], *name = NULL;
	double end = now_us() + WAIT_MS * 1e3;
	while (!name && now_us() < end) {
		DWORD len = sizeof(list);
		if (SCardListReaders(c->ctx, NULL, list, &len) == SCARD_S_SUCCESS)
			for (char *p = list; *p && !name; p += strlen(p) + 1)
				if (strstr(p, "[FIDO]"))
					name = p;
		if (!name)
			sleep_us(50e3);
	}
	if (!name)
		return error("no [FIDO] reader within %d ms", WAIT_MS) == 0;
	DWORD proto;
	/* the card is powered (the channel made) on the reader's thread after listing */
	do
		rv = SCardConnect(c->ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &c->h, &proto);
	while (rv != SCARD_S_SUCCESS && now_us() < end && (sleep_us(50e3), true));
	if (rv != SCARD_S_SUCCESS)
		return error("SCardConnect: 0x%08lX", (unsigned long)rv) == 0;
	static const BYTE select[] = { 0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00,
		                       0x06, 0x47, 0x2F, 0x00, 0x01 };
	BYTE r[64];
	DWORD n = sizeof(r);
	rv = SCardTransmit(c->h, SCARD_PCI_T1, select, sizeof(select), NULL, r, &n);
	if (rv != SCARD_S_SUCCESS || n < 2 || r[n - 2] != 0x90)
		return error("SELECT of the FIDO AID: 0x%08lX", (unsigned long)rv) == 0;
	return true;
}

/* ---- the floor: hidapi and CTAPHID, nothing else -------------------------------------- */

struct floor_side {
	hid_device *dev;
	uint8_t cid[4]; /* as on the wire */
	uint8_t msg[7609];
};

static const uint8_t BROADCAST[4] = { 0xFF, 0xFF, 0xFF, 0xFF };

/* One CTAPHID message out: an initialisation packet, then continuations. */
static bool ctap_send(struct floor_side *f, const uint8_t *cid, uint8_t cmd, const uint8_t *d, size_t n)
{
	uint8_t rep[1 + REPORT];
	memset(rep, 0, sizeof(rep));
	memcpy(rep + 1, cid, 4);
	rep[5] = cmd;
	rep[6] = (uint8_t)(n >> 8);
	rep[7] = (uint8_t)n;
	size_t k = n < 57 ? n : 57;
	memcpy(rep + 8, d, k);
	if (hid_write(f->dev, rep, sizeof(rep)) != (int)sizeof(rep))
		return false;
	for (uint8_t seq = 0; k < n; seq++) {
		size_t m = n - k < 59 ? n - k : 59;
		memset(rep, 0, sizeof(rep));
		memcpy(rep + 1, cid, 4);
		rep[5] = seq;
		memcpy(rep + 6, d + k, m);
		k += m;
		if (hid_write(f->dev, rep, sizeof(rep)) != (int)sizeof(rep))
			return false;
	}
	return true;
}

/* The answer to cmd on cid into f->msg (keepalives and other channels skipped). */
static bool ctap_recv(struct floor_side *f, const uint8_t *cid, uint8_t cmd, size_t *len)
{
	uint8_t rep[REPORT];
	double end = now_us() + IO_MS * 1e3;
	for (;;) {
		int left = (int)((end - now_us()) / 1e3);
		if (left <= 0 || hid_read_timeout(f->dev, rep, sizeof(rep), left) != REPORT)
			return false;
		if (memcmp(rep, cid, 4) == 0 && rep[4] == cmd)
			break;
	}
	size_t n = (size_t)rep[5] << 8 | rep[6];
	if (n > sizeof(f->msg))
		return false;
	size_t got = n < 57 ? n : 57;
	memcpy(f->msg, rep + 7, got);
	for (uint8_t seq = 0; got < n; seq++) {
		int left = (int)((end - now_us()) / 1e3);
		if (left <= 0 || hid_read_timeout(f->dev, rep, sizeof(rep), left) != REPORT ||
		    memcmp(rep, cid, 4) != 0 || rep[4] != seq)
			return false;
		size_t m = n - got < 59 ? n - got : 59;
		memcpy(f->msg + got, rep + 5, m);
		got += m;
	}
	*len = n;
	return true;
}

static bool floor_exchange(void *p, int op, uint8_t *out, size_t *out_len)
{
	struct floor_side *f = p;
	uint8_t cmd = op == 0 ? 0x83 : 0x90;
	size_t n;
	bool ok = op == 0 ? ctap_send(f, f->cid, cmd, MSG_VERSION, sizeof(MSG_VERSION))
	                  : ctap_send(f, f->cid, cmd, CBOR_GETINFO, sizeof(CBOR_GETINFO));
	if (!ok || !ctap_recv(f, f->cid, cmd, &n) || n > *out_len)
		return false;
	memcpy(out, f->msg, n);
	*out_len = n;
	return op == 0 ? n >= 2 && out[n - 2] == 0x90 && out[n - 1] == 0x00 : n >= 1 && out[0] == 0;
}

static bool floor_open(struct floor_side *f)
{
	if (hid_init() != 0)
		return error("hid_init failed") == 0;
	char *path = NULL;
	double end = now_us() + WAIT_MS * 1e3;
	while (!path && now_us() < end) {
		struct hid_device_info *all = hid_enumerate(0, 0);
		for (struct hid_device_info *d = all; d && !path; d = d->next)
			if (d->usage_page == 0xF1D0 && d->usage == 0x01)
				path = strdup(d->path);
		hid_free_enumeration(all);
		if (!path)
			sleep_us(50e3);
	}
	if (!path)
		return error("no FIDO HID device within %d ms", WAIT_MS) == 0;
	f->dev = hid_open_path(path);
	free(path);
	if (!f->dev)
		return error("hid_open_path failed") == 0;
	/* CTAPHID_INIT on the broadcast channel: the answer echoes our nonce */
	uint8_t nonce[8];
	for (int i = 0; i < 8; i++)
		nonce[i] = (uint8_t)rand();
	size_t n;
	for (;;) {
		if (!ctap_send(f, BROADCAST, 0x86, nonce, sizeof(nonce)) ||
		    !ctap_recv(f, BROADCAST, 0x86, &n) || n < 17)
			return error("CTAPHID_INIT failed") == 0;
		if (memcmp(f->msg, nonce, 8) == 0)
			break;
	}
	memcpy(f->cid, f->msg + 8, 4);
	return true;
}

/* ---- the rounds ------------------------------------------------------------------------ */

static int run(exchange_fn fn, void *ctx, int op, const char *opname, int n, int warmup,
               const char *dir)
{
	static uint8_t first[8192], got[8192];
	size_t first_len = sizeof(first);
	if (!fn(ctx, op, first, &first_len))
		return error("%s: the first exchange failed", opname);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s-%s.us", dir, side, opname);
	FILE *out = fopen(path, "a");
	if (!out)
		return error("%s: cannot open %s", opname, path);
	double *us = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
	for (int i = -warmup; us && i < n; i++) {
		size_t len = sizeof(got);
		double t0 = now_us();
		bool ok = fn(ctx, op, got, &len);
		double t = now_us() - t0;
		if (!ok || len != first_len || memcmp(got, first, len) != 0) {
			fclose(out);
			free(us);
			return error("%s: exchange %d failed or answered otherwise", opname, i);
		}
		if (i >= 0)
			us[i] = t;
	}
	for (int i = 0; us && i < n; i++)
		fprintf(out, "%.1f\n", us[i]);
	free(us);
	return fclose(out) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	double t_start = now_us();
	int n = 500, warmup = 20, opt;
	const char *dir = "/tmp";
	while ((opt = getopt(argc, argv, "s:n:w:o:")) != -1) {
		switch (opt) {
		case 's':
			side = optarg;
			break;
		case 'n':
			n = atoi(optarg);
			break;
		case 'w':
			warmup = atoi(optarg);
			break;
		case 'o':
			dir = optarg;
			break;
		default:
			fprintf(stderr, "usage: fido_bench -s calais|floor [-n N] [-w WARMUP] [-o DIR]\n");
			return 2;
		}
	}
	struct calais_side c = { 0 };
	static struct floor_side f;
	exchange_fn fn;
	void *ctx;
	if (strcmp(side, "calais") == 0) {
		if (!calais_open(&c))
			return 1;
		fn = calais_exchange;
		ctx = &c;
	} else if (strcmp(side, "floor") == 0) {
		if (!floor_open(&f))
			return 1;
		fn = floor_exchange;
		ctx = &f;
	} else {
		fprintf(stderr, "fido_bench: -s calais or -s floor\n");
		return 2;
	}
	printf("BENCH-READY side=%s ready_ms=%.0f\n", side, (now_us() - t_start) / 1e3);
	int rc = run(fn, ctx, 0, "version", n, warmup, dir) ||
	         run(fn, ctx, 1, "getinfo", n, warmup, dir);
	if (c.ctx) {
		SCardDisconnect(c.h, SCARD_LEAVE_CARD);
		SCardReleaseContext(c.ctx);
	}
	if (f.dev) {
		hid_close(f.dev);
		hid_exit();
	}
	return rc;
}
