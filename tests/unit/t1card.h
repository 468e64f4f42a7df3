/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* t1card: a T=1 card written from the receiver rules of ISO/IEC 7816-3:2006 11.6 (what a
 * card does with each block it gets), independent of lib/iso7816/t1.c: its own EDC (the
 * CRC by polynomial division over the bits in line order), its own sequence numbers, its
 * own chaining. Faults are planned per block and direction, and everything the card sees
 * is recorded for the tests (test_t1_iso.c) to check. */
#ifndef T1CARD_H
#define T1CARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iso7816/iso7816.h"

enum t1card_fault {
	T1F_NONE,
	T1F_LOST,      /* the block never arrives */
	T1F_EDC,       /* the block arrives with a wrong EDC */
	T1F_SEQ,       /* an I-block with the wrong N(S) (and a valid EDC) */
	T1F_WTX,       /* card to host only: S(WTX request) first, the block held back */
	T1F_IFS,       /* card to host only: S(IFS request 16) first, the block held back */
	T1F_ABORT,     /* card to host only: S(ABORT request) instead of the block */
};

#define T1CARD_LOG 256

struct t1card {
	/* configuration */
	bool crc;
	uint8_t ifsc;      /* what the card takes (INF beyond it: R-block, other error) */
	uint8_t ifsd;      /* what the card sends, until S(IFS request) */
	size_t answer_len; /* data bytes before 90 00; 0: the command echoed */
	bool mute;         /* never answers */
	/* faults, by the index of the block in its direction (0: the first) */
	enum t1card_fault to_card[32], to_host[32];
	unsigned n_to_card, n_to_host; /* blocks so far in each direction */

	/* protocol state (11.6.2): the card's send and receive sequence numbers */
	uint8_t ns;        /* N(S) of the card's next I-block */
	uint8_t nr;        /* N(S) the card expects in the host's next I-block */
	uint8_t rx[70000];
	size_t rx_len;
	uint8_t tx[70000];
	size_t tx_len, tx_off, tx_chunk;
	bool tx_pending;   /* the card's last I-block is not acknowledged yet */
	bool wtx_pending;  /* S(WTX request) sent: the answer follows the response */
	uint8_t last[3 + 254 + 2];   /* the card's last block: repeated when asked */
	size_t last_len;
	uint8_t last_i[3 + 254 + 2]; /* the card's last I-block */
	size_t last_i_len;
	uint8_t held[3 + 254 + 2]; /* the block behind an S-request of the card's */
	size_t held_len;
	unsigned empty_left;

	/* what the card saw */
	uint8_t seen_pcb[T1CARD_LOG];
	uint8_t seen_len[T1CARD_LOG];
	unsigned n_seen;
	unsigned apdus, resynchs, aborts, edc_errors;
	uint8_t wtx_answer;      /* INF of the last S(WTX response) */
	uint8_t max_inf;         /* largest INF received in an I-block */
};

void t1card_init(struct t1card *c);
/* The card's EDC over b[0..n) into out; its length (1 LRC, 2 CRC high byte first). */
size_t t1card_edc(bool crc, const uint8_t *b, size_t n, uint8_t out[2]);
/* calais__t1's block transport (xfer): the card on the other end. */
LONG t1card_xfer(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
                 uint32_t timeout_ms);
/* How many blocks the card received whose PCB & mask == value. */
unsigned t1card_seen(const struct t1card *c, uint8_t mask, uint8_t value);

#endif
