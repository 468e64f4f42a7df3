/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* U2F with real keys for the virtual authenticator (vauth_use_u2f, see vauth.h), on
 * libcrypto: the FIDO U2F raw message formats (v1.2). REGISTER makes a P-256 credential
 * and answers with its public key, a key handle, a self-signed attestation certificate
 * and the attestation signature over 00 | application | challenge | key handle | public
 * key; AUTHENTICATE signs application | presence | counter | challenge with the
 * credential's key (P1 07, check only, answers 6985 for a known handle); VERSION answers
 * U2F_V2. User presence is always given. Key handles are 32 random bytes naming a
 * credential kept in memory; a handle not made here, or for another application, is
 * 6A80. */
#include "vauth.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define N_CREDS 16

struct cred {
	uint8_t kh[32];
	uint8_t app[32];
	EVP_PKEY *key;
	uint32_t counter;
};

struct u2f {
	EVP_PKEY *attest;
	uint8_t cert[1024];
	size_t cert_len;
	struct cred creds[N_CREDS];
	unsigned next;
};

static size_t sw(uint8_t *out, size_t n, uint16_t s)
{
	out[n] = (uint8_t)(s >> 8);
	out[n + 1] = (uint8_t)s;
	return n + 2;
}

/* DER ECDSA-SHA256 signature of msg with key into out; its length, 0 on failure. */
static size_t sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t *out, size_t room)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t len = room;
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, out, &len, msg, n) != 1)
		len = 0;
	EVP_MD_CTX_free(md);
	return len;
}

/* The uncompressed point (65 bytes) of key into out; false on failure. */
static bool public_point(EVP_PKEY *key, uint8_t out[65])
{
	size_t len = 0;
	return EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out, 65,
	                                       &len) == 1 &&
	       len == 65 && out[0] == 0x04;
}

static bool make_cert(struct u2f *u)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	bool ok = x && name && X509_set_version(x, 2) == 1 &&
	          ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
	          X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
	          X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365) &&
	          X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                     (const unsigned char *)"Calais virtual U2F", -1, -1,
	                                     0) == 1 &&
	          X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
	          X509_set_pubkey(x, u->attest) == 1 && X509_sign(x, u->attest, EVP_sha256()) > 0;
	if (ok) {
		int len = i2d_X509(x, NULL);
		unsigned char *p = u->cert;
		ok = len > 0 && (size_t)len <= sizeof(u->cert) && i2d_X509(x, &p) == len;
		u->cert_len = ok ? (size_t)len : 0;
	}
	X509_NAME_free(name);
	X509_free(x);
	return ok;
}

static size_t do_register(struct u2f *u, const uint8_t *d, size_t lc, uint8_t *out)
{
	if (lc != 64)
		return sw(out, 0, 0x6700);
	struct cred *c = &u->creds[u->next++ % N_CREDS];
	EVP_PKEY_free(c->key);
	memset(c, 0, sizeof(*c));
	uint8_t pub[65];
	c->key = EVP_EC_gen("P-256");
	if (!c->key || !public_point(c->key, pub) || RAND_bytes(c->kh, sizeof(c->kh)) != 1)
		return sw(out, 0, 0x6F00);
	memcpy(c->app, d + 32, 32);
	/* 05 | public key | L | key handle | certificate | signature */
	size_t n = 0;
	out[n++] = 0x05;
	memcpy(out + n, pub, 65);
	n += 65;
	out[n++] = sizeof(c->kh);
	memcpy(out + n, c->kh, sizeof(c->kh));
	n += sizeof(c->kh);
	memcpy(out + n, u->cert, u->cert_len);
	n += u->cert_len;
	uint8_t tbs[1 + 32 + 32 + 32 + 65];
	tbs[0] = 0x00;
	memcpy(tbs + 1, d + 32, 32);  /* application */
	memcpy(tbs + 33, d, 32);      /* challenge */
	memcpy(tbs + 65, c->kh, 32);
	memcpy(tbs + 97, pub, 65);
	size_t s = sign(u->attest, tbs, sizeof(tbs), out + n, 128);
	if (!s)
		return sw(out, 0, 0x6F00);
	return sw(out, n + s, 0x9000);
}

static size_t do_authenticate(struct u2f *u, uint8_t p1, const uint8_t *d, size_t lc,
                              uint8_t *out)
{
	if (lc < 65 || lc != 65u + d[64])
		return sw(out, 0, 0x6700);
	const uint8_t *chal = d, *app = d + 32, *kh = d + 65;
	struct cred *c = NULL;
	for (unsigned i = 0; i < N_CREDS && !c; i++)
		if (u->creds[i].key && d[64] == sizeof(u->creds[i].kh) &&
		    memcmp(u->creds[i].kh, kh, sizeof(u->creds[i].kh)) == 0 &&
		    memcmp(u->creds[i].app, app, 32) == 0)
			c = &u->creds[i];
	if (!c)
		return sw(out, 0, 0x6A80);
	if (p1 == 0x07)
		return sw(out, 0, 0x6985);
	if (p1 != 0x03 && p1 != 0x08)
		return sw(out, 0, 0x6A86);
	c->counter++;
	uint8_t tbs[32 + 1 + 4 + 32];
	memcpy(tbs, app, 32);
	tbs[32] = 0x01; /* user present */
	for (int i = 0; i < 4; i++)
		tbs[33 + i] = (uint8_t)(c->counter >> (24 - 8 * i));
	memcpy(tbs + 37, chal, 32);
	memcpy(out, tbs + 32, 5); /* presence and counter */
	size_t s = sign(c->key, tbs, sizeof(tbs), out + 5, 128);
	if (!s)
		return sw(out, 0, 0x6F00);
	return sw(out, 5 + s, 0x9000);
}

static size_t answer(void *ctx, const uint8_t *hdr, const uint8_t *data, size_t lc, uint8_t *out)
{
	struct u2f *u = ctx;
	if (hdr[0] != 0x00)
		return sw(out, 0, 0x6E00);
	switch (hdr[1]) {
	case 0x01:
		return do_register(u, data, lc, out);
	case 0x02:
		return do_authenticate(u, hdr[2], data, lc, out);
	case 0x03:
		memcpy(out, "U2F_V2", 6);
		return sw(out, 6, 0x9000);
	default:
		return sw(out, 0, 0x6D00);
	}
}

void vauth_use_u2f(struct vauth *v)
{
	static struct u2f u; /* one per process: the attestation key and the credentials */
	if (!u.attest) {
		u.attest = EVP_EC_gen("P-256");
		if (!u.attest || !make_cert(&u))
			abort(); /* a test tool without its crypto has nothing to test */
	}
	v->u2f = answer;
	v->u2f_ctx = &u;
}
