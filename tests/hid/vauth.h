/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A virtual FIDO authenticator at the CTAPHID report level, for tests: output reports in
 * (vauth_output), input reports out when due (vauth_next). It allocates channels (INIT
 * with the nonce echoed), answers PING, WINK, MSG (a small U2F model), CBOR (getInfo and
 * an echo, with keepalives before the answer when asked) and CANCEL, and injects faults
 * into what it sends. No I/O, no threads, no clock of its own: the caller passes the time
 * and moves the reports (the HID simulator at the backend's seam, tests/backends/hidsim.c;
 * a pipe for python-fido2's client, vauth-pipe.c). */
#ifndef CALAIS_TEST_VAUTH_H
#define CALAIS_TEST_VAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VAUTH_REPORT 64
#define VAUTH_QUEUE 512
#define VAUTH_REGISTER_LEN 1000u /* U2F REGISTER answers this many bytes i & 0xFF */

enum vauth_fault {
	VA_NONE,
	VA_SILENT,          /* nothing is ever answered */
	VA_SILENT_COMMANDS, /* INIT is answered, nothing else */
	VA_WRONG_CHANNEL,   /* every answer goes to another channel */
	VA_OTHER_CHANNEL_FIRST, /* a stray message on another channel, then the answer */
	VA_WRONG_NONCE,     /* INIT answers echo another nonce */
	VA_OTHER_NONCE_FIRST, /* an INIT answer with another nonce, then the right one */
	VA_BAD_SEQ,         /* the answer's first continuation has sequence 1 */
	VA_OVERLONG,        /* the answer announces 7610 bytes */
	VA_KEEPALIVE_FOREVER, /* keepalives every 50 ms, never an answer */
	VA_ERROR,           /* the next command gets ERROR (fault_arg) */
	VA_BUSY,            /* the next fault_arg commands get ERROR 06 (channel busy) */
	VA_INVALID_CHANNEL, /* the next command gets ERROR 0B (the device forgot channels) */
	VA_UNPLUG_MID,      /* the answer's first packet, then unplugged is set */
	VA_NEW_MSG_MID,     /* a new message start in place of the answer's continuation */
	VA_TRUNCATED,       /* the answer's first packet only */
	VA_STRAY_CONT,      /* a continuation packet before the answer */
	VA_FAULTS           /* how many there are */
};

/* What the authenticator saw. */
struct vauth_stats {
	unsigned inits, cancels, msgs, cbors, pings, winks;
	uint8_t last_msg[8192]; /* the last CTAPHID_MSG request */
	size_t last_msg_len;
};

struct vauth_pkt {
	uint8_t b[VAUTH_REPORT];
	uint64_t due;
};

/* A U2F model of the caller's: the answer (status word included) to a request with
 * header hdr (CLA INS P1 P2) and lc data bytes, written to out (room for 8192); returns
 * its length. */
typedef size_t (*vauth_u2f_fn)(void *ctx, const uint8_t hdr[4], const uint8_t *data, size_t lc,
                               uint8_t *out);

struct vauth {
	uint8_t caps;          /* CTAPHID capabilities: 0x01 WINK, 0x04 CBOR, 0x08 NMSG */
	enum vauth_fault fault;
	unsigned fault_arg;
	unsigned keepalives;   /* before each CBOR answer, 30 ms apart (status 2) */
	bool unplugged;        /* VA_UNPLUG_MID happened */
	struct vauth_stats st;
	vauth_u2f_fn u2f;      /* NULL: the built-in model (REGISTER answers 1000 pattern
	                        * bytes, AUTHENTICATE echoes its data) */
	void *u2f_ctx;
	/* Internal state. */
	uint32_t next_cid;
	uint32_t rx_cid;
	uint8_t rx_cmd;
	uint8_t rx[8192];
	uint8_t out[8192]; /* an answer being built */
	size_t rx_len, rx_got;
	unsigned rx_seq;
	bool rx_busy;
	struct vauth_pkt q[VAUTH_QUEUE];
	size_t q_head, q_n;
	bool ka_forever;
	uint32_t ka_cid;
	uint8_t ka_cmd;
	uint64_t ka_next;
};

/* getInfo's answer (status byte included). */
extern const uint8_t vauth_get_info[];
extern const size_t vauth_get_info_len;

void vauth_init(struct vauth *v, uint8_t caps);
/* One output report from the host (VAUTH_REPORT bytes, without a report id). */
void vauth_output(struct vauth *v, const uint8_t *report, uint64_t now_ms);
/* Queues an input report as it is, due at due_ms (for a caller's own framing). */
void vauth_push(struct vauth *v, const uint8_t *report, uint64_t due_ms);
/* The next input report if one is due at now_ms (true); otherwise *wake_ms is when the
 * next one will be (UINT64_MAX: none pending). */
bool vauth_next(struct vauth *v, uint8_t *report, uint64_t now_ms, uint64_t *wake_ms);
/* Real U2F from now on (vauth-u2f.c, libcrypto): P-256 credentials, a self-signed
 * attestation certificate, real signatures, a counter per credential. */
void vauth_use_u2f(struct vauth *v);

#endif
