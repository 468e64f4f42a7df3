/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The CCID device simulator (see ccidsim.h): implements the backend's USB seam with
 * in-memory devices. A device answers every PC_to_RDR message the backend sends, runs a
 * card behind each slot (APDU level, T=0 TPDUs with 61xx/6Cxx, T=1 blocks with chaining
 * and IFS, or the raw byte stream of character level), and injects faults. */
#include "ccidsim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calais-internal.h"
#include "usb.h"
#include "../serial/t1crc.h"

#define EP_OUT 0x02
#define EP_IN 0x81
#define EP_INTR 0x83
#define BIG 70000

struct reply {
	struct reply *next;
	size_t n;
	bool stall, oversized;
	long ready_ms; /* not sent before (a reader busy with the card); 0: at once */
	uint8_t b[];
};

struct slot {
	bool present, powered;
	struct ccidsim_card card;
	/* T=0: the answer GET RESPONSE fetches. */
	uint8_t pending[BIG];
	size_t pending_len;
	/* T=1 card. */
	uint8_t ns, nr, ifsd;
	uint8_t cmd[BIG];
	size_t cmd_len;
	uint8_t resp[BIG];
	size_t resp_len, resp_off, chunk;
	bool answering;
	uint8_t last[300];
	size_t last_len;
	/* Character level: bytes from the host not consumed yet, bytes the card sent. */
	uint8_t in[600];
	size_t in_len;
	uint8_t out[BIG];
	size_t out_len, out_off;
	int t0_state; /* 0 header, 1 data */
	uint8_t hdr[5];
	/* Extended APDU level. */
	uint8_t xcmd[BIG];
	size_t xcmd_len;
	uint8_t xresp[BIG];
	size_t xresp_len, xresp_off;
};

struct ccidsim_dev {
	struct ccidsim_dev *next;
	unsigned refs;
	bool plugged, gone, busy, storm;
	struct ccidsim_cfg cfg;
	uint8_t bus, address;
	uint8_t config[128];
	size_t config_len;
	struct slot slots[CCIDSIM_MAX_SLOTS];
	struct reply *replies, **replies_tail;
	uint8_t intr[64][8];
	size_t intr_len[64];
	unsigned intr_head, intr_count;
	enum ccidsim_fault fault;
	unsigned fault_count; /* 0 with a fault set: for ever */
	int fault_slot;       /* the slot whose commands get it; -1: every slot */
	/* ICCD: the answer the next DATA_BLOCK request returns. */
	uint8_t iccd_block[1 + BIG];
	size_t iccd_len;
	bool iccd_polled;     /* version B: one "poll again" answer given */
	uint16_t iccd_delay;  /* version B: every DATA_BLOCK is "poll again" after this (10 ms) */
	uint8_t a_state;      /* version A status: 0 idle, 0x10 data, 0x20 SW */
	bool a_in;            /* version A: the card waits for the command's data */
	uint8_t a_hdr[5], a_sw[2];
	bool mute_pending;
	uint8_t mute_slot, mute_seq;
	uint32_t delay_next_ms; /* ccidsim_delay_next() */
	uint32_t storm_gap_ms;  /* ccidsim_storm_gap() */
	long storm_next_ms;
	struct ccidsim_stats stats;
	uint32_t rng;
};

struct calais__usb_handle {
	ccidsim_dev *d;
	uint8_t cancel[3]; /* per endpoint: bulk out, bulk in, interrupt */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static ccidsim_dev *devices;
static calais__usb_changed_cb changed_cb;
static void *changed_user;
static uint8_t next_address = 1;

static long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void notify_changed(void)
{
	calais__usb_changed_cb cb = changed_cb;
	void *u = changed_user;
	if (cb)
		cb(u);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- descriptors ---------------------------------------------------------------------- */

static void build_config(ccidsim_dev *d)
{
	const struct ccidsim_cfg *c = &d->cfg;
	uint8_t *b = d->config;
	size_t n = 0;
	uint8_t cls[54] = { 54, 0x21, 0x10, 0x01 };
	cls[4] = (uint8_t)(c->slots - 1);
	cls[5] = c->voltage ? c->voltage : 7;
	put_le32(cls + 6, c->protocols ? c->protocols : 3);
	put_le32(cls + 10, 4000);
	put_le32(cls + 14, 12000);
	cls[18] = 1;
	put_le32(cls + 19, 10752);
	put_le32(cls + 23, 344086);
	cls[27] = 0;
	put_le32(cls + 28, c->max_ifsd ? c->max_ifsd : 254);
	put_le32(cls + 40, c->features);
	put_le32(cls + 44, c->max_msg ? c->max_msg : 271);
	cls[48] = 0xFF;
	cls[49] = 0xFF;
	cls[50] = (uint8_t)c->lcd_layout;
	cls[51] = (uint8_t)(c->lcd_layout >> 8);
	cls[52] = c->pin_support;
	cls[53] = c->max_busy ? c->max_busy : 1;
	uint8_t cfg[9] = { 9, 2, 0, 0, 1, 1, 0, 0x80, 50 };
	memcpy(b, cfg, 9);
	n = 9;
	uint8_t n_ep = c->iface_protocol ? (c->intr ? 1 : 0) : (c->intr ? 3 : 2);
	uint8_t ifd[9] = { 9, 4, 0, 0, n_ep, c->iface_class ? c->iface_class : 0x0B, 0,
	                   c->iface_protocol, 4 };
	memcpy(b + n, ifd, 9);
	n += 9;
	if (!c->desc_on_endpoint) {
		memcpy(b + n, cls, 54);
		n += 54;
	}
	if (!c->iface_protocol) {
		uint8_t out[7] = { 7, 5, EP_OUT, 2, 64, 0, 0 }, in[7] = { 7, 5, EP_IN, 2, 64, 0, 0 };
		memcpy(b + n, out, 7);
		n += 7;
		memcpy(b + n, in, 7);
		n += 7;
	}
	if (c->intr) {
		uint8_t ep[7] = { 7, 5, EP_INTR, 3, 8, 0, 16 };
		memcpy(b + n, ep, 7);
		n += 7;
	}
	if (c->desc_on_endpoint) {
		memcpy(b + n, cls, 54);
		n += 54;
	}
	b[2] = (uint8_t)n;
	b[3] = (uint8_t)(n >> 8);
	d->config_len = n;
}

/* ---- replies ---------------------------------------------------------------------------- */

static struct reply *push(ccidsim_dev *d, const uint8_t *b, size_t n)
{
	struct reply *r = malloc(sizeof(*r) + n);
	r->next = NULL;
	r->n = n;
	r->stall = r->oversized = false;
	r->ready_ms = 0;
	memcpy(r->b, b, n);
	*d->replies_tail = r;
	d->replies_tail = &r->next;
	pthread_cond_broadcast(&cond);
	return r;
}

static uint8_t icc(const struct slot *s)
{
	return !s->present ? 2 : s->powered ? 0 : 1;
}

static uint8_t *msg_buf(void)
{
	static __thread uint8_t buf[BIG + 10];
	return buf;
}

static size_t make(uint8_t *b, uint8_t type, uint8_t slot, uint8_t seq, uint8_t status,
                   uint8_t error, uint8_t param, const uint8_t *data, size_t n)
{
	b[0] = type;
	put_le32(b + 1, (uint32_t)n);
	b[5] = slot;
	b[6] = seq;
	b[7] = status;
	b[8] = error;
	b[9] = param;
	if (n)
		memmove(b + 10, data, n);
	return 10 + n;
}

/* ---- the card: APDUs -------------------------------------------------------------------- */

/* Answers an APDU: SELECT and VERIFY 90 00; 80 EE echoes its data; 80 EF P1 P2 returns
 * P1P2 bytes (i & 0xFF); anything else 6D 00. */
static size_t card_apdu(const uint8_t *a, size_t n, uint8_t *out)
{
	if (n < 4)
		return out[0] = 0x67, out[1] = 0x00, 2;
	size_t lc = 0, off = 4;
	if (n > 5 && a[4] == 0 && n >= 7) {
		lc = (size_t)(a[5] << 8 | a[6]);
		off = 7;
	} else if (n > 5) {
		lc = a[4];
		off = 5;
	}
	if (off + lc > n)
		lc = 0;
	size_t len = 0;
	switch (a[1]) {
	case 0xA4:
	case 0x20:
		break;
	case 0xEE:
		memcpy(out, a + off, lc);
		len = lc;
		break;
	case 0xEF:
		len = (size_t)(a[2] << 8 | a[3]);
		if (len > 65536)
			len = 65536;
		for (size_t i = 0; i < len; i++)
			out[i] = (uint8_t)i;
		break;
	default:
		out[0] = 0x6D;
		out[1] = 0x00;
		return 2;
	}
	out[len] = 0x90;
	out[len + 1] = 0x00;
	return len + 2;
}

/* T=0 TPDU: case 2 answers at once (6C when P3 is wrong), case 3 says 61 xx and keeps
 * the data for GET RESPONSE. */
static size_t t0_tpdu(struct slot *s, const uint8_t *t, size_t n, uint8_t *out)
{
	uint8_t *tmp = malloc(BIG);
	size_t len = 0;
	if (n < 5) {
		out[0] = 0x67, out[1] = 0;
		len = 2;
	} else if (t[1] == 0xC0) {
		size_t want = t[4] ? t[4] : 256;
		if (want > s->pending_len) {
			out[0] = 0x6C;
			out[1] = (uint8_t)s->pending_len;
			len = 2;
		} else {
			memcpy(out, s->pending, want);
			memmove(s->pending, s->pending + want, s->pending_len - want);
			s->pending_len -= want;
			len = want;
			out[len++] = s->pending_len ? 0x61 : 0x90;
			out[len++] = s->pending_len ? (uint8_t)s->pending_len : 0x00;
		}
	} else if (n == 5) {
		size_t r = card_apdu(t, 5, tmp), data = r - 2, p3 = t[4] ? t[4] : 256;
		if (data == 0) {
			memcpy(out, tmp + r - 2, 2);
			len = 2;
		} else if (data != p3) {
			out[0] = 0x6C;
			out[1] = (uint8_t)data;
			len = 2;
		} else {
			memcpy(out, tmp, r);
			len = r;
		}
	} else {
		size_t r = card_apdu(t, n, tmp), data = r - 2;
		if (data) {
			memcpy(s->pending, tmp, data);
			s->pending_len = data;
			out[0] = 0x61;
			out[1] = (uint8_t)data;
		} else {
			memcpy(out, tmp + r - 2, 2);
		}
		len = 2;
	}
	free(tmp);
	return len;
}

/* T=1 card (ISO/IEC 7816-3 clause 11), IFSC 32 from its ATR; LRC, or the CRC
 * (tests/serial/t1crc.h) when card.t1_crc says so. */
static size_t t1_edc_len(const struct slot *s)
{
	return s->card.t1_crc ? 2 : 1;
}

/* The EDC of b[0..n) at b[n]; its length. */
static size_t t1_edc(const struct slot *s, uint8_t *b, size_t n)
{
	if (s->card.t1_crc) {
		uint16_t v = t1crc(b, n);
		b[n] = (uint8_t)(v >> 8);
		b[n + 1] = (uint8_t)v;
		return 2;
	}
	uint8_t lrc = 0;
	for (size_t i = 0; i < n; i++)
		lrc ^= b[i];
	b[n] = lrc;
	return 1;
}

static size_t t1_frame(const struct slot *s, uint8_t pcb, const uint8_t *inf, size_t len,
                       uint8_t *out)
{
	out[0] = 0;
	out[1] = pcb;
	out[2] = (uint8_t)len;
	if (len)
		memcpy(out + 3, inf, len);
	return 3 + len + t1_edc(s, out, 3 + len);
}

static size_t t1_answer_block(struct slot *s, uint8_t *out)
{
	size_t left = s->resp_len - s->resp_off;
	s->chunk = left > s->ifsd ? s->ifsd : left;
	bool more = s->chunk < left;
	return t1_frame(s, (uint8_t)(s->ns << 6 | (more ? 0x20 : 0)), s->resp + s->resp_off,
	                s->chunk, out);
}

static size_t t1_block(ccidsim_dev *d, struct slot *s, const uint8_t *b, size_t n, uint8_t *out)
{
	size_t len, el = t1_edc_len(s);
	uint8_t want[300];
	bool bad = n < 3 + el || n != 3 + el + (size_t)b[2];
	if (!bad) {
		memcpy(want, b, n - el);
		t1_edc(s, want, n - el);
		bad = memcmp(want + n - el, b + n - el, el) != 0;
	}
	if (bad) {
		len = t1_frame(s, (uint8_t)(0x80 | s->nr << 4 | 1), NULL, 0, out);
	} else if ((b[1] & 0xC0) == 0xC0) {
		uint8_t type = b[1] & 0x1F;
		if (type == 1 && b[2] == 1) {
			d->stats.ifs_requests++;
			s->ifsd = b[3];
			len = t1_frame(s, 0xE1, b + 3, 1, out);
		} else if (type == 0) {
			s->ns = s->nr = 0;
			s->cmd_len = 0;
			s->answering = false;
			len = t1_frame(s, 0xE0, NULL, 0, out);
		} else if (type == 2) {
			/* ABORT: the chain in progress is dropped; the card's own I-blocks
			 * sent so far count as acknowledged. */
			if (s->answering)
				s->ns ^= 1;
			s->cmd_len = 0;
			s->answering = false;
			len = t1_frame(s, 0xE2, NULL, 0, out);
		} else {
			len = t1_frame(s, (uint8_t)(0x80 | s->nr << 4 | 2), NULL, 0, out);
		}
	} else if ((b[1] & 0xC0) == 0x80) {
		uint8_t nr = (b[1] >> 4) & 1;
		if (s->answering && nr != s->ns) {
			s->ns ^= 1;
			s->resp_off += s->chunk;
			len = t1_answer_block(s, out);
		} else {
			memcpy(out, s->last, s->last_len);
			len = s->last_len;
		}
	} else if (((b[1] >> 6) & 1) != s->nr) {
		memcpy(out, s->last, s->last_len);
		len = s->last_len;
	} else {
		if (s->answering) {
			/* The host's new I-block acknowledges our last one. */
			s->ns ^= 1;
			s->answering = false;
		}
		s->nr ^= 1;
		if (s->cmd_len + b[2] <= sizeof(s->cmd)) {
			memcpy(s->cmd + s->cmd_len, b + 3, b[2]);
			s->cmd_len += b[2];
		}
		if (b[1] & 0x20) {
			len = t1_frame(s, (uint8_t)(0x80 | s->nr << 4), NULL, 0, out);
		} else {
			s->resp_len = card_apdu(s->cmd, s->cmd_len, s->resp);
			s->resp_off = 0;
			s->cmd_len = 0;
			s->answering = true;
			len = t1_answer_block(s, out);
		}
	}
	memcpy(s->last, out, len);
	s->last_len = len;
	return len;
}

/* Character level: the host's bytes go into the card's byte stream. */
static void out_bytes(struct slot *s, const uint8_t *b, size_t n)
{
	if (s->out_len + n <= sizeof(s->out)) {
		memcpy(s->out + s->out_len, b, n);
		s->out_len += n;
	}
}

static bool incoming_ins(uint8_t ins)
{
	return ins == 0xEE || ins == 0xA4 || ins == 0x20;
}

static void chr_feed(ccidsim_dev *d, struct slot *s, const uint8_t *b, size_t n)
{
	if (s->in_len + n > sizeof(s->in)) {
		s->in_len = 0;
		return;
	}
	memcpy(s->in + s->in_len, b, n);
	s->in_len += n;
	uint8_t *tmp = malloc(BIG);
	for (bool progress = true; progress;) {
		progress = false;
		if (s->card.t1) {
			if (s->in_len >= 3 && s->in_len >= 3 + t1_edc_len(s) + (size_t)s->in[2]) {
				size_t blen = 3 + t1_edc_len(s) + (size_t)s->in[2];
				size_t r = t1_block(d, s, s->in, blen, tmp);
				out_bytes(s, tmp, r);
				memmove(s->in, s->in + blen, s->in_len - blen);
				s->in_len -= blen;
				progress = true;
			}
			continue;
		}
		if (s->t0_state == 0 && s->in_len >= 1 && s->in[0] == 0xFF) {
			/* PPS: echoed (the card accepts) */
			size_t plen = 3;
			if (s->in_len >= 2)
				plen += (size_t)((s->in[1] >> 4) & 1) + ((s->in[1] >> 5) & 1) + ((s->in[1] >> 6) & 1);
			if (s->in_len >= plen && s->in_len >= 2) {
				d->stats.pps++;
				out_bytes(s, s->in, plen);
				memmove(s->in, s->in + plen, s->in_len - plen);
				s->in_len -= plen;
				progress = true;
			}
			continue;
		}
		if (s->t0_state == 0 && s->in_len >= 5) {
			memcpy(s->hdr, s->in, 5);
			memmove(s->in, s->in + 5, s->in_len - 5);
			s->in_len -= 5;
			progress = true;
			uint8_t ins = s->hdr[1], p3 = s->hdr[4];
			uint8_t null = 0x60;
			out_bytes(s, &null, 1); /* one NULL first: the host must wait it out */
			if (incoming_ins(ins) && p3) {
				out_bytes(s, &ins, 1);
				s->t0_state = 1;
			} else {
				size_t r = t0_tpdu(s, s->hdr, 5, tmp);
				if (r > 2)
					out_bytes(s, &ins, 1);
				out_bytes(s, tmp, r);
			}
		} else if (s->t0_state == 1 && s->in_len >= s->hdr[4]) {
			size_t p3 = s->hdr[4];
			memcpy(tmp, s->hdr, 5);
			memcpy(tmp + 5, s->in, p3);
			memmove(s->in, s->in + p3, s->in_len - p3);
			s->in_len -= p3;
			uint8_t sw[2];
			t0_tpdu(s, tmp, 5 + p3, sw);
			out_bytes(s, sw, 2);
			s->t0_state = 0;
			progress = true;
		}
	}
	free(tmp);
}

/* ---- the reader: PC_to_RDR messages ----------------------------------------------------- */

static size_t xfr(ccidsim_dev *d, struct slot *s, uint8_t slot, uint8_t seq, const uint8_t *p,
                  size_t n, uint16_t level, uint8_t *b)
{
	uint8_t *data = malloc(BIG + 8);
	size_t len = 0, r;
	uint8_t chain = 0;
	uint32_t lvl = d->cfg.features & 0x70000;
	size_t max = (d->cfg.max_msg ? d->cfg.max_msg : 271) - 10;
	if (!s->present || !s->powered) {
		free(data);
		return make(b, 0x80, slot, seq, (uint8_t)(0x40 | icc(s)), 0xFE, 0, NULL, 0);
	}
	if (lvl == 0x40000) {
		if (level == 1 || level == 3 || level == 2)
			d->stats.levels_seen |= (uint16_t)(1u << level);
		if (level == 0x10)
			d->stats.levels_seen |= 1u << 4;
		if (level == 0x0001)
			s->xcmd_len = 0;
		if (level <= 3 && s->xcmd_len + n <= sizeof(s->xcmd)) {
			memcpy(s->xcmd + s->xcmd_len, p, n);
			s->xcmd_len += n;
		}
		if (level == 0x0001 || level == 0x0003) {
			free(data);
			return make(b, 0x80, slot, seq, 0, 0, 0x10, NULL, 0);
		}
		if (level != 0x0010) {
			s->xresp_len = card_apdu(s->xcmd, s->xcmd_len, s->xresp);
			s->xresp_off = 0;
			s->xcmd_len = 0;
		}
		size_t left = s->xresp_len - s->xresp_off;
		len = left > max ? max : left;
		memcpy(data, s->xresp + s->xresp_off, len);
		bool first = s->xresp_off == 0;
		s->xresp_off += len;
		bool more = s->xresp_off < s->xresp_len;
		chain = first ? (more ? 0x01 : 0x00) : (more ? 0x03 : 0x02);
	} else if (lvl == 0x20000) {
		len = card_apdu(p, n, data);
	} else if (lvl == 0x10000) {
		if (n >= 2 && p[0] == 0xFF && n <= 6) {
			d->stats.pps++;
			memcpy(data, p, n);
			len = n;
		} else if (s->card.t1) {
			len = t1_block(d, s, p, n, data);
		} else {
			len = t0_tpdu(s, p, n, data);
		}
	} else {
		chr_feed(d, s, p, n);
		size_t avail = s->out_len - s->out_off;
		if (avail < level) {
			free(data);
			return make(b, 0x80, slot, seq, 0x40, 0xFE, 0, NULL, 0);
		}
		memcpy(data, s->out + s->out_off, level);
		s->out_off += level;
		if (s->out_off == s->out_len)
			s->out_off = s->out_len = 0;
		len = level;
	}
	r = make(b, 0x80, slot, seq, 0, 0, chain, data, len);
	free(data);
	return r;
}

/* Handles one command; returns the reply length in b (0: none). */
static size_t command(ccidsim_dev *d, const uint8_t *m, size_t n, uint8_t *b)
{
	uint8_t type = m[0], slot = m[5], seq = m[6];
	uint32_t len = (uint32_t)m[1] | (uint32_t)m[2] << 8 | (uint32_t)m[3] << 16 | (uint32_t)m[4] << 24;
	const uint8_t *p = m + 10;
	if (len != n - 10)
		return make(b, 0x81, slot, seq, 0x40, 1, 0, NULL, 0);
	d->stats.commands[type]++;
	if (slot >= d->cfg.slots)
		return make(b, 0x81, slot, seq, 0x42, 5, 0, NULL, 0);
	struct slot *s = &d->slots[slot];
	switch (type) {
	case 0x62: /* IccPowerOn */
		d->stats.last_power_select = m[7];
		if (!s->present || s->card.mute)
			return make(b, 0x80, slot, seq, (uint8_t)(0x40 | (s->present ? 1 : 2)), 0xFE, 0,
			            NULL, 0);
		s->powered = true;
		s->ns = s->nr = 0;
		s->ifsd = 32;
		s->cmd_len = s->in_len = s->out_len = s->out_off = 0;
		s->answering = false;
		s->t0_state = 0;
		s->pending_len = 0;
		return make(b, 0x80, slot, seq, 0, 0, 0, s->card.atr, s->card.atr_len);
	case 0x63:
		s->powered = false;
		return make(b, 0x81, slot, seq, icc(s), 0, 0, NULL, 0);
	case 0x65:
		return make(b, 0x81, slot, seq, icc(s), 0, 0, NULL, 0);
	case 0x6F:
		return xfr(d, s, slot, seq, p, len, (uint16_t)(m[8] | m[9] << 8), b);
	case 0x61:
		if (len <= sizeof(d->stats.last_set_params)) {
			memcpy(d->stats.last_set_params, p, len);
			d->stats.last_set_params_len = len;
		}
		return make(b, 0x82, slot, seq, icc(s), 0, m[7], p, len);
	case 0x69:
		if (len <= sizeof(d->stats.last_secure)) {
			memcpy(d->stats.last_secure, p, len);
			d->stats.last_secure_len = len;
		}
		if (!s->present)
			return make(b, 0x80, slot, seq, 0x42, 0xFE, 0, NULL, 0);
		if (s->card.t1 && (d->cfg.features & 0x70000) == 0x10000 && len >= 15 && p[0] == 0) {
			/* PIN verify at TPDU level: the reader wraps the APDU in the I-block whose
			 * prologue (bTeoPrologue) the host gave, and returns the card's block. */
			uint8_t blk[300], out[300];
			size_t an = len - 15 > 254 ? 254 : len - 15;
			blk[0] = p[12];
			blk[1] = p[13];
			blk[2] = (uint8_t)an;
			memcpy(blk + 3, p + 15, an);
			size_t bn = 3 + an + t1_edc(s, blk, 3 + an);
			size_t on = t1_block(d, s, blk, bn, out);
			return make(b, 0x80, slot, seq, 0, 0, 0, out, on);
		}
		return make(b, 0x80, slot, seq, 0, 0, 0, (const uint8_t *)"\x90\x00", 2);
	case 0x6B:
		return make(b, 0x83, slot, seq, icc(s), 0, 0, p, len);
	case 0x72: /* Abort: the aborted command ends with CMD_ABORTED first */
		if (d->mute_pending && d->mute_slot == slot && d->mute_seq == seq) {
			uint8_t ab[10];
			push(d, ab, make(ab, 0x80, slot, seq, (uint8_t)(0x40 | icc(s)), 0xFF, 0, NULL, 0));
		}
		d->mute_pending = false;
		d->storm = false;
		return make(b, 0x81, slot, seq, icc(s), 0, 0, NULL, 0);
	default:
		return make(b, 0x81, slot, seq, (uint8_t)(0x40 | icc(s)), 0, 0, NULL, 0);
	}
}

static enum ccidsim_fault take_fault(ccidsim_dev *d, uint8_t slot)
{
	if (d->fault_slot >= 0 && slot != d->fault_slot)
		return CS_NONE;
	enum ccidsim_fault f = d->fault;
	if (f != CS_NONE && d->fault_count && --d->fault_count == 0)
		d->fault = CS_NONE;
	return f;
}

/* A command arrived on bulk-OUT: its reply (or fault) is queued for bulk-IN. */
static enum calais__usb_status bulk_out(ccidsim_dev *d, const uint8_t *m, size_t n)
{
	if (n < 10)
		return CALAIS__USB_STALL;
	enum ccidsim_fault f = m[0] == 0x72 ? CS_NONE : take_fault(d, m[5]);
	if (f == CS_STALL_OUT) {
		d->stats.commands[m[0]]++;
		return CALAIS__USB_STALL;
	}
	if (f == CS_GONE) {
		d->gone = true;
		d->plugged = false;
		pthread_cond_broadcast(&cond);
		return CALAIS__USB_NO_DEVICE;
	}
	uint8_t *b = msg_buf();
	size_t len = command(d, m, n, b);
	uint8_t tmp[32];
	switch (f) {
	case CS_STALE_SEQ:
		memcpy(tmp, b, 10);
		tmp[6] = (uint8_t)(b[6] - 1);
		put_le32(tmp + 1, 0);
		push(d, tmp, 10);
		break;
	case CS_WRONG_SEQ:
		/* More wrong replies than the host tolerates. */
		b[6] = (uint8_t)(b[6] + 7);
		for (int i = 0; i < 11; i++)
			push(d, b, len);
		break;
	case CS_SHORT:
		len = 6;
		break;
	case CS_GARBAGE:
		for (size_t i = 0; i < 20; i++) {
			d->rng = d->rng * 1103515245u + 12345u;
			b[i] = (uint8_t)(d->rng >> 16);
		}
		b[1] = b[2] = b[3] = b[4] = 0xFF; /* an impossible dwLength */
		len = 20;
		break;
	case CS_BAD_LENGTH:
		put_le32(b + 1, (uint32_t)(len - 10 + 5));
		break;
	case CS_TIME_EXT:
		for (int i = 0; i < 3; i++) {
			memcpy(tmp, b, 10);
			put_le32(tmp + 1, 0);
			tmp[7] = 0x80;
			tmp[8] = 1;
			push(d, tmp, 10);
		}
		break;
	case CS_TIME_EXT_STORM:
		d->storm = true;
		d->storm_next_ms = mono_ms() + (long)d->storm_gap_ms;
		d->mute_pending = true;
		d->mute_slot = m[5];
		d->mute_seq = m[6];
		return CALAIS__USB_OK;
	case CS_MUTE:
		d->mute_pending = true;
		d->mute_slot = m[5];
		d->mute_seq = m[6];
		return CALAIS__USB_OK;
	case CS_PIN_TIMEOUT:
		if (m[0] == 0x69)
			len = make(b, 0x80, m[5], m[6], 0x40, 0xF0, 0, NULL, 0);
		break;
	case CS_ICC_MUTE:
		if (m[0] == 0x6F)
			len = make(b, 0x80, m[5], m[6], 0x40, 0xFE, 0, NULL, 0);
		break;
	case CS_PIN_BAD_EDC:
		if (m[0] == 0x69 && len > 10)
			b[len - 1] ^= 0x5A;
		break;
	case CS_FAIL_HW:
		b[7] = (uint8_t)(0x40 | (b[7] & 3));
		b[8] = 0xFB;
		put_le32(b + 1, 0);
		len = 10;
		break;
	default:
		break;
	}
	struct reply *r = push(d, b, len);
	r->stall = f == CS_STALL_IN;
	r->oversized = f == CS_OVERSIZED;
	if (d->delay_next_ms) {
		r->ready_ms = mono_ms() + d->delay_next_ms;
		d->delay_next_ms = 0;
	}
	return CALAIS__USB_OK;
}

/* ---- the seam ----------------------------------------------------------------------------- */

static bool wait_for(ccidsim_dev *d, struct calais__usb_handle *h, int ep_idx, bool (*ready)(ccidsim_dev *),
                     uint32_t timeout_ms, enum calais__usb_status *st)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	for (;;) {
		if (h->cancel[ep_idx]) {
			h->cancel[ep_idx] = 0;
			*st = CALAIS__USB_CANCELLED;
			return false;
		}
		if (d->gone) {
			*st = CALAIS__USB_NO_DEVICE;
			return false;
		}
		if (ready(d))
			return true;
		/* Slices of 5 ms: delayed replies and paced storms become ready on their own. */
		struct timespec slice;
		clock_gettime(CLOCK_REALTIME, &slice);
		slice.tv_nsec += 5000000L;
		if (slice.tv_nsec >= 1000000000L) {
			slice.tv_sec++;
			slice.tv_nsec -= 1000000000L;
		}
		bool last = timeout_ms != 0 && (slice.tv_sec > until.tv_sec ||
		                                (slice.tv_sec == until.tv_sec && slice.tv_nsec >= until.tv_nsec));
		pthread_cond_timedwait(&cond, &lock, last ? &until : &slice);
		if (last && !ready(d) && !h->cancel[ep_idx] && !d->gone) {
			*st = CALAIS__USB_TIMEOUT;
			return false;
		}
	}
}

/* The first reply that may go now (replies of several slots need not wait for a delayed
 * one ahead of them), or NULL. */
static struct reply **ready_reply(ccidsim_dev *d)
{
	long now = mono_ms();
	for (struct reply **pp = &d->replies; *pp; pp = &(*pp)->next)
		if ((*pp)->ready_ms <= now)
			return pp;
	return NULL;
}

static bool storm_due(ccidsim_dev *d)
{
	return d->storm && (!d->storm_gap_ms || mono_ms() >= d->storm_next_ms);
}

static bool have_reply(ccidsim_dev *d)
{
	return ready_reply(d) != NULL || storm_due(d);
}

static bool have_intr(ccidsim_dev *d)
{
	return d->intr_count > 0;
}

static enum calais__usb_status s_transfer(struct calais__usb_handle *h, uint8_t ep, bool interrupt,
                                          uint8_t *buf, size_t len, size_t *done,
                                          uint32_t timeout_ms)
{
	ccidsim_dev *d = h->d;
	enum calais__usb_status st = CALAIS__USB_OK;
	*done = 0;
	pthread_mutex_lock(&lock);
	if (d->gone) {
		st = CALAIS__USB_NO_DEVICE;
	} else if (ep == EP_OUT) {
		if (h->cancel[0]) {
			h->cancel[0] = 0;
			st = CALAIS__USB_CANCELLED;
		} else {
			st = bulk_out(d, buf, len);
			if (st == CALAIS__USB_OK)
				*done = len;
		}
	} else if (ep == EP_IN) {
		if (wait_for(d, h, 1, have_reply, timeout_ms, &st)) {
			struct reply **rp = ready_reply(d);
			if (!rp) {
				uint8_t te[10];
				make(te, 0x80, d->mute_slot, d->mute_seq, 0x80, 1, 0, NULL, 0);
				memcpy(buf, te, 10);
				*done = 10;
				d->storm_next_ms = mono_ms() + (long)d->storm_gap_ms;
			} else {
				struct reply *r = *rp;
				*rp = r->next;
				d->replies_tail = &d->replies;
				while (*d->replies_tail)
					d->replies_tail = &(*d->replies_tail)->next;
				if (r->stall)
					st = CALAIS__USB_STALL;
				else if (r->oversized || r->n > len)
					st = CALAIS__USB_OVERFLOW;
				else {
					memcpy(buf, r->b, r->n);
					*done = r->n;
				}
				free(r);
			}
		}
	} else if (ep == EP_INTR && interrupt) {
		if (wait_for(d, h, 2, have_intr, timeout_ms, &st)) {
			size_t n = d->intr_len[d->intr_head];
			memcpy(buf, d->intr[d->intr_head], n < len ? n : len);
			*done = n < len ? n : len;
			d->intr_head = (d->intr_head + 1) % 64;
			d->intr_count--;
		}
	} else {
		st = CALAIS__USB_IO;
	}
	bool vanished = st == CALAIS__USB_NO_DEVICE && d->plugged == false && ep == EP_OUT;
	pthread_mutex_unlock(&lock);
	if (vanished)
		notify_changed(); /* the hotplug event of a device gone in mid-transfer */
	return st;
}

/* Runs a CCID command built from an ICCD request; returns the reply in msg_buf(). */
static size_t iccd_run(ccidsim_dev *d, uint8_t type, uint16_t level, const uint8_t *data,
                       size_t n)
{
	uint8_t *m = malloc(10 + n);
	make(m, type, 0, 0, 0, (uint8_t)level, (uint8_t)(level >> 8), data, n);
	uint8_t *b = msg_buf();
	size_t len = command(d, m, 10 + n, b);
	free(m);
	return len;
}

/* Version B: a CCID reply as the next DATA_BLOCK answer. */
static void iccd_b_block(ccidsim_dev *d, const uint8_t *b, size_t len)
{
	if (b[7] & 0x40) {
		d->iccd_block[0] = 0x40;
		d->iccd_block[1] = b[7] & 3;
		d->iccd_block[2] = b[8];
		d->iccd_len = 3;
	} else {
		d->iccd_block[0] = b[9]; /* 0, or the chain parameter */
		memcpy(d->iccd_block + 1, b + 10, len - 10);
		d->iccd_len = 1 + len - 10;
	}
}

static enum calais__usb_status iccd_b(ccidsim_dev *d, uint8_t rt, uint8_t req, uint16_t value,
                                      uint8_t *buf, size_t len, size_t *done)
{
	struct slot *s = &d->slots[0];
	if (rt == 0x21 && req == 0x63) {
		iccd_run(d, 0x63, 0, NULL, 0);
	} else if (rt == 0x21 && req == 0x62) {
		uint8_t *b = msg_buf();
		iccd_b_block(d, b, iccd_run(d, 0x62, 0, NULL, 0));
	} else if (rt == 0x21 && req == 0x65) {
		uint8_t *b = msg_buf();
		iccd_b_block(d, b, iccd_run(d, 0x6F, (uint16_t)(value >> 8), buf, len));
		*done = len;
	} else if (rt == 0xA1 && req == 0x6F) {
		if (d->iccd_delay) {
			uint8_t poll[3] = { 0x80, (uint8_t)d->iccd_delay, (uint8_t)(d->iccd_delay >> 8) };
			memcpy(buf, poll, len < 3 ? len : 3);
			*done = len < 3 ? len : 3;
			return CALAIS__USB_OK;
		}
		if (!d->iccd_polled) {
			/* Once: "not ready, ask again in 10 ms". */
			d->iccd_polled = true;
			uint8_t poll[3] = { 0x80, 1, 0 };
			memcpy(buf, poll, len < 3 ? len : 3);
			*done = len < 3 ? len : 3;
			return CALAIS__USB_OK;
		}
		size_t n = d->iccd_len < len ? d->iccd_len : len;
		memcpy(buf, d->iccd_block, n);
		*done = n;
		d->iccd_len = 0;
	} else if (rt == 0xA1 && req == 0x81) {
		uint8_t st[3] = { 0, icc(s), 0 };
		memcpy(buf, st, len < 3 ? len : 3);
		*done = len < 3 ? len : 3;
	} else {
		return CALAIS__USB_STALL;
	}
	return CALAIS__USB_OK;
}

static enum calais__usb_status iccd_a(ccidsim_dev *d, uint8_t rt, uint8_t req, uint8_t *buf,
                                      size_t len, size_t *done)
{
	struct slot *s = &d->slots[0];
	uint8_t tmp[300];
	if (rt == 0x21 && req == 0x63) {
		s->powered = false;
		d->a_state = 0;
	} else if (rt == 0xA1 && req == 0xA0) {
		buf[0] = !s->present ? 0x80 : d->a_state;
		*done = 1;
	} else if (rt == 0xA1 && req == 0x62) {
		uint8_t *b = msg_buf();
		size_t n = iccd_run(d, 0x62, 0, NULL, 0) - 10;
		if (b[7] & 0x40)
			n = 0;
		memcpy(buf, b + 10, n < len ? n : len);
		*done = n < len ? n : len;
	} else if (rt == 0x21 && req == 0x65) {
		*done = len;
		d->stats.commands[0x6F]++;
		if (d->a_state == 0x10 && d->a_in) {
			memcpy(tmp, d->a_hdr, 5);
			memcpy(tmp + 5, buf, len < 255 ? len : 255);
			t0_tpdu(s, tmp, 5 + (len < 255 ? len : 255), d->a_sw);
			d->a_in = false;
			d->a_state = 0x20;
		} else if (len == 5) {
			memcpy(d->a_hdr, buf, 5);
			if (incoming_ins(buf[1]) && buf[4]) {
				d->a_in = true;
				d->a_state = 0x10;
			} else {
				size_t n = t0_tpdu(s, buf, 5, d->iccd_block);
				memcpy(d->a_sw, d->iccd_block + n - 2, 2);
				d->iccd_len = n - 2;
				d->a_state = n > 2 ? 0x10 : 0x20;
			}
		} else {
			return CALAIS__USB_STALL;
		}
	} else if (rt == 0xA1 && req == 0x6F) {
		if (d->a_state == 0x10 && !d->a_in) {
			size_t n = d->iccd_len < len ? d->iccd_len : len;
			memcpy(buf, d->iccd_block, n);
			*done = n;
			d->a_state = 0x20;
		} else if (d->a_state == 0x20 && len >= 2) {
			memcpy(buf, d->a_sw, 2);
			*done = 2;
			d->a_state = 0;
		} else {
			return CALAIS__USB_STALL;
		}
	} else {
		return CALAIS__USB_STALL;
	}
	return CALAIS__USB_OK;
}

static enum calais__usb_status s_control(struct calais__usb_handle *h, uint8_t rt, uint8_t req,
                                         uint16_t value, uint16_t index, uint8_t *buf, size_t len,
                                         size_t *done, uint32_t timeout_ms)
{
	*done = 0;
	pthread_mutex_lock(&lock);
	ccidsim_dev *d = h->d;
	enum calais__usb_status st = CALAIS__USB_STALL;
	if (d->gone)
		st = CALAIS__USB_NO_DEVICE;
	else if (d->cfg.iface_protocol == 2)
		st = iccd_b(d, rt, req, value, buf, len, done);
	else if (d->cfg.iface_protocol == 1)
		st = iccd_a(d, rt, req, buf, len, done);
	else if (rt == 0x21 && req == 0x01) {
		d->stats.class_aborts++;
		st = CALAIS__USB_OK;
	}
	pthread_mutex_unlock(&lock);
	return st;
}

static enum calais__usb_status s_init(void **ctx, calais__usb_changed_cb cb, void *user,
                                      bool *hotplug)
{
	pthread_mutex_lock(&lock);
	changed_cb = cb;
	changed_user = user;
	pthread_mutex_unlock(&lock);
	*ctx = NULL;
	*hotplug = true;
	return CALAIS__USB_OK;
}

static void s_exit(void *ctx)
{
	pthread_mutex_lock(&lock);
	changed_cb = NULL;
	pthread_mutex_unlock(&lock);
}

static enum calais__usb_status s_list(void *ctx, struct calais__usb_dev ***out, size_t *n)
{
	pthread_mutex_lock(&lock);
	size_t k = 0;
	for (ccidsim_dev *d = devices; d; d = d->next)
		k++;
	struct calais__usb_dev **v = calloc(k + 1, sizeof(*v));
	k = 0;
	for (ccidsim_dev *d = devices; d; d = d->next)
		if (d->plugged) {
			d->refs++;
			v[k++] = (struct calais__usb_dev *)d;
		}
	pthread_mutex_unlock(&lock);
	*out = v;
	*n = k;
	return CALAIS__USB_OK;
}

static void s_ref(struct calais__usb_dev *ud)
{
	pthread_mutex_lock(&lock);
	((ccidsim_dev *)ud)->refs++;
	pthread_mutex_unlock(&lock);
}

static void free_replies(ccidsim_dev *d)
{
	while (d->replies) {
		struct reply *r = d->replies;
		d->replies = r->next;
		free(r);
	}
	d->replies_tail = &d->replies;
}

static void s_unref(struct calais__usb_dev *ud)
{
	ccidsim_dev *d = (ccidsim_dev *)ud;
	pthread_mutex_lock(&lock);
	bool last = --d->refs == 0;
	if (last)
		for (ccidsim_dev **pp = &devices; *pp; pp = &(*pp)->next)
			if (*pp == d) {
				*pp = d->next;
				break;
			}
	pthread_mutex_unlock(&lock);
	if (last) {
		free_replies(d);
		free(d);
	}
}

static enum calais__usb_status s_info(struct calais__usb_dev *ud, struct calais__usb_dev_info *o)
{
	ccidsim_dev *d = (ccidsim_dev *)ud;
	memset(o, 0, sizeof(*o));
	o->vid = d->cfg.vid;
	o->pid = d->cfg.pid;
	o->bcd_device = d->cfg.bcd_device;
	o->bus = d->bus;
	o->address = d->address;
	o->i_manufacturer = 1;
	o->i_product = 2;
	o->i_serial = d->cfg.serial ? 3 : 0;
	o->config = d->config;
	o->config_len = d->config_len;
	return CALAIS__USB_OK;
}

static enum calais__usb_status s_open(struct calais__usb_dev *ud, struct calais__usb_handle **h)
{
	ccidsim_dev *d = (ccidsim_dev *)ud;
	if (d->gone)
		return CALAIS__USB_NO_DEVICE;
	*h = calloc(1, sizeof(**h));
	(*h)->d = d;
	s_ref(ud);
	return CALAIS__USB_OK;
}

static void s_close(struct calais__usb_handle *h)
{
	s_unref((struct calais__usb_dev *)h->d);
	free(h);
}

static enum calais__usb_status s_claim(struct calais__usb_handle *h, uint8_t iface)
{
	pthread_mutex_lock(&lock);
	enum calais__usb_status st = h->d->gone   ? CALAIS__USB_NO_DEVICE
	                             : h->d->busy ? CALAIS__USB_BUSY
	                                          : CALAIS__USB_OK;
	if (st == CALAIS__USB_OK)
		h->d->stats.claims++;
	pthread_mutex_unlock(&lock);
	return st;
}

static void s_release(struct calais__usb_handle *h, uint8_t iface)
{
}

static enum calais__usb_status s_string(struct calais__usb_handle *h, uint8_t index, char *buf,
                                        size_t cap)
{
	const struct ccidsim_cfg *c = &h->d->cfg;
	const char *s = index == 1 ? c->manufacturer : index == 2 ? c->product
	              : index == 3 ? c->serial : index == 4 ? c->iface : NULL;
	snprintf(buf, cap, "%s", s ? s : "");
	return CALAIS__USB_OK;
}

static enum calais__usb_status s_clear_halt(struct calais__usb_handle *h, uint8_t ep)
{
	pthread_mutex_lock(&lock);
	h->d->stats.clear_halts++;
	pthread_mutex_unlock(&lock);
	return CALAIS__USB_OK;
}

static void s_cancel(struct calais__usb_handle *h, uint8_t ep)
{
	pthread_mutex_lock(&lock);
	if (ep == 0 || ep == EP_OUT)
		h->cancel[0] = 1;
	if (ep == 0 || ep == EP_IN)
		h->cancel[1] = 1;
	if (ep == 0 || ep == EP_INTR)
		h->cancel[2] = 1;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

static const struct calais__usb_ops sim_ops = {
	.name = "ccidsim",
	.init = s_init,
	.exit = s_exit,
	.list = s_list,
	.ref = s_ref,
	.unref = s_unref,
	.info = s_info,
	.open = s_open,
	.close = s_close,
	.claim = s_claim,
	.release = s_release,
	.string = s_string,
	.transfer = s_transfer,
	.control = s_control,
	.clear_halt = s_clear_halt,
	.cancel = s_cancel,
};

/* ---- the test API ---------------------------------------------------------------------------- */

void ccidsim_install(void)
{
	calais__ccid_usb = &sim_ops;
}

void ccidsim_reset(void)
{
	pthread_mutex_lock(&lock);
	ccidsim_dev *list = devices;
	devices = NULL;
	pthread_mutex_unlock(&lock);
	while (list) {
		ccidsim_dev *d = list;
		list = d->next;
		free_replies(d);
		free(d);
	}
}

static void intr_notify(ccidsim_dev *d, unsigned slot, bool changed)
{
	if (!d->cfg.intr || d->intr_count == 64)
		return;
	unsigned i = (d->intr_head + d->intr_count) % 64;
	memset(d->intr[i], 0, 8);
	d->intr[i][0] = 0x50;
	for (unsigned k = 0; k < d->cfg.slots; k++) {
		unsigned bits = (d->slots[k].present ? 1u : 0u) | (k == slot && changed ? 2u : 0u);
		d->intr[i][1 + k / 4] |= (uint8_t)(bits << (2 * (k % 4)));
	}
	d->intr_len[i] = 1 + (d->cfg.slots + 3) / 4;
	d->intr_count++;
	pthread_cond_broadcast(&cond);
}

ccidsim_dev *ccidsim_add(const struct ccidsim_cfg *cfg)
{
	ccidsim_dev *d = calloc(1, sizeof(*d));
	d->cfg = *cfg;
	if (!d->cfg.slots)
		d->cfg.slots = 1;
	if (!d->cfg.manufacturer)
		d->cfg.manufacturer = "Calais";
	if (!d->cfg.product)
		d->cfg.product = "Sim CCID";
	d->replies_tail = &d->replies;
	d->refs = 1;
	d->plugged = true;
	d->busy = cfg->busy;
	d->rng = 42;
	d->fault_slot = -1;
	build_config(d);
	pthread_mutex_lock(&lock);
	d->bus = 1;
	d->address = next_address++;
	d->next = devices;
	devices = d;
	pthread_mutex_unlock(&lock);
	notify_changed();
	return d;
}

void ccidsim_unplug(ccidsim_dev *d)
{
	pthread_mutex_lock(&lock);
	d->plugged = false;
	d->gone = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	notify_changed();
	s_unref((struct calais__usb_dev *)d);
}

void ccidsim_insert(ccidsim_dev *d, unsigned slot, const struct ccidsim_card *card)
{
	pthread_mutex_lock(&lock);
	d->slots[slot].present = true;
	d->slots[slot].powered = false;
	d->slots[slot].card = *card;
	intr_notify(d, slot, true);
	pthread_mutex_unlock(&lock);
}

static void eject(ccidsim_dev *d, unsigned slot, bool answer)
{
	pthread_mutex_lock(&lock);
	d->slots[slot].present = false;
	d->slots[slot].powered = false;
	if (answer && (d->mute_pending || d->storm) && d->mute_slot == slot) {
		/* The reader sees the card go and fails the command it was running. */
		uint8_t b[10];
		push(d, b, make(b, 0x80, slot, d->mute_seq, 0x42, 0xFE, 0, NULL, 0));
		d->mute_pending = d->storm = false;
	}
	intr_notify(d, slot, true);
	pthread_mutex_unlock(&lock);
}

void ccidsim_eject(ccidsim_dev *d, unsigned slot)
{
	eject(d, slot, true);
}

void ccidsim_eject_silent(ccidsim_dev *d, unsigned slot)
{
	eject(d, slot, false);
}

void ccidsim_delay_next(ccidsim_dev *d, uint32_t ms)
{
	pthread_mutex_lock(&lock);
	d->delay_next_ms = ms;
	pthread_mutex_unlock(&lock);
}

void ccidsim_storm_gap(ccidsim_dev *d, uint32_t ms)
{
	pthread_mutex_lock(&lock);
	d->storm_gap_ms = ms;
	pthread_mutex_unlock(&lock);
}

void ccidsim_fault(ccidsim_dev *d, enum ccidsim_fault f, unsigned count)
{
	pthread_mutex_lock(&lock);
	d->fault = f;
	d->fault_count = count;
	d->fault_slot = -1;
	pthread_mutex_unlock(&lock);
}

void ccidsim_fault_slot(ccidsim_dev *d, unsigned slot, enum ccidsim_fault f, unsigned count)
{
	pthread_mutex_lock(&lock);
	d->fault = f;
	d->fault_count = count;
	d->fault_slot = (int)slot;
	pthread_mutex_unlock(&lock);
}

void ccidsim_iccd_delay(ccidsim_dev *d, uint16_t units)
{
	pthread_mutex_lock(&lock);
	d->iccd_delay = units;
	pthread_mutex_unlock(&lock);
}

void ccidsim_set_busy(ccidsim_dev *d, bool busy)
{
	pthread_mutex_lock(&lock);
	d->busy = busy;
	pthread_mutex_unlock(&lock);
}

struct ccidsim_stats ccidsim_stats(ccidsim_dev *d)
{
	pthread_mutex_lock(&lock);
	struct ccidsim_stats s = d->stats;
	pthread_mutex_unlock(&lock);
	return s;
}
