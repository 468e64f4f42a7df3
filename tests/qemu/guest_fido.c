/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* End-to-end test of the HID backend on the guest kernel's HID stack, run inside the QEMU
 * guest by tests/qemu/run: the virtual authenticator tests/hid/vauth-uhid (its path is the
 * first argument) is a FIDO key on /dev/uhid, which hid-generic binds and hidraw exposes;
 * this program finds it through Calais' hid backend on hidapi's hidraw backend, written
 * against <winscard.h> only (CALAIS_BACKENDS=hid unless the environment says otherwise),
 * and drives the authenticator on its control pipe (keepalives, faults, unplug, plug).
 * Checks: the [FIDO] reader and its ATR, SELECT of the FIDO AID (U2F_V2), U2F VERSION,
 * REGISTER and AUTHENTICATE with the P-256 signatures verified here (libcrypto), the
 * counter, CTAP2 getInfo through NFCCTAP_MSG, an answer delayed by keepalives (waited
 * through, and polled with P1 0x80: 91 00 and NFCCTAP_GETRESPONSE), the cancel a new
 * command sends while a CBOR answer is due, and the key unplugged and plugged back, each
 * seen by a waiting SCardGetStatusChange. Output is TAP ("ok N - ...", the plan last) and
 * a summary line; the exit status is 0 only when every check passed. -v: CALAIS_LOG=debug. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <winscard.h>

#include "guest-tap.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define WAIT_MS 10000
#define CTL_MS 5000
#define PNP_NAME "\\\\?PnP?\\Notification"

/* calais__fido_atr (backends/hid/hid-fido.c), as the README documents it. */
static const BYTE FIDO_ATR[] = { 0x3B, 0x8A, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21,
	                         0xC0, 0x54, 0x46, 0x49, 0x44, 0x4F, 0x89 };
static const BYTE SELECT_FIDO[] = { 0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00,
	                            0x06, 0x47, 0x2F, 0x00, 0x01 };
static const BYTE U2F_VERSION[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
/* NFCCTAP_MSG with authenticatorGetInfo (04); P1 0x80: the client takes 91 00 */
static const BYTE GET_INFO[] = { 0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00 };
static const BYTE GET_INFO_POLL[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00 };
static const BYTE GET_RESPONSE[] = { 0x80, 0x11, 0x00, 0x00, 0x00 };

static BYTE resp[MAX_BUFFER_SIZE_EXTENDED];
static DWORD resp_len;

/* ---- the authenticator's control pipe ------------------------------------------------ */

static pid_t auth_pid = -1;
static int auth_in = -1, auth_out = -1; /* its stdin, its stdout */
static char auth_buf[256];
static size_t auth_got;

static bool auth_start(const char *path)
{
	int to[2], from[2];
	if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0)
		return false;
	auth_pid = fork();
	if (auth_pid < 0)
		return false;
	if (auth_pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		execl(path, path, "05", (char *)NULL); /* WINK | CBOR: a U2F + CTAP2 key */
		fprintf(stderr, "# guest_fido: %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	auth_in = to[1];
	auth_out = from[0];
	return true;
}

/* One line from the authenticator within CTL_MS, into line (without the newline). */
static bool auth_line(char *line, size_t room)
{
	long end = now_ms() + CTL_MS;
	for (;;) {
		char *nl = memchr(auth_buf, '\n', auth_got);
		if (nl) {
			size_t n = (size_t)(nl - auth_buf);
			snprintf(line, room, "%.*s", (int)n, auth_buf);
			memmove(auth_buf, nl + 1, auth_got - n - 1);
			auth_got -= n + 1;
			return true;
		}
		long left = end - now_ms();
		if (left <= 0 || auth_got == sizeof(auth_buf))
			return false;
		struct pollfd p = { .fd = auth_out, .events = POLLIN };
		int rc = poll(&p, 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return false;
		ssize_t r = read(auth_out, auth_buf + auth_got, sizeof(auth_buf) - auth_got);
		if (r <= 0)
			return false;
		auth_got += (size_t)r;
	}
}

/* A command to the authenticator; its answer in reply; true when it starts with "ok". */
static bool auth_cmd(const char *cmd, char *reply, size_t room)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%s\n", cmd);
	if (write(auth_in, line, (size_t)n) != n)
		return false;
	if (!auth_line(reply, room)) {
		snprintf(reply, room, "(no answer)");
		return false;
	}
	return strncmp(reply, "ok", 2) == 0;
}

static unsigned auth_stat(const char *name)
{
	char reply[160], key[24];
	if (!auth_cmd("stats", reply, sizeof(reply)))
		return 0;
	snprintf(key, sizeof(key), " %s=", name);
	const char *p = strstr(reply, key);
	return p ? (unsigned)strtoul(p + strlen(key), NULL, 10) : 0;
}

static void auth_stop(void)
{
	if (auth_pid <= 0)
		return;
	close(auth_in);
	long end = now_ms() + CTL_MS;
	int st;
	while (waitpid(auth_pid, &st, WNOHANG) == 0) {
		if (now_ms() > end) {
			kill(auth_pid, SIGKILL);
			waitpid(auth_pid, &st, 0);
			break;
		}
		sleep_ms(20);
	}
	auth_pid = -1;
}

/* The hidraw node the kernel made for the device (hid-generic bound it), within WAIT_MS:
 * its name into node. */
static bool find_hidraw(char *node, size_t room)
{
	long end = now_ms() + WAIT_MS;
	do {
		DIR *d = opendir("/sys/class/hidraw");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			char path[300], line[256];
			snprintf(path, sizeof(path), "/sys/class/hidraw/%.200s/device/uevent", e->d_name);
			FILE *f = fopen(path, "r");
			bool ours = false;
			while (f && fgets(line, sizeof(line), f))
				ours |= strncmp(line, "HID_NAME=Calais vauth", 21) == 0;
			if (f)
				fclose(f);
			if (ours) {
				snprintf(node, room, "/dev/%.200s", e->d_name);
				closedir(d);
				return true;
			}
		}
		if (d)
			closedir(d);
		sleep_ms(50);
	} while (now_ms() < end);
	return false;
}

/* ---- readers and APDUs -------------------------------------------------------------- */

/* The first reader whose name has "[FIDO]", into name; false when none. */
static bool find_fido(SCARDCONTEXT ctx, char *name, size_t room)
{
	char list[4096];
	DWORD len = sizeof(list);
	if (SCardListReaders(ctx, NULL, list, &len) != SCARD_S_SUCCESS)
		return false;
	for (const char *p = list; *p; p += strlen(p) + 1)
		if (strstr(p, "[FIDO]")) {
			snprintf(name, room, "%s", p);
			return true;
		}
	return false;
}

static LONG xmit(SCARDHANDLE h, const BYTE *apdu, DWORD n)
{
	resp_len = sizeof(resp);
	return SCardTransmit(h, SCARD_PCI_T1, apdu, n, NULL, resp, &resp_len);
}

static unsigned sw(void)
{
	return resp_len >= 2 ? (unsigned)resp[resp_len - 2] << 8 | resp[resp_len - 1] : 0;
}

/* An extended-length U2F APDU: CLA 00, INS, P1, data, Le 00 00. */
static LONG u2f_apdu(SCARDHANDLE h, BYTE ins, BYTE p1, const BYTE *data, size_t n)
{
	BYTE a[7 + 256 + 2];
	if (n > 256)
		return SCARD_E_INVALID_PARAMETER;
	a[0] = 0x00;
	a[1] = ins;
	a[2] = p1;
	a[3] = 0x00;
	a[4] = 0x00;
	a[5] = (BYTE)(n >> 8);
	a[6] = (BYTE)n;
	memcpy(a + 7, data, n);
	a[7 + n] = 0x00;
	a[8 + n] = 0x00;
	return xmit(h, a, (DWORD)(9 + n));
}

/* ---- signatures ---------------------------------------------------------------------- */

static bool verify(EVP_PKEY *key, const BYTE *msg, size_t n, const BYTE *sig, size_t sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	          EVP_DigestVerify(md, sig, sig_len, msg, n) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

/* A P-256 public key from its uncompressed point (04 X Y). */
static EVP_PKEY *p256_key(const BYTE point[65])
{
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, 65),
		OSSL_PARAM_construct_end(),
	};
	if (!pc || EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		key = NULL;
	EVP_PKEY_CTX_free(pc);
	return key;
}

/* The length of the DER ECDSA signature at p (a SEQUENCE), 0 when it is not one. */
static size_t der_len(const BYTE *p, size_t n)
{
	if (n < 2 || p[0] != 0x30)
		return 0;
	if (p[1] < 0x80)
		return 2u + p[1] <= n ? 2u + p[1] : 0;
	if (p[1] == 0x81 && n >= 3)
		return 3u + p[2] <= n ? 3u + p[2] : 0;
	return 0;
}

struct cred {
	BYTE app[32];
	BYTE pub[65];
	BYTE kh[255];
	size_t kh_len;
};

/* U2F REGISTER; the attestation signature checked with the certificate's key. */
static bool u2f_register(SCARDHANDLE h, struct cred *c)
{
	BYTE chal[32], req[64];
	RAND_bytes(chal, sizeof(chal));
	RAND_bytes(c->app, sizeof(c->app));
	memcpy(req, chal, 32);
	memcpy(req + 32, c->app, 32);
	LONG rv = u2f_apdu(h, 0x01, 0x03, req, sizeof(req));
	if (!check(rv == SCARD_S_SUCCESS && sw() == 0x9000, rv, "U2F REGISTER: 90 00 (SW %04X, %lu bytes)",
	           sw(), (unsigned long)resp_len))
		return false;
	diag_hex("REGISTER answer", resp, resp_len);
	/* 05 | public key (65) | handle length | handle | certificate | signature */
	size_t n = resp_len - 2;
	const BYTE *p = resp;
	bool shape = n > 67 && p[0] == 0x05 && p[1] == 0x04 && 67u + p[66] < n;
	const BYTE *certp = shape ? p + 67 + p[66] : NULL;
	X509 *cert = shape ? d2i_X509(NULL, &certp, (long)(n - (size_t)(certp - p))) : NULL;
	size_t sig_off = cert ? (size_t)(certp - p) : 0;
	size_t sig_len = cert ? der_len(p + sig_off, n - sig_off) : 0;
	if (!check(cert && sig_len && sig_off + sig_len == n, 0,
	           "REGISTER answer: 05, public key, key handle of %u bytes, X.509 certificate, "
	           "DER signature of %zu bytes, nothing after", shape ? p[66] : 0, sig_len)) {
		X509_free(cert);
		return false;
	}
	memcpy(c->pub, p + 1, 65);
	c->kh_len = p[66];
	memcpy(c->kh, p + 67, c->kh_len);
	/* 00 | application | challenge | key handle | public key */
	BYTE tbs[1 + 32 + 32 + 255 + 65];
	size_t t = 0;
	tbs[t++] = 0x00;
	memcpy(tbs + t, c->app, 32);
	t += 32;
	memcpy(tbs + t, chal, 32);
	t += 32;
	memcpy(tbs + t, c->kh, c->kh_len);
	t += c->kh_len;
	memcpy(tbs + t, c->pub, 65);
	t += 65;
	EVP_PKEY *ak = X509_get0_pubkey(cert);
	bool good = ak && verify(ak, tbs, t, p + sig_off, sig_len);
	check(good, 0, "REGISTER: attestation signature verified with the certificate's P-256 key");
	tbs[33] ^= 0x01; /* another challenge: the same signature must not hold */
	check(ak && !verify(ak, tbs, t, p + sig_off, sig_len), 0,
	      "REGISTER: the attestation signature does not verify over another challenge");
	X509_free(cert);
	return good;
}

/* U2F AUTHENTICATE (P1 03, presence enforced); the signature checked with the
 * credential's public key; *counter gets the counter. */
static bool u2f_authenticate(SCARDHANDLE h, const struct cred *c, uint32_t *counter)
{
	BYTE chal[32], req[32 + 32 + 1 + 255];
	RAND_bytes(chal, sizeof(chal));
	memcpy(req, chal, 32);
	memcpy(req + 32, c->app, 32);
	req[64] = (BYTE)c->kh_len;
	memcpy(req + 65, c->kh, c->kh_len);
	LONG rv = u2f_apdu(h, 0x02, 0x03, req, 65 + c->kh_len);
	/* presence (1) | counter (4) | DER signature */
	size_t n = resp_len >= 2 ? resp_len - 2 : 0;
	size_t sig_len = n > 5 ? der_len(resp + 5, n - 5) : 0;
	if (!check(rv == SCARD_S_SUCCESS && sw() == 0x9000 && sig_len && 5 + sig_len == n &&
	           (resp[0] & 0x01), rv,
	           "U2F AUTHENTICATE: 90 00, user presence, counter, DER signature (SW %04X, %lu bytes)",
	           sw(), (unsigned long)resp_len))
		return false;
	*counter = (uint32_t)resp[1] << 24 | (uint32_t)resp[2] << 16 | (uint32_t)resp[3] << 8 | resp[4];
	BYTE tbs[32 + 1 + 4 + 32];
	memcpy(tbs, c->app, 32);
	memcpy(tbs + 32, resp, 5);
	memcpy(tbs + 37, chal, 32);
	EVP_PKEY *key = p256_key(c->pub);
	bool good = key && verify(key, tbs, sizeof(tbs), resp + 5, sig_len);
	check(good, 0, "AUTHENTICATE: signature verified with the registered public key (counter %u)",
	      *counter);
	tbs[40] ^= 0x01;
	check(key && !verify(key, tbs, sizeof(tbs), resp + 5, sig_len), 0,
	      "AUTHENTICATE: the signature does not verify over another challenge");
	EVP_PKEY_free(key);
	return good;
}

/* ---- CBOR: just enough to read getInfo's versions ------------------------------------ */

/* The head of the item at *p: major type and argument; false when it does not fit. */
static bool cbor_head(const BYTE **p, const BYTE *end, unsigned *major, uint64_t *arg)
{
	if (*p >= end)
		return false;
	BYTE b = *(*p)++;
	*major = b >> 5;
	unsigned ai = b & 0x1F;
	if (ai < 24) {
		*arg = ai;
		return true;
	}
	if (ai > 27)
		return false; /* indefinite lengths: not in CTAP2's canonical CBOR */
	size_t k = (size_t)1 << (ai - 24);
	if ((size_t)(end - *p) < k)
		return false;
	*arg = 0;
	for (size_t i = 0; i < k; i++)
		*arg = *arg << 8 | *(*p)++;
	return true;
}

static bool cbor_skip(const BYTE **p, const BYTE *end, int depth)
{
	unsigned major;
	uint64_t arg;
	if (depth > 8 || !cbor_head(p, end, &major, &arg))
		return false;
	switch (major) {
	case 2:
	case 3:
		if (arg > (uint64_t)(end - *p))
			return false;
		*p += arg;
		return true;
	case 4:
	case 5:
		for (uint64_t i = 0; i < (major == 5 ? 2 * arg : arg); i++)
			if (!cbor_skip(p, end, depth + 1))
				return false;
		return true;
	default: /* integers, tags' numbers, simple values */
		return major != 6 || cbor_skip(p, end, depth + 1);
	}
}

/* getInfo's answer (status byte first): true when it is a well-formed map whose key 1
 * (versions) is an array of text strings holding "FIDO_2_0"; *n_versions gets their count. */
static bool info_has_fido2(const BYTE *b, size_t n, unsigned *n_versions)
{
	const BYTE *p = b + 1, *end = b + n;
	unsigned major;
	uint64_t pairs, key;
	bool found = false;
	*n_versions = 0;
	if (n < 2 || b[0] != 0x00 || !cbor_head(&p, end, &major, &pairs) || major != 5)
		return false;
	for (uint64_t i = 0; i < pairs; i++) {
		if (!cbor_head(&p, end, &major, &key) || major != 0)
			return false;
		if (key != 1) {
			if (!cbor_skip(&p, end, 0))
				return false;
			continue;
		}
		uint64_t count, len;
		if (!cbor_head(&p, end, &major, &count) || major != 4)
			return false;
		for (uint64_t j = 0; j < count; j++) {
			if (!cbor_head(&p, end, &major, &len) || major != 3 || len > (uint64_t)(end - p))
				return false;
			found |= len == 8 && memcmp(p, "FIDO_2_0", 8) == 0;
			p += len;
			(*n_versions)++;
		}
	}
	return p == end && found;
}

static void check_info(LONG rv, const char *what)
{
	unsigned nv = 0;
	bool ok = rv == SCARD_S_SUCCESS && sw() == 0x9000 && info_has_fido2(resp, resp_len - 2, &nv);
	check(ok, rv, "%s: 90 00, getInfo parses, versions (%u) hold FIDO_2_0 (SW %04X)", what, nv,
	      sw());
	if (!ok)
		diag_hex("answer", resp, resp_len);
}

/* ---- hotplug ------------------------------------------------------------------------- */

struct waiter {
	SCARDCONTEXT ctx;
	SCARD_READERSTATE rs[2];
	DWORD n;
	bool want_gone; /* also wait until rs[1] (the reader) is reported gone */
	LONG rv;
	bool pnp_seen, gone_seen;
	pthread_t thread;
};

/* Waits (WAIT_MS in all) until the PnP entry changed and, if asked, the reader is gone. */
static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	long end = now_ms() + WAIT_MS;
	w->rv = SCARD_E_TIMEOUT;
	while (!(w->pnp_seen && (!w->want_gone || w->gone_seen))) {
		long left = end - now_ms();
		if (left <= 0)
			break;
		w->rv = SCardGetStatusChange(w->ctx, (DWORD)left, w->rs, w->n);
		if (w->rv != SCARD_S_SUCCESS)
			break;
		for (DWORD i = 0; i < w->n; i++) {
			SCARD_READERSTATE *r = &w->rs[i];
			if (!(r->dwEventState & SCARD_STATE_CHANGED))
				continue;
			printf("# waiter: %s: 0x%08lX -> 0x%08lX\n", r->szReader,
			       (unsigned long)r->dwCurrentState, (unsigned long)r->dwEventState);
			if (i == 0)
				w->pnp_seen = true;
			else if (r->dwEventState & SCARD_STATE_UNKNOWN)
				w->gone_seen = true;
			r->dwCurrentState = r->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		}
	}
	return NULL;
}

/* Starts a waiter on PnP (and on the reader `name`, when given) from the present state. */
static bool waiter_start(struct waiter *w, SCARDCONTEXT ctx, const char *name)
{
	memset(w, 0, sizeof(*w));
	w->ctx = ctx;
	w->rs[0].szReader = PNP_NAME;
	w->rs[0].dwCurrentState = SCARD_STATE_UNAWARE;
	w->n = 1;
	if (name) {
		w->rs[1].szReader = name;
		w->rs[1].dwCurrentState = SCARD_STATE_UNAWARE;
		w->n = 2;
		w->want_gone = true;
	}
	/* the state now, so that only what happens next counts (PnP alone, unchanged, is a
	 * timeout; its event state is written all the same) */
	LONG rv = SCardGetStatusChange(ctx, 0, w->rs, w->n);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT)
		return false;
	for (DWORD i = 0; i < w->n; i++)
		w->rs[i].dwCurrentState = w->rs[i].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	return pthread_create(&w->thread, NULL, wait_thread, w) == 0;
}

/* A card present in reader `name` (the card is the key itself), within WAIT_MS. */
static LONG wait_present(SCARDCONTEXT ctx, const char *name, DWORD *state)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	long end = now_ms() + WAIT_MS;
	for (;;) {
		long left = end - now_ms();
		LONG rv = SCardGetStatusChange(ctx, left > 0 ? (DWORD)left : 0, &rs, 1);
		*state = rs.dwEventState;
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (rs.dwEventState & SCARD_STATE_PRESENT)
			return SCARD_S_SUCCESS;
		if (left <= 0)
			return SCARD_E_TIMEOUT;
		rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	}
}

/* ---- the checks ------------------------------------------------------------------------ */

static SCARDHANDLE connect_key(SCARDCONTEXT ctx, const char *name)
{
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	LONG rv = SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto);
	check(rv == SCARD_S_SUCCESS && proto == SCARD_PROTOCOL_T1, rv, "SCardConnect: T=1");
	return rv == SCARD_S_SUCCESS ? h : 0;
}

static void select_fido(SCARDHANDLE h, const char *when)
{
	LONG rv = xmit(h, SELECT_FIDO, sizeof(SELECT_FIDO));
	check(rv == SCARD_S_SUCCESS && resp_len == 8 && memcmp(resp, "U2F_V2\x90\x00", 8) == 0, rv,
	      "SELECT A0000006472F0001%s: U2F_V2 90 00 (a U2F + CTAP2 key)", when);
	if (rv == SCARD_S_SUCCESS && resp_len != 8)
		diag_hex("SELECT answer", resp, resp_len);
}

static void test_u2f(SCARDHANDLE h)
{
	LONG rv = xmit(h, U2F_VERSION, sizeof(U2F_VERSION));
	check(rv == SCARD_S_SUCCESS && resp_len == 8 && memcmp(resp, "U2F_V2\x90\x00", 8) == 0, rv,
	      "U2F VERSION: U2F_V2 90 00");
	struct cred c;
	if (!u2f_register(h, &c))
		return;
	uint32_t c1 = 0, c2 = 0;
	if (!u2f_authenticate(h, &c, &c1) || !u2f_authenticate(h, &c, &c2))
		return;
	check(c2 > c1, 0, "AUTHENTICATE: the counter moved on (%u, then %u)", c1, c2);
	BYTE req[32 + 32 + 1 + 255];
	RAND_bytes(req, 32);
	memcpy(req + 32, c.app, 32);
	req[64] = (BYTE)c.kh_len;
	memcpy(req + 65, c.kh, c.kh_len);
	rv = u2f_apdu(h, 0x02, 0x07, req, 65 + c.kh_len);
	check(rv == SCARD_S_SUCCESS && sw() == 0x6985, rv,
	      "AUTHENTICATE check-only (P1 07) of a known handle: 69 85 (SW %04X)", sw());
}

static void test_cbor(SCARDHANDLE h)
{
	char reply[160];
	check_info(xmit(h, GET_INFO, sizeof(GET_INFO)), "NFCCTAP_MSG getInfo");

	bool ok = auth_cmd("keepalives 4", reply, sizeof(reply));
	check(ok, 0, "authenticator: 4 keepalives before each CBOR answer (%s)", reply);
	long t0 = now_ms();
	LONG rv = xmit(h, GET_INFO, sizeof(GET_INFO));
	long took = now_ms() - t0;
	check_info(rv, "NFCCTAP_MSG getInfo behind 4 keepalives, waited through");
	/* the answer is due 4 x 30 + 5 ms after the request: it cannot come sooner */
	check(took >= 125, 0, "that answer took at least the keepalives' 125 ms (%ld ms)", took);

	unsigned polls = 0;
	rv = xmit(h, GET_INFO_POLL, sizeof(GET_INFO_POLL));
	bool first_91 = rv == SCARD_S_SUCCESS && resp_len == 3 && sw() == 0x9100 && resp[0] == 0x02;
	check(first_91, rv, "NFCCTAP_MSG with P1 80: 91 00 with keepalive status 02 (SW %04X, %lu bytes)",
	      sw(), (unsigned long)resp_len);
	while (rv == SCARD_S_SUCCESS && sw() == 0x9100 && polls < 50) {
		polls++;
		rv = xmit(h, GET_RESPONSE, sizeof(GET_RESPONSE));
	}
	check_info(rv, "NFCCTAP_GETRESPONSE after the 91 00s");
	printf("# %u NFCCTAP_GETRESPONSE(s) answered 91 00 or the answer\n", polls);
	check(polls >= 1 && polls <= 4, 0, "at most one GETRESPONSE per keepalive (%u for 4)", polls);
	auth_cmd("keepalives 0", reply, sizeof(reply));

	/* Cancel: a CBOR command whose keepalives never end, left with 91 00; the next
	 * command cancels it (CTAPHID_CANCEL) and is answered. */
	unsigned cancels = auth_stat("cancels");
	ok = auth_cmd("fault forever", reply, sizeof(reply));
	rv = xmit(h, GET_INFO_POLL, sizeof(GET_INFO_POLL));
	check(ok && rv == SCARD_S_SUCCESS && sw() == 0x9100, rv,
	      "endless keepalives: NFCCTAP_MSG with P1 80 answers 91 00 (SW %04X)", sw());
	rv = xmit(h, GET_RESPONSE, sizeof(GET_RESPONSE));
	check(rv == SCARD_S_SUCCESS && sw() == 0x9100, rv,
	      "and NFCCTAP_GETRESPONSE 91 00 again (SW %04X)", sw());
	auth_cmd("fault none", reply, sizeof(reply));
	rv = xmit(h, U2F_VERSION, sizeof(U2F_VERSION));
	check(rv == SCARD_S_SUCCESS && resp_len == 8 && memcmp(resp, "U2F_V2\x90\x00", 8) == 0, rv,
	      "a new command (U2F VERSION) while the CBOR answer is due: answered, U2F_V2 90 00");
	unsigned after = auth_stat("cancels");
	check(after == cancels + 1, 0, "the authenticator got one CTAPHID_CANCEL (%u before, %u after)",
	      cancels, after);
	rv = xmit(h, GET_RESPONSE, sizeof(GET_RESPONSE));
	check(rv == SCARD_S_SUCCESS && sw() == 0x6985, rv,
	      "NFCCTAP_GETRESPONSE after the cancel: 69 85, nothing pending (SW %04X)", sw());
	check_info(xmit(h, GET_INFO, sizeof(GET_INFO)), "NFCCTAP_MSG getInfo after the cancel");
}

/* Unplug (UHID_DESTROY) and plug again (UHID_CREATE2), each seen by a waiting
 * SCardGetStatusChange; the card of the old handle is gone, the new reader answers. */
static void test_hotplug(SCARDCONTEXT ctx, SCARDCONTEXT wctx, SCARDHANDLE h, const char *name)
{
	char reply[160], name2[256];
	struct waiter w;
	LONG rv;
	if (!check(waiter_start(&w, wctx, name), 0, "a waiter on PnP and on %s", name))
		return;
	sleep_ms(300); /* it is waiting now (were it not, it would see the change at once) */
	bool ok = auth_cmd("unplug", reply, sizeof(reply));
	check(ok, 0, "authenticator unplugged: UHID_DESTROY (%s)", reply);
	pthread_join(w.thread, NULL);
	check(w.pnp_seen, w.rv, "unplug: the waiting SCardGetStatusChange saw \\\\?PnP?\\Notification change");
	check(w.gone_seen, w.rv, "unplug: and the reader reported gone (SCARD_STATE_UNKNOWN)");
	check(!find_fido(ctx, name2, sizeof(name2)), 0, "unplug: no [FIDO] reader listed");
	rv = xmit(h, U2F_VERSION, sizeof(U2F_VERSION));
	check(rv != SCARD_S_SUCCESS, 0, "unplug: SCardTransmit on the old handle fails (rv=0x%08lX %s)",
	      (unsigned long)rv,
	      pcsc_stringify_error(rv));
	SCardDisconnect(h, SCARD_LEAVE_CARD);

	if (!check(waiter_start(&w, wctx, NULL), 0, "a waiter on PnP"))
		return;
	sleep_ms(300);
	ok = auth_cmd("plug", reply, sizeof(reply));
	check(ok, 0, "authenticator plugged back: UHID_CREATE2 (%s)", reply);
	pthread_join(w.thread, NULL);
	check(w.pnp_seen, w.rv, "plug: the waiting SCardGetStatusChange saw \\\\?PnP?\\Notification change");
	ok = find_fido(ctx, name2, sizeof(name2));
	check(ok, 0, "plug: a [FIDO] reader listed again: %s", ok ? name2 : "(none)");
	if (!ok)
		return;
	DWORD state = 0;
	rv = wait_present(ctx, name2, &state);
	check(rv == SCARD_S_SUCCESS, rv, "plug: SCardGetStatusChange on the reader: card present (0x%08lX)",
	      (unsigned long)state);
	h = connect_key(ctx, name2);
	if (!h)
		return;
	select_fido(h, " after the replug");
	check_info(xmit(h, GET_INFO, sizeof(GET_INFO)), "NFCCTAP_MSG getInfo after the replug");
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

int main(int argc, char **argv)
{
	const char *vauth = argc > 1 ? argv[1] : "/test/vauth-uhid";
	if (argc > 2 && strcmp(argv[2], "-v") == 0)
		setenv("CALAIS_LOG", "debug", 1);
	setenv("CALAIS_BACKENDS", "hid", 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN); /* an authenticator that died is a failed check, not our end */
	char reply[160];
	if (!auth_start(vauth) || !auth_line(reply, sizeof(reply)) || strcmp(reply, "ready") != 0) {
		printf("not ok 1 - %s: the virtual authenticator did not start\n1..1\n", vauth);
		auth_stop();
		return 1;
	}
	check(true, 0, "%s: a FIDO device on /dev/uhid (bus USB, usage page F1D0)", vauth);
	char node[300];
	bool raw = find_hidraw(node, sizeof(node));
	check(raw, 0, "the kernel's HID stack made a hidraw node for it: %s", raw ? node : "(none)");

	SCARDCONTEXT ctx = 0, wctx = 0;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv == SCARD_S_SUCCESS)
		rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &wctx);
	check(rv == SCARD_S_SUCCESS, rv, "SCardEstablishContext (CALAIS_BACKENDS=%s)",
	      getenv("CALAIS_BACKENDS"));
	char name[256] = "";
	bool found = false;
	long end = now_ms() + WAIT_MS;
	while (rv == SCARD_S_SUCCESS && !(found = find_fido(ctx, name, sizeof(name))) && now_ms() < end)
		sleep_ms(100);
	check(found, 0, "the key is listed: %s", found ? name : "(no reader with [FIDO])");
	DWORD state = 0;
	SCARDHANDLE h = 0;
	if (found) {
		rv = wait_present(ctx, name, &state);
		check(rv == SCARD_S_SUCCESS, rv, "SCardGetStatusChange: card present (0x%08lX)",
		      (unsigned long)state);
		h = connect_key(ctx, name);
	}
	if (h) {
		BYTE atr[MAX_ATR_SIZE];
		DWORD atr_len = sizeof(atr), st = 0, proto = 0, nlen = 0;
		rv = SCardStatus(h, NULL, &nlen, &st, &proto, atr, &atr_len);
		check(rv == SCARD_S_SUCCESS && atr_len == sizeof(FIDO_ATR) &&
		      memcmp(atr, FIDO_ATR, atr_len) == 0, rv,
		      "SCardStatus: the FIDO reader's ATR 3B 8A 80 01 80 73 C0 21 C0 54 \"FIDO\" 89");
		select_fido(h, "");
		test_u2f(h);
		test_cbor(h);
		test_hotplug(ctx, wctx, h, name);
	}
	if (wctx)
		SCardReleaseContext(wctx);
	if (ctx)
		SCardReleaseContext(ctx);
	auth_stop();
	printf("1..%d\n", n_tests);
	printf("# guest_fido: %d passed, %d failed\n", n_tests - n_failed, n_failed);
	return n_failed ? 1 : 0;
}
