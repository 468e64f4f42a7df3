/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID device simulator behind the HID backend's seam (see hidsim.h). A device turns
 * each complete request into the answer's reports at once (write()), queued with the time
 * each may be read; read() hands them out in order, waiting on a condition variable for
 * the next one's time or the timeout. Keepalives "for ever" are made up as reads ask. */
#include "hidsim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hid.h"

#define MAX_DEVS 16
#define MAX_QUEUE 512

struct pkt {
	uint8_t b[64];
	uint64_t due;
};

struct hidsim_dev {
	struct hidsim_cfg cfg;
	char path[64], serial[64], manufacturer[64], product[64];
	bool gone, deny;
	enum hidsim_fault fault;
	unsigned fault_arg;
	unsigned keepalives;
	uint32_t next_cid;
	/* The request being received. */
	uint32_t rx_cid;
	uint8_t rx_cmd;
	uint8_t rx[8192];
	size_t rx_len, rx_got;
	unsigned rx_seq;
	bool rx_busy;
	/* The answer queue. */
	struct pkt q[MAX_QUEUE];
	size_t q_head, q_n;
	bool ka_forever;
	uint32_t ka_cid;
	uint64_t ka_next;
	struct hidsim_stats st;
};

struct handle {
	hidsim_dev *d;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static bool cond_ready;
static hidsim_dev *devs[MAX_DEVS];
static size_t n_devs;
static unsigned open_handles;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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

/* lock held */
static void push(hidsim_dev *d, const uint8_t *rep, uint64_t due)
{
	if (d->q_n == MAX_QUEUE)
		return;
	struct pkt *p = &d->q[(d->q_head + d->q_n++) % MAX_QUEUE];
	memcpy(p->b, rep, 64);
	p->due = due;
	pthread_cond_broadcast(&cond);
}

/* Queues one CTAPHID message, with the device's faults on answers. */
static void send_msg(hidsim_dev *d, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len,
                     uint64_t due, bool answer)
{
	enum hidsim_fault f = answer ? d->fault : HS_NONE;
	if (f == HS_WRONG_CHANNEL)
		cid ^= 0x5A5A5A5Au;
	uint8_t rep[64];
	memset(rep, 0, sizeof(rep));
	if (f == HS_STRAY_CONT) {
		put32(rep, cid);
		rep[4] = 0;
		push(d, rep, due);
		memset(rep, 0, sizeof(rep));
	}
	put32(rep, cid);
	rep[4] = cmd;
	size_t announced = f == HS_OVERLONG ? 7610 : len;
	rep[5] = (uint8_t)(announced >> 8);
	rep[6] = (uint8_t)announced;
	size_t n = len < 57 ? len : 57;
	memcpy(rep + 7, data, n);
	push(d, rep, due);
	if (f == HS_OVERLONG || f == HS_TRUNCATED)
		return;
	if (f == HS_UNPLUG_MID && n < len) {
		d->gone = true;
		return;
	}
	for (unsigned seq = 0; n < len; seq++) {
		size_t k = len - n < 59 ? len - n : 59;
		memset(rep, 0, sizeof(rep));
		put32(rep, cid);
		rep[4] = (uint8_t)(f == HS_BAD_SEQ && seq == 0 ? 1 : seq);
		if (f == HS_NEW_MSG_MID && seq == 0)
			rep[4] = cmd;
		memcpy(rep + 5, data + n, k);
		n += k;
		push(d, rep, due);
	}
}

static void answer_error(hidsim_dev *d, uint32_t cid, uint8_t code)
{
	send_msg(d, cid, 0xBF, &code, 1, now_ms(), false);
}

static void u2f(hidsim_dev *d, uint32_t cid, const uint8_t *m, size_t n)
{
	static uint8_t out[HIDSIM_REGISTER_LEN + 2];
	size_t len = 0;
	d->st.msgs++;
	memcpy(d->st.last_msg, m, n);
	d->st.last_msg_len = n;
	/* Extended form: CLA INS P1 P2 00 [Lc1 Lc2 data] Le1 Le2. */
	size_t lc = n >= 9 ? (size_t)m[5] << 8 | m[6] : 0;
	if (n < 7 || m[4] != 0 || (lc && n != 9 + lc) || (!lc && n != 7)) {
		out[0] = 0x67;
		out[1] = 0x00;
		len = 2;
	} else if (m[1] == 0x03) {
		memcpy(out, "U2F_V2\x90\x00", 8);
		len = 8;
	} else if (m[1] == 0x01) {
		for (size_t i = 0; i < HIDSIM_REGISTER_LEN; i++)
			out[i] = (uint8_t)i;
		out[HIDSIM_REGISTER_LEN] = 0x90;
		out[HIDSIM_REGISTER_LEN + 1] = 0x00;
		len = HIDSIM_REGISTER_LEN + 2;
	} else if (m[1] == 0x02 && lc <= HIDSIM_REGISTER_LEN) {
		memcpy(out, m + 7, lc);
		out[lc] = 0x90;
		out[lc + 1] = 0x00;
		len = lc + 2;
	} else {
		out[0] = 0x6D;
		out[1] = 0x00;
		len = 2;
	}
	send_msg(d, cid, 0x83, out, len, now_ms(), true);
}

static void cbor(hidsim_dev *d, uint32_t cid, const uint8_t *m, size_t n)
{
	static uint8_t out[8192];
	size_t len;
	d->st.cbors++;
	if (!(d->cfg.caps & 0x04)) {
		answer_error(d, cid, 0x01);
		return;
	}
	if (n == 1 && m[0] == 0x04) {
		static const uint8_t info[] = { 0x00, 0xA1, 0x01, 0x81, 0x68, 'F', 'I', 'D', 'O',
		                                '_', '2', '_', '0' };
		memcpy(out, info, sizeof(info));
		len = sizeof(info);
	} else {
		out[0] = 0x00;
		memcpy(out + 1, m, n < 7608 ? n : 7608);
		len = 1 + (n < 7608 ? n : 7608);
	}
	uint64_t t = now_ms();
	for (unsigned i = 0; i < d->keepalives; i++) {
		uint8_t status = 2;
		t += 30;
		send_msg(d, cid, 0xBB, &status, 1, t, false);
	}
	send_msg(d, cid, 0x90, out, len, t + 5, true);
}

/* A whole request arrived. lock held */
static void handle_msg(hidsim_dev *d, uint32_t cid, uint8_t cmd, const uint8_t *m, size_t n)
{
	if (cmd == 0x86) {
		d->st.inits++;
		if (d->fault == HS_SILENT || n != 8)
			return;
		uint8_t a[17];
		memcpy(a, m, 8);
		if (d->fault == HS_WRONG_NONCE || d->fault == HS_OTHER_NONCE_FIRST)
			a[0] ^= 0xFF;
		uint32_t ncid = cid == 0xFFFFFFFFu ? d->next_cid++ : cid;
		put32(a + 8, ncid);
		a[12] = 2;
		a[13] = 1;
		a[14] = 2;
		a[15] = 3;
		a[16] = d->cfg.caps;
		send_msg(d, 0xFFFFFFFFu, 0x86, a, 17, now_ms(), false);
		if (d->fault == HS_OTHER_NONCE_FIRST) {
			memcpy(a, m, 8);
			send_msg(d, 0xFFFFFFFFu, 0x86, a, 17, now_ms(), false);
		}
		/* A new channel drops what was running. */
		d->ka_forever = false;
		return;
	}
	if (cmd == 0x91) {
		d->st.cancels++;
		d->ka_forever = false;
		return;
	}
	if (d->fault == HS_SILENT || d->fault == HS_SILENT_COMMANDS)
		return;
	if (cid == 0xFFFFFFFFu || cid == 0 || cid >= d->next_cid) {
		answer_error(d, cid, 0x0B);
		return;
	}
	if (d->fault == HS_ERROR) {
		d->fault = HS_NONE;
		answer_error(d, cid, (uint8_t)d->fault_arg);
		return;
	}
	if (d->fault == HS_BUSY) {
		if (d->fault_arg == 0) {
			d->fault = HS_NONE;
		} else {
			d->fault_arg--;
			answer_error(d, cid, 0x06);
			return;
		}
	}
	if (d->fault == HS_INVALID_CHANNEL) {
		d->fault = HS_NONE;
		d->next_cid += 16; /* every channel handed out so far is forgotten */
		answer_error(d, cid, 0x0B);
		return;
	}
	if (d->fault == HS_OTHER_CHANNEL_FIRST) {
		static const uint8_t junk[3] = { 1, 2, 3 };
		send_msg(d, cid + 1, cmd, junk, sizeof(junk), now_ms(), false);
	}
	if (d->fault == HS_KEEPALIVE_FOREVER) {
		d->ka_forever = true;
		d->ka_cid = cid;
		d->ka_next = now_ms();
		return;
	}
	switch (cmd) {
	case 0x81:
		d->st.pings++;
		send_msg(d, cid, 0x81, m, n, now_ms(), true);
		break;
	case 0x88:
		d->st.winks++;
		send_msg(d, cid, 0x88, NULL, 0, now_ms(), true);
		break;
	case 0x83:
		if (d->cfg.caps & 0x08)
			answer_error(d, cid, 0x01);
		else
			u2f(d, cid, m, n);
		break;
	case 0x90:
		cbor(d, cid, m, n);
		break;
	default:
		answer_error(d, cid, 0x01);
	}
}

/* One output report of a CTAPHID device. lock held */
static void ctap_report(hidsim_dev *d, const uint8_t *r)
{
	uint32_t cid = be32(r);
	if (r[4] & 0x80) {
		size_t len = (size_t)r[5] << 8 | r[6];
		if (r[4] == 0x91 || len > 7609) {
			if (r[4] == 0x91)
				handle_msg(d, cid, 0x91, NULL, 0);
			return;
		}
		d->rx_cid = cid;
		d->rx_cmd = r[4];
		d->rx_len = len;
		d->rx_got = len < 57 ? len : 57;
		memcpy(d->rx, r + 7, d->rx_got);
		d->rx_seq = 0;
		d->rx_busy = true;
	} else {
		if (!d->rx_busy || cid != d->rx_cid || r[4] != d->rx_seq)
			return;
		size_t k = d->rx_len - d->rx_got < 59 ? d->rx_len - d->rx_got : 59;
		memcpy(d->rx + d->rx_got, r + 5, k);
		d->rx_got += k;
		d->rx_seq++;
	}
	if (d->rx_busy && d->rx_got == d->rx_len) {
		d->rx_busy = false;
		handle_msg(d, d->rx_cid, d->rx_cmd, d->rx, d->rx_len);
	}
}

/* Ledger: reports in, the answer queued. lock held */
static void ledger_report(hidsim_dev *d, const uint8_t *r)
{
	if (r[0] != 0x01 || r[1] != 0x01 || r[2] != 0x05)
		return;
	unsigned seq = (unsigned)r[3] << 8 | r[4];
	size_t at = 5;
	if (seq == 0) {
		d->rx_len = (size_t)r[5] << 8 | r[6];
		d->rx_got = 0;
		d->rx_busy = true;
		at = 7;
	} else if (!d->rx_busy || seq != d->rx_seq) {
		return;
	}
	d->rx_seq = seq + 1;
	size_t k = d->rx_len - d->rx_got < 64 - at ? d->rx_len - d->rx_got : 64 - at;
	if (d->rx_got + k > sizeof(d->rx))
		return;
	memcpy(d->rx + d->rx_got, r + at, k);
	d->rx_got += k;
	if (d->rx_got < d->rx_len)
		return;
	d->rx_busy = false;
	d->st.ledger_apdus++;
	memcpy(d->st.last_msg, d->rx, d->rx_len);
	d->st.last_msg_len = d->rx_len;
	if (d->fault == HS_SILENT)
		return;
	/* The answer: the command's data (after a 5-byte header) and 90 00. */
	static uint8_t out[8192];
	size_t dn = d->rx_len > 5 ? d->rx_len - 5 : 0;
	memcpy(out, d->rx + 5, dn);
	out[dn] = 0x90;
	out[dn + 1] = 0x00;
	size_t len = dn + 2, n = 0;
	for (unsigned s = 0; n < len || s == 0; s++) {
		uint8_t rep[64] = { 0x01, 0x01, 0x05, (uint8_t)(s >> 8), (uint8_t)s };
		if (d->fault == HS_LEDGER_BAD_TAG)
			rep[2] = 0x06;
		if (d->fault == HS_LEDGER_BAD_SEQ && s == 1)
			rep[4] = 2;
		size_t p = 5;
		if (s == 0) {
			rep[5] = (uint8_t)(len >> 8);
			rep[6] = (uint8_t)len;
			p = 7;
		}
		size_t m = len - n < 64 - p ? len - n : 64 - p;
		memcpy(rep + p, out + n, m);
		n += m;
		push(d, rep, now_ms());
	}
}

/* ---- the seam --------------------------------------------------------------------------- */

static char *dupstr(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	memcpy(p, s, n);
	return p;
}

static enum calais__hid_status s_init(void)
{
	return CALAIS__HID_OK;
}

static void s_exit(void)
{
}

static enum calais__hid_status s_enumerate(struct calais__hid_info **out, size_t *n_out)
{
	pthread_mutex_lock(&lock);
	struct calais__hid_info *list = calloc(n_devs ? n_devs : 1, sizeof(*list));
	size_t n = 0;
	for (size_t i = 0; i < n_devs; i++) {
		hidsim_dev *d = devs[i];
		if (d->gone)
			continue;
		struct calais__hid_info *x = &list[n++];
		x->path = dupstr(d->path);
		x->vid = d->cfg.vid;
		x->pid = d->cfg.pid;
		x->release = 0x0100;
		x->usage_page = d->cfg.usage_page;
		x->usage = d->cfg.usage;
		x->interface = d->cfg.interface;
		x->serial = dupstr(d->serial);
		x->manufacturer = dupstr(d->manufacturer);
		x->product = dupstr(d->product);
	}
	pthread_mutex_unlock(&lock);
	*out = list;
	*n_out = n;
	return CALAIS__HID_OK;
}

static enum calais__hid_status s_open(const char *path, struct calais__hid_dev **h)
{
	pthread_mutex_lock(&lock);
	enum calais__hid_status st = CALAIS__HID_NO_DEVICE;
	for (size_t i = 0; i < n_devs; i++) {
		hidsim_dev *d = devs[i];
		if (d->gone || strcmp(d->path, path) != 0)
			continue;
		if (d->deny) {
			st = CALAIS__HID_ACCESS;
			break;
		}
		struct handle *hd = malloc(sizeof(*hd));
		hd->d = d;
		*h = (struct calais__hid_dev *)hd;
		d->st.opens++;
		open_handles++;
		st = CALAIS__HID_OK;
		break;
	}
	pthread_mutex_unlock(&lock);
	return st;
}

static void s_close(struct calais__hid_dev *h)
{
	struct handle *hd = (struct handle *)h;
	pthread_mutex_lock(&lock);
	hd->d->st.closes++;
	open_handles--;
	pthread_mutex_unlock(&lock);
	free(hd);
}

static enum calais__hid_status s_write(struct calais__hid_dev *h, const uint8_t *buf, size_t len)
{
	hidsim_dev *d = ((struct handle *)h)->d;
	pthread_mutex_lock(&lock);
	if (d->gone) {
		pthread_mutex_unlock(&lock);
		return CALAIS__HID_NO_DEVICE;
	}
	uint8_t r[64] = { 0 };
	memcpy(r, buf, len < 64 ? len : 64);
	if (d->cfg.ledger)
		ledger_report(d, r);
	else
		ctap_report(d, r);
	pthread_mutex_unlock(&lock);
	return CALAIS__HID_OK;
}

static enum calais__hid_status s_read(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
                                      size_t *n, uint32_t timeout_ms)
{
	hidsim_dev *d = ((struct handle *)h)->d;
	uint64_t end = now_ms() + timeout_ms;
	*n = 0;
	pthread_mutex_lock(&lock);
	for (;;) {
		uint64_t t = now_ms();
		if (d->q_n && d->q[d->q_head].due <= t) {
			memcpy(buf, d->q[d->q_head].b, cap < 64 ? cap : 64);
			d->q_head = (d->q_head + 1) % MAX_QUEUE;
			d->q_n--;
			*n = cap < 64 ? cap : 64;
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_OK;
		}
		if (d->gone) {
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_NO_DEVICE;
		}
		if (d->ka_forever && d->ka_next <= t) {
			uint8_t rep[64] = { 0 };
			put32(rep, d->ka_cid);
			rep[4] = 0xBB;
			rep[6] = 1;
			rep[7] = 2;
			d->ka_next = t + 50;
			memcpy(buf, rep, cap < 64 ? cap : 64);
			*n = cap < 64 ? cap : 64;
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_OK;
		}
		if (t >= end) {
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_TIMEOUT;
		}
		uint64_t wake = end;
		if (d->q_n && d->q[d->q_head].due < wake)
			wake = d->q[d->q_head].due;
		if (d->ka_forever && d->ka_next < wake)
			wake = d->ka_next;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + (wake - t) * 1000000u;
		ts.tv_sec += (time_t)(ns / 1000000000u);
		ts.tv_nsec = (long)(ns % 1000000000u);
		pthread_cond_timedwait(&cond, &lock, &ts);
	}
}

static const struct calais__hid_ops sim_ops = {
	.name = "hidsim",
	.init = s_init,
	.exit = s_exit,
	.enumerate = s_enumerate,
	.open = s_open,
	.close = s_close,
	.write = s_write,
	.read = s_read,
};

/* ---- control ------------------------------------------------------------------------------ */

void hidsim_install(void)
{
	pthread_mutex_lock(&lock);
	if (!cond_ready) {
		pthread_condattr_t a;
		pthread_condattr_init(&a);
		pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
		pthread_cond_init(&cond, &a);
		pthread_condattr_destroy(&a);
		cond_ready = true;
	}
	pthread_mutex_unlock(&lock);
	calais__hid_transport = &sim_ops;
}

void hidsim_reset(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_devs; i++)
		free(devs[i]);
	n_devs = 0;
	pthread_mutex_unlock(&lock);
}

hidsim_dev *hidsim_add(const struct hidsim_cfg *cfg)
{
	hidsim_dev *d = calloc(1, sizeof(*d));
	d->cfg = *cfg;
	if (!d->cfg.usage_page && !cfg->ledger) {
		d->cfg.usage_page = 0xF1D0;
		d->cfg.usage = 0x01;
	}
	snprintf(d->path, sizeof(d->path), "%s", cfg->path);
	snprintf(d->serial, sizeof(d->serial), "%s", cfg->serial ? cfg->serial : "");
	snprintf(d->manufacturer, sizeof(d->manufacturer), "%s",
	         cfg->manufacturer ? cfg->manufacturer : "");
	snprintf(d->product, sizeof(d->product), "%s", cfg->product ? cfg->product : "");
	d->deny = cfg->deny_open;
	d->next_cid = 0x01000001u;
	pthread_mutex_lock(&lock);
	if (n_devs < MAX_DEVS)
		devs[n_devs++] = d;
	pthread_mutex_unlock(&lock);
	return d;
}

void hidsim_unplug(hidsim_dev *d)
{
	pthread_mutex_lock(&lock);
	d->gone = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

void hidsim_allow_open(hidsim_dev *d)
{
	pthread_mutex_lock(&lock);
	d->deny = false;
	pthread_mutex_unlock(&lock);
}

void hidsim_fault(hidsim_dev *d, enum hidsim_fault f, unsigned arg)
{
	pthread_mutex_lock(&lock);
	d->fault = f;
	d->fault_arg = arg;
	pthread_mutex_unlock(&lock);
}

void hidsim_cbor_keepalives(hidsim_dev *d, unsigned n)
{
	pthread_mutex_lock(&lock);
	d->keepalives = n;
	pthread_mutex_unlock(&lock);
}

void hidsim_stats(hidsim_dev *d, struct hidsim_stats *out)
{
	pthread_mutex_lock(&lock);
	*out = d->st;
	pthread_mutex_unlock(&lock);
}

unsigned hidsim_open_handles(void)
{
	pthread_mutex_lock(&lock);
	unsigned n = open_handles;
	pthread_mutex_unlock(&lock);
	return n;
}
