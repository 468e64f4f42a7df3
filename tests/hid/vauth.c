/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The virtual FIDO authenticator's CTAPHID and U2F logic (see vauth.h): each complete
 * request is turned at once into its answer's reports, queued with the time each is due;
 * vauth_next() hands them out in order. Keepalives "for ever" are made up as asked. */
#include "vauth.h"

#include <string.h>

/* getInfo's answer: status 00, then {1: ["FIDO_2_0"], 3: aaguid (16 bytes)}. */
const uint8_t vauth_get_info[] = { 0x00, 0xA2, 0x01, 0x81, 0x68, 'F', 'I', 'D', 'O', '_', '2', '_',
                                   '0', 0x03, 0x50, 0xCA, 0x1A, 0x15, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 };
const size_t vauth_get_info_len = sizeof(vauth_get_info);

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* */
void vauth_push(struct vauth *v, const uint8_t *rep, uint64_t due)
{
	if (v->q_n == VAUTH_QUEUE)
		return;
	struct vauth_pkt *p = &v->q[(v->q_head + v->q_n++) % VAUTH_QUEUE];
	memcpy(p->b, rep, 64);
	p->due = due;
}

/* Queues one CTAPHID message, with the device's faults on answers. */
static void send_msg(struct vauth *v, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len,
                     uint64_t due, bool answer)
{
	enum vauth_fault f = answer ? v->fault : VA_NONE;
	if (f == VA_WRONG_CHANNEL)
		cid ^= 0x5A5A5A5Au;
	uint8_t rep[64];
	memset(rep, 0, sizeof(rep));
	if (f == VA_STRAY_CONT) {
		put32(rep, cid);
		rep[4] = 0;
		vauth_push(v, rep, due);
		memset(rep, 0, sizeof(rep));
	}
	put32(rep, cid);
	rep[4] = cmd;
	size_t announced = f == VA_OVERLONG ? 7610 : len;
	rep[5] = (uint8_t)(announced >> 8);
	rep[6] = (uint8_t)announced;
	size_t n = len < 57 ? len : 57;
	if (n)
		memcpy(rep + 7, data, n);
	vauth_push(v, rep, due);
	if (f == VA_OVERLONG || f == VA_TRUNCATED)
		return;
	if (f == VA_UNPLUG_MID && n < len) {
		v->unplugged = true;
		return;
	}
	for (unsigned seq = 0; n < len; seq++) {
		size_t k = len - n < 59 ? len - n : 59;
		memset(rep, 0, sizeof(rep));
		put32(rep, cid);
		rep[4] = (uint8_t)(f == VA_BAD_SEQ && seq == 0 ? 1 : seq);
		if (f == VA_NEW_MSG_MID && seq == 0)
			rep[4] = cmd;
		memcpy(rep + 5, data + n, k);
		n += k;
		vauth_push(v, rep, due);
	}
}

static void answer_error(struct vauth *v, uint32_t cid, uint8_t code, uint64_t now)
{
	send_msg(v, cid, 0xBF, &code, 1, now, false);
}

static void u2f(struct vauth *v, uint32_t cid, const uint8_t *m, size_t n, uint64_t now)
{
	uint8_t *out = v->out;
	size_t len = 0;
	v->st.msgs++;
	memcpy(v->st.last_msg, m, n);
	v->st.last_msg_len = n;
	/* Extended form: CLA INS P1 P2 00 [Lc1 Lc2 data] Le1 Le2; python-fido2 sends an empty
	 * body as Lc 00 00 (nine bytes), ISO 7816-4 as none (seven): both are taken. */
	size_t lc = n >= 9 ? (size_t)m[5] << 8 | m[6] : 0;
	if (n < 7 || m[4] != 0 || (n != 7 && n != 9 + lc)) {
		out[0] = 0x67;
		out[1] = 0x00;
		len = 2;
	} else if (v->u2f) {
		len = v->u2f(v->u2f_ctx, m, m + 7, lc, out);
	} else if (m[1] == 0x03) {
		memcpy(out, "U2F_V2\x90\x00", 8);
		len = 8;
	} else if (m[1] == 0x01) {
		for (size_t i = 0; i < VAUTH_REGISTER_LEN; i++)
			out[i] = (uint8_t)i;
		out[VAUTH_REGISTER_LEN] = 0x90;
		out[VAUTH_REGISTER_LEN + 1] = 0x00;
		len = VAUTH_REGISTER_LEN + 2;
	} else if (m[1] == 0x02 && lc <= VAUTH_REGISTER_LEN) {
		memcpy(out, m + 7, lc);
		out[lc] = 0x90;
		out[lc + 1] = 0x00;
		len = lc + 2;
	} else {
		out[0] = 0x6D;
		out[1] = 0x00;
		len = 2;
	}
	send_msg(v, cid, 0x83, out, len, now, true);
}

static void cbor(struct vauth *v, uint32_t cid, const uint8_t *m, size_t n, uint64_t now)
{
	uint8_t *out = v->out;
	size_t len;
	v->st.cbors++;
	if (!(v->caps & 0x04)) {
		answer_error(v, cid, 0x01, now);
		return;
	}
	if (n == 1 && m[0] == 0x04) {
		memcpy(out, vauth_get_info, vauth_get_info_len);
		len = vauth_get_info_len;
	} else {
		out[0] = 0x00;
		memcpy(out + 1, m, n < 7608 ? n : 7608);
		len = 1 + (n < 7608 ? n : 7608);
	}
	uint64_t t = now;
	for (unsigned i = 0; i < v->keepalives; i++) {
		uint8_t status = 2;
		t += 30;
		send_msg(v, cid, 0xBB, &status, 1, t, false);
	}
	/* After the last keepalive, if any; otherwise at once (the benchmark's figure is
	 * then Calais' own cost, not a model's delay). */
	send_msg(v, cid, 0x90, out, len, v->keepalives ? t + 5 : t, true);
}

/* A whole request arrived. */
static void handle_msg(struct vauth *v, uint32_t cid, uint8_t cmd, const uint8_t *m, size_t n,
                       uint64_t now)
{
	if (cmd == 0x86) {
		v->st.inits++;
		if (v->fault == VA_SILENT || n != 8)
			return;
		uint8_t a[17];
		memcpy(a, m, 8);
		if (v->fault == VA_WRONG_NONCE || v->fault == VA_OTHER_NONCE_FIRST)
			a[0] ^= 0xFF;
		uint32_t ncid = cid == 0xFFFFFFFFu ? v->next_cid++ : cid;
		put32(a + 8, ncid);
		a[12] = 2;
		a[13] = 1;
		a[14] = 2;
		a[15] = 3;
		a[16] = v->caps;
		send_msg(v, 0xFFFFFFFFu, 0x86, a, 17, now, false);
		if (v->fault == VA_OTHER_NONCE_FIRST) {
			memcpy(a, m, 8);
			send_msg(v, 0xFFFFFFFFu, 0x86, a, 17, now, false);
		}
		/* A new channel drops what was running. */
		v->ka_forever = false;
		return;
	}
	if (cmd == 0x91) {
		v->st.cancels++;
		/* A CBOR command stopped answers CTAP2_ERR_KEEPALIVE_CANCEL, as real keys do. */
		if (v->ka_forever && v->ka_cmd == 0x90 && v->ka_cid == cid) {
			static const uint8_t cancelled = 0x2D;
			send_msg(v, cid, 0x90, &cancelled, 1, now, false);
		}
		v->ka_forever = false;
		return;
	}
	if (v->fault == VA_SILENT || v->fault == VA_SILENT_COMMANDS)
		return;
	if (cid == 0xFFFFFFFFu || cid == 0 || cid >= v->next_cid) {
		answer_error(v, cid, 0x0B, now);
		return;
	}
	if (v->fault == VA_ERROR) {
		v->fault = VA_NONE;
		answer_error(v, cid, (uint8_t)v->fault_arg, now);
		return;
	}
	if (v->fault == VA_BUSY) {
		if (v->fault_arg == 0) {
			v->fault = VA_NONE;
		} else {
			v->fault_arg--;
			answer_error(v, cid, 0x06, now);
			return;
		}
	}
	if (v->fault == VA_INVALID_CHANNEL) {
		v->fault = VA_NONE;
		v->next_cid += 16; /* every channel handed out so far is forgotten */
		answer_error(v, cid, 0x0B, now);
		return;
	}
	if (v->fault == VA_OTHER_CHANNEL_FIRST) {
		static const uint8_t junk[3] = { 1, 2, 3 };
		send_msg(v, cid + 1, cmd, junk, sizeof(junk), now, false);
	}
	if (v->fault == VA_KEEPALIVE_FOREVER) {
		v->ka_forever = true;
		v->ka_cid = cid;
		v->ka_cmd = cmd;
		v->ka_next = now;
		return;
	}
	switch (cmd) {
	case 0x81:
		v->st.pings++;
		send_msg(v, cid, 0x81, m, n, now, true);
		break;
	case 0x88:
		v->st.winks++;
		send_msg(v, cid, 0x88, NULL, 0, now, true);
		break;
	case 0x83:
		if (v->caps & 0x08)
			answer_error(v, cid, 0x01, now);
		else
			u2f(v, cid, m, n, now);
		break;
	case 0x90:
		cbor(v, cid, m, n, now);
		break;
	default:
		answer_error(v, cid, 0x01, now);
	}
}

void vauth_output(struct vauth *v, const uint8_t *r, uint64_t now)
{
	uint32_t cid = be32(r);
	if (r[4] & 0x80) {
		size_t len = (size_t)r[5] << 8 | r[6];
		if (r[4] == 0x91 || len > 7609) {
			if (r[4] == 0x91)
				handle_msg(v, cid, 0x91, NULL, 0, now);
			return;
		}
		v->rx_cid = cid;
		v->rx_cmd = r[4];
		v->rx_len = len;
		v->rx_got = len < 57 ? len : 57;
		memcpy(v->rx, r + 7, v->rx_got);
		v->rx_seq = 0;
		v->rx_busy = true;
	} else {
		if (!v->rx_busy || cid != v->rx_cid || r[4] != v->rx_seq)
			return;
		size_t k = v->rx_len - v->rx_got < 59 ? v->rx_len - v->rx_got : 59;
		memcpy(v->rx + v->rx_got, r + 5, k);
		v->rx_got += k;
		v->rx_seq++;
	}
	if (v->rx_busy && v->rx_got == v->rx_len) {
		v->rx_busy = false;
		handle_msg(v, v->rx_cid, v->rx_cmd, v->rx, v->rx_len, now);
	}
}

void vauth_init(struct vauth *v, uint8_t caps)
{
	memset(v, 0, sizeof(*v));
	v->caps = caps;
	v->next_cid = 0x01000001u;
}

bool vauth_next(struct vauth *v, uint8_t *report, uint64_t now, uint64_t *wake_ms)
{
	if (v->q_n && v->q[v->q_head].due <= now) {
		memcpy(report, v->q[v->q_head].b, VAUTH_REPORT);
		v->q_head = (v->q_head + 1) % VAUTH_QUEUE;
		v->q_n--;
		return true;
	}
	if (v->ka_forever && v->ka_next <= now) {
		memset(report, 0, VAUTH_REPORT);
		put32(report, v->ka_cid);
		report[4] = 0xBB;
		report[6] = 1;
		report[7] = 2;
		v->ka_next = now + 50;
		return true;
	}
	uint64_t wake = UINT64_MAX;
	if (v->q_n)
		wake = v->q[v->q_head].due;
	if (v->ka_forever && v->ka_next < wake)
		wake = v->ka_next;
	*wake_ms = wake;
	return false;
}
