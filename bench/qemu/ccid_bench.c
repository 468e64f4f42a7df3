/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* APDU round trips on QEMU's emulated usb-ccid reader, run inside the guest by
 * bench/qemu/run. Written only against the standard PC/SC API: built once with Calais
 * (its CCID backend, in process) and once with pcsc-lite's libpcsclite (talking to
 * pcscd and libccid in the same guest).
 *
 *   ccid_bench [-l LABEL] [-r READER] [-n N] [-w WARMUP] [-t WAIT_MS] [-o SAMPLES]
 *
 * Waits up to WAIT_MS for a context (pcscd may still be starting) and for a reader
 * whose name holds READER (default "(PASS)": the scripted card of tests/qemu/vscard.py),
 * connects, sends WARMUP untimed SELECTs of the card's test AID, then N timed ones;
 * every answer must be the card's FCI and 90 00. Prints one line
 *   BENCH-ROUND label=L n=N median_us=.. p99_us=.. mean_us=.. min_us=.. max_us=..
 *               total_ms=.. rate=.. ready_ms=..
 * (rate: N / the wall time of the N round trips, in APDUs per second; ready_ms: from
 * the start of the program to the connected card), and appends the N round trips in
 * microseconds, one a line, to SAMPLES when given. Exit status 0, or 1 on any error. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <winscard.h>

static const BYTE SELECT_TEST_AID[] = { 0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0,
	                                0x01, 0x02, 0x03, 0x04, 0x05 };
/* 6F 08 84 06 <AID> 90 00 */
static const BYTE FCI_TEST_AID[] = { 0x6F, 0x08, 0x84, 0x06, 0xF0, 0x01, 0x02,
	                             0x03, 0x04, 0x05, 0x90, 0x00 };

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* nearest-rank percentile of sorted samples */
static double percentile(const double *s, size_t n, double p)
{
	size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return s[k - 1];
}

static void fail(const char *label, const char *what, LONG rv)
{
	printf("BENCH-ERROR label=%s %s: 0x%08lX %s\n", label, what, (unsigned long)rv,
	       pcsc_stringify_error(rv));
}

/* the first reader whose name holds want, into name */
static LONG find_reader(SCARDCONTEXT ctx, const char *want, char *name, size_t size)
{
	DWORD len = 0;
	LONG rv = SCardListReaders(ctx, NULL, NULL, &len);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	char *m = malloc(len ? len : 1);
	if (!m)
		return SCARD_E_NO_MEMORY;
	rv = SCardListReaders(ctx, NULL, m, &len);
	name[0] = '\0';
	for (const char *p = m; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1) {
		if (strstr(p, want)) {
			snprintf(name, size, "%s", p);
			break;
		}
	}
	free(m);
	return rv == SCARD_S_SUCCESS && !name[0] ? SCARD_E_UNKNOWN_READER : rv;
}

static LONG select_once(SCARDHANDLE h, const SCARD_IO_REQUEST *pci)
{
	BYTE resp[64];
	DWORD len = sizeof(resp);
	LONG rv = SCardTransmit(h, pci, SELECT_TEST_AID, sizeof(SELECT_TEST_AID), NULL, resp,
	                        &len);
	if (rv == SCARD_S_SUCCESS &&
	    (len != sizeof(FCI_TEST_AID) || memcmp(resp, FCI_TEST_AID, len) != 0))
		rv = SCARD_F_COMM_ERROR; /* a wrong answer: counted as a failure */
	return rv;
}

int main(int argc, char **argv)
{
	const char *label = "bench", *want = "(PASS)", *out = NULL;
	long n = 500, warmup = 20, wait_ms = 20000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v || a[0] != '-' || a[1] == '\0' || a[2] != '\0' || !strchr("lrnwto", a[1])) {
			fprintf(stderr, "usage: %s [-l LABEL] [-r READER] [-n N] [-w WARMUP] "
			                "[-t WAIT_MS] [-o SAMPLES]\n", argv[0]);
			return 2;
		}
		switch (a[1]) {
		case 'l': label = v; break;
		case 'r': want = v; break;
		case 'n': n = strtol(v, NULL, 10); break;
		case 'w': warmup = strtol(v, NULL, 10); break;
		case 't': wait_ms = strtol(v, NULL, 10); break;
		case 'o': out = v; break;
		}
		i++;
	}
	if (n < 1 || warmup < 0) {
		fprintf(stderr, "%s: N must be at least 1, WARMUP at least 0\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Calais: the CCID backend only (pcsc-lite ignores it) */
	setenv("CALAIS_BACKENDS", "ccid", 0);

	double t0 = now_us(), deadline = t0 + (double)wait_ms * 1e3;
	SCARDCONTEXT ctx;
	LONG rv;
	while ((rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx)) !=
	               SCARD_S_SUCCESS &&
	       now_us() < deadline)
		sleep_ms(20);
	if (rv != SCARD_S_SUCCESS) {
		fail(label, "SCardEstablishContext", rv);
		return 1;
	}
	char reader[256];
	while ((rv = find_reader(ctx, want, reader, sizeof(reader))) != SCARD_S_SUCCESS &&
	       now_us() < deadline)
		sleep_ms(20);
	if (rv != SCARD_S_SUCCESS) {
		fail(label, "no reader with that name", rv);
		SCardReleaseContext(ctx);
		return 1;
	}
	SCARDHANDLE h;
	DWORD proto = 0;
	/* the card may still be powering up behind pcscd: SCARD_W_* / SCARD_E_* retried */
	while ((rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED,
	                          SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto)) !=
	               SCARD_S_SUCCESS &&
	       now_us() < deadline)
		sleep_ms(20);
	if (rv != SCARD_S_SUCCESS) {
		fail(label, "SCardConnect", rv);
		SCardReleaseContext(ctx);
		return 1;
	}
	double ready = now_us();
	printf("# %s: reader \"%s\"\n", label, reader);
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;

	double *rt = malloc((size_t)n * sizeof(*rt));
	int status = 0;
	if (!rt) {
		fail(label, "malloc", SCARD_E_NO_MEMORY);
		status = 1;
	}
	for (long i = 0; status == 0 && i < warmup; i++) {
		if ((rv = select_once(h, pci)) != SCARD_S_SUCCESS) {
			fail(label, "warm-up SELECT", rv);
			status = 1;
		}
	}
	double start = now_us(), end = start;
	for (long i = 0; status == 0 && i < n; i++) {
		double a = now_us();
		rv = select_once(h, pci);
		end = now_us();
		rt[i] = end - a;
		if (rv != SCARD_S_SUCCESS) {
			fail(label, "SELECT", rv);
			status = 1;
		}
	}
	rv = SCardDisconnect(h, SCARD_LEAVE_CARD);
	if (rv != SCARD_S_SUCCESS) {
		fail(label, "SCardDisconnect", rv);
		status = 1;
	}
	rv = SCardReleaseContext(ctx);
	if (rv != SCARD_S_SUCCESS) {
		fail(label, "SCardReleaseContext", rv);
		status = 1;
	}
	if (status == 0) {
		FILE *f = out ? fopen(out, "a") : NULL;
		if (out && !f) {
			perror(out);
			status = 1;
		}
		double sum = 0;
		for (long i = 0; i < n; i++) {
			sum += rt[i];
			if (f)
				fprintf(f, "%.0f\n", rt[i]);
		}
		if (f && fclose(f) != 0) {
			perror(out);
			status = 1;
		}
		qsort(rt, (size_t)n, sizeof(*rt), cmp_double);
		double total = end - start;
		printf("BENCH-ROUND label=%s n=%ld median_us=%.0f p99_us=%.0f mean_us=%.0f "
		       "min_us=%.0f max_us=%.0f total_ms=%.1f rate=%.1f ready_ms=%.0f proto=T%d\n",
		       label, n, percentile(rt, (size_t)n, 50), percentile(rt, (size_t)n, 99),
		       sum / (double)n, rt[0], rt[n - 1], total / 1e3, (double)n / (total / 1e6),
		       (ready - t0) / 1e3, proto == SCARD_PROTOCOL_T1 ? 1 : 0);
	}
	free(rt);
	return status;
}
