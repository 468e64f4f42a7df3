/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The T=1 engine against t1card, a card written from the receiver rules of ISO/IEC
 * 7816-3:2006 11.6 and nothing of the engine's: a scenario for every recovery rule (lost,
 * corrupted and out-of-sequence blocks in each direction, during chaining both ways, WTX,
 * IFS, ABORT, RESYNCH), the bounds on what a card may send, and the CRC vectors of a real
 * trace computed by the card's own division. Each scenario checks what the card saw as
 * well as what the caller got. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "iso7816/iso7816.h"
#include "t1card.h"

static struct t1card *card(bool crc)
{
	struct t1card *c = malloc(sizeof(*c));
	t1card_init(c);
	c->crc = crc;
	return c;
}

static void engine(struct calais__t1 *t, struct t1card *c)
{
	memset(t, 0, sizeof(*t));
	calais__t1_init(t, NULL);
	t->user = c;
	t->xfer = t1card_xfer;
	t->bwt_ms = 20;
	t->crc = c->crc;
	t->ifsc = c->ifsc;
}

static uint8_t cmd[2000], resp[2000];

/* One APDU of n bytes (an echo, or the card's answer_len bytes); its code. */
static LONG apdu(struct calais__t1 *t, size_t n, size_t cap, size_t *got)
{
	for (size_t i = 0; i < n; i++)
		cmd[i] = (uint8_t)(i * 11 + 5);
	*got = cap;
	return calais__t1_transceive(t, cmd, n, resp, got);
}

/* The APDU works and its answer is the card's, byte for byte. */
static void apdu_ok(struct calais__t1 *t, struct t1card *c, size_t n, const char *what)
{
	size_t got;
	LONG rv = apdu(t, n, sizeof(resp), &got);
	cr_assert_eq(rv, SCARD_S_SUCCESS, "%s: 0x%08lX (%s)", what, (unsigned long)rv,
	             pcsc_stringify_error(rv));
	size_t want = (c->answer_len ? c->answer_len : n) + 2;
	cr_assert_eq(got, want, "%s: %zu bytes, want %zu", what, got, want);
	for (size_t i = 0; i + 2 < want; i++)
		cr_assert_eq(resp[i], c->answer_len ? (uint8_t)(i * 3 + 1) : cmd[i],
		             "%s: byte %zu", what, i);
	cr_assert(resp[got - 2] == 0x90 && resp[got - 1] == 0x00, "%s: SW", what);
}

/* R-blocks the card received with error code `code` (1 EDC/parity, 2 other). */
static unsigned r_blocks(const struct t1card *c, uint8_t code)
{
	return t1card_seen(c, 0xEF, (uint8_t)(0x80 | code));
}

/* I-blocks the card received. */
static unsigned i_blocks(const struct t1card *c)
{
	return t1card_seen(c, 0x80, 0x00);
}

Test(t1_iso, crc_vectors_by_the_cards_own_division)
{
	static const uint8_t v[4][6] = {
		{ 0x00, 0xC1, 0x01, 0xFE, 0x54, 0x4E },
		{ 0x00, 0xE1, 0x01, 0xFE, 0x57, 0x75 },
		{ 0x00, 0x80, 0x00, 0xB5, 0xFF },
		{ 0x00, 0xC0, 0x00, 0xF3, 0x99 },
	};
	static const size_t len[4] = { 4, 4, 3, 3 };
	for (int i = 0; i < 4; i++) {
		uint8_t out[2];
		cr_assert_eq(t1card_edc(true, v[i], len[i], out), 2);
		cr_assert(out[0] == v[i][len[i]] && out[1] == v[i][len[i] + 1],
		          "vector %d: %02X %02X", i, out[0], out[1]);
	}
}

Test(t1_iso, error_free_exchanges_chain_both_ways)
{
	for (int crc = 0; crc < 2; crc++) {
		struct t1card *c = card(crc);
		struct calais__t1 t;
		engine(&t, c);
		apdu_ok(&t, c, 5, "short");
		apdu_ok(&t, c, 300, "host chains");
		c->answer_len = 600;
		apdu_ok(&t, c, 5, "card chains");
		cr_assert_eq(c->apdus, 3);
		cr_assert_eq(c->edc_errors, 0, "the card accepted the engine's EDC (crc %d)", crc);
		cr_assert_eq(r_blocks(c, 1) + r_blocks(c, 2), 0);
		free(c);
	}
}

/* Rule 7.1 from the card's side, then the host's: the card did not get the I-block; the
 * engine's R-block gets R(0) back, asking for I(0): the engine sends the I-block again,
 * not its own last block (the R-block). */
Test(t1_iso, lost_host_i_block_is_sent_again)
{
	struct t1card *c = card(true);
	c->to_card[0] = T1F_LOST;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 10, "lost I-block");
	cr_assert_eq(i_blocks(c), 1, "the card saw the I-block once (it was lost once)");
	cr_assert_eq(r_blocks(c, 2), 1, "a timeout is an 'other' error");
	cr_assert_eq(c->apdus, 1);
	free(c);
}

Test(t1_iso, corrupted_host_i_block_is_sent_again)
{
	struct t1card *c = card(true);
	c->to_card[0] = T1F_EDC;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 10, "corrupted I-block");
	cr_assert_eq(c->edc_errors, 1);
	cr_assert_eq(i_blocks(c), 2);
	cr_assert_eq(c->apdus, 1);
	free(c);
}

/* The host's I-block arrives with the wrong N(S) (a valid EDC): the card takes it for a
 * repetition and sends its last block again; the engine rejects that and recovers. */
Test(t1_iso, out_of_sequence_host_i_block)
{
	struct t1card *c = card(false);
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 10, "first");
	c->to_card[1] = T1F_SEQ;
	apdu_ok(&t, c, 12, "second, out of sequence once");
	cr_assert_eq(c->apdus, 2);
	cr_assert_eq(c->resynchs, 0, "recovered without RESYNCH");
	free(c);
}

/* The card's answer is lost, corrupted, or carries the wrong N(S): the engine's R-block
 * says why (code 2, 1, 2) and the card sends its I-block again. */
Test(t1_iso, lost_corrupted_and_out_of_sequence_card_blocks)
{
	static const enum t1card_fault f[] = { T1F_LOST, T1F_EDC, T1F_SEQ };
	static const uint8_t code[] = { 2, 1, 2 };
	for (int i = 0; i < 3; i++) {
		struct t1card *c = card(i == 1);
		c->to_host[0] = f[i];
		struct calais__t1 t;
		engine(&t, c);
		apdu_ok(&t, c, 10, "card block fault");
		cr_assert_eq(r_blocks(c, code[i]), 1, "fault %d: R-block code %u", i, code[i]);
		cr_assert_eq(r_blocks(c, (uint8_t)(3 - code[i])), 0, "fault %d: no other code", i);
		cr_assert_eq(c->apdus, 1);
		free(c);
	}
}

/* The host chains: a corrupted middle piece is sent again when the card asks with an
 * R-block naming it; a lost acknowledgement from the card is asked for again. */
Test(t1_iso, faults_while_the_host_chains)
{
	struct t1card *c = card(true);
	c->to_card[1] = T1F_EDC;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 100, "second piece corrupted");
	cr_assert_eq(c->edc_errors, 1);
	cr_assert_eq(i_blocks(c), 5, "4 pieces, the second twice");
	free(c);

	c = card(false);
	c->to_host[0] = T1F_LOST;
	engine(&t, c);
	apdu_ok(&t, c, 100, "first acknowledgement lost");
	cr_assert_eq(i_blocks(c), 4, "every piece once");
	cr_assert_eq(r_blocks(c, 2), 1);
	free(c);
}

/* The card chains: a lost piece is asked for again; a corrupted acknowledgement of the
 * engine's is answered by the card's R-block, and the engine acknowledges again. */
Test(t1_iso, faults_while_the_card_chains)
{
	struct t1card *c = card(true);
	c->answer_len = 200;
	c->to_host[2] = T1F_LOST;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 5, "third piece lost");
	cr_assert_eq(r_blocks(c, 2), 1);
	free(c);

	c = card(true);
	c->answer_len = 200;
	c->to_card[2] = T1F_EDC; /* the engine's second acknowledgement */
	engine(&t, c);
	apdu_ok(&t, c, 5, "acknowledgement corrupted");
	cr_assert_eq(c->edc_errors, 1);
	cr_assert_eq(r_blocks(c, 2), 0, "the acknowledgement went again as it was (code 0)");
	free(c);

	c = card(false);
	c->answer_len = 200;
	c->to_host[1] = T1F_SEQ;
	engine(&t, c);
	apdu_ok(&t, c, 5, "second piece out of sequence");
	cr_assert_eq(r_blocks(c, 2), 1);
	free(c);
}

/* Empty I-blocks inside a chain are allowed (scenario 7 of annex A). */
Test(t1_iso, empty_i_blocks_within_a_chain)
{
	struct t1card *c = card(false);
	c->answer_len = 40;
	c->empty_left = 3;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 5, "three empty pieces first");
	free(c);
}

/* ... but a card sending only those is stopped: its chain aborted, the call bounded. */
Test(t1_iso, endless_empty_chain_is_aborted)
{
	struct t1card *c = card(false);
	c->empty_left = 1000000;
	struct calais__t1 t;
	engine(&t, c);
	size_t got;
	cr_assert_eq(apdu(&t, 5, sizeof(resp), &got), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->aborts, 1);
	cr_assert_leq(c->n_to_card, CALAIS__T1_MAX_EMPTY + 3);
	apdu_ok(&t, c, 5, "the next command, in step");
	free(c);
}

/* S(WTX request): answered with the same multiplier, the answer follows; the response
 * corrupted on the way: the card asks again (rule 7.3) and is answered again. */
Test(t1_iso, wtx_and_a_lost_wtx_response)
{
	struct t1card *c = card(true);
	c->to_host[0] = T1F_WTX;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 5, "WTX");
	cr_assert_eq(c->wtx_answer, 2);
	cr_assert_eq(t1card_seen(c, 0xFF, 0xE3), 1);
	free(c);

	c = card(true);
	c->to_host[0] = T1F_WTX;
	c->to_card[1] = T1F_EDC;
	engine(&t, c);
	apdu_ok(&t, c, 5, "WTX response corrupted");
	cr_assert_eq(t1card_seen(c, 0xFF, 0xE3), 2, "answered twice");
	free(c);
}

/* S(IFS request) from the card in the middle of the host's chain: the rest of the chain
 * follows the new IFSC (the card refuses anything larger). */
Test(t1_iso, card_lowers_its_ifsc_during_the_hosts_chain)
{
	struct t1card *c = card(false);
	c->to_host[0] = T1F_IFS;
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 100, "IFS 16 after the first piece");
	cr_assert_eq(t1card_seen(c, 0xFF, 0xE1), 1);
	cr_assert_eq(t.ifsc, 16);
	cr_assert_eq(i_blocks(c), 1 + 5, "32 bytes, then 68 in pieces of 16");
	cr_assert_eq(r_blocks(c, 2), 0);
	free(c);
}

/* S(IFS request) from the host: the card's pieces grow to IFSD. */
Test(t1_iso, host_raises_ifsd)
{
	struct t1card *c = card(true);
	c->answer_len = 600;
	struct calais__t1 t;
	engine(&t, c);
	cr_assert_eq(calais__t1_set_ifsd(&t, 254), SCARD_S_SUCCESS);
	cr_assert_eq(c->ifsd, 254);
	apdu_ok(&t, c, 5, "answer in pieces of 254");
	cr_assert_eq(r_blocks(c, 0), 2, "three pieces, two acknowledgements");
	cr_assert_eq(calais__t1_set_ifsd(&t, 0), SCARD_E_INVALID_PARAMETER);
	cr_assert_eq(calais__t1_set_ifsd(&t, 255), SCARD_E_INVALID_PARAMETER);
	free(c);
}

/* The card aborts the host's chain: the call fails, the next command is in step. */
Test(t1_iso, card_aborts_the_hosts_chain)
{
	struct t1card *c = card(false);
	c->to_host[1] = T1F_ABORT;
	struct calais__t1 t;
	engine(&t, c);
	size_t got;
	cr_assert_eq(apdu(&t, 100, sizeof(resp), &got), SCARD_F_COMM_ERROR);
	cr_assert_eq(t1card_seen(c, 0xFF, 0xE2), 1, "the engine answered S(ABORT response)");
	apdu_ok(&t, c, 10, "the next command, in step");
	cr_assert_eq(c->apdus, 1);
	cr_assert_eq(c->resynchs, 0);
	free(c);
}

/* An answer longer than the caller's buffer: the engine aborts the card's chain, so the
 * next command is in step (without it, the card would take it for garbage). */
Test(t1_iso, answer_too_long_aborts_the_cards_chain)
{
	struct t1card *c = card(true);
	c->answer_len = 300;
	struct calais__t1 t;
	engine(&t, c);
	size_t got;
	cr_assert_eq(apdu(&t, 5, 100, &got), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(c->aborts, 1);
	c->answer_len = 10;
	apdu_ok(&t, c, 5, "the next command, in step");
	cr_assert_eq(c->resynchs, 0);
	free(c);
}

/* Persistent errors: three R-blocks, then RESYNCH; the command is lost, the link works
 * again with both sides' sequence numbers at 0. */
Test(t1_iso, resynch_after_three_failed_retransmissions)
{
	struct t1card *c = card(true);
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 5, "first");
	for (int i = 1; i <= 4; i++)
		c->to_host[i] = T1F_EDC;
	size_t got;
	cr_assert_eq(apdu(&t, 5, sizeof(resp), &got), SCARD_F_COMM_ERROR);
	cr_assert_eq(r_blocks(c, 1), 3);
	cr_assert_eq(c->resynchs, 1);
	cr_assert(t.ns == 0 && t.nr == 0 && c->ns == 0 && c->nr == 0);
	apdu_ok(&t, c, 5, "after RESYNCH");
	free(c);
}

/* A card that stops answering: three R-blocks, three RESYNCH requests, then the card is
 * unresponsive (the caller deactivates it). */
Test(t1_iso, resynch_unanswered_is_an_unresponsive_card)
{
	struct t1card *c = card(false);
	struct calais__t1 t;
	engine(&t, c);
	apdu_ok(&t, c, 5, "first");
	c->mute = true;
	unsigned before = c->n_to_card;
	size_t got;
	cr_assert_eq(apdu(&t, 5, sizeof(resp), &got), SCARD_W_UNRESPONSIVE_CARD);
	cr_assert_eq(c->n_to_card - before, 1 + 3 + 3, "I-block, 3 R-blocks, 3 RESYNCH");
	free(c);
}

/* A RESYNCH response lost once: the request goes again (rule 7.3). */
Test(t1_iso, lost_resynch_response_is_asked_again)
{
	struct t1card *c = card(true);
	for (int i = 0; i < 4; i++)
		c->to_host[i] = T1F_LOST;
	c->to_host[4] = T1F_LOST; /* the first S(RESYNCH response) */
	struct calais__t1 t;
	engine(&t, c);
	size_t got;
	cr_assert_eq(apdu(&t, 5, sizeof(resp), &got), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->resynchs, 2);
	apdu_ok(&t, c, 5, "after RESYNCH");
	free(c);
}
