/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID device simulator behind the HID backend's seam (see hidsim.h): enumeration,
 * open and access, unplug, and the devices' models (the virtual authenticator, vauth.c, or
 * the Ledger one here) behind one lock; read() waits on a condition variable for the next
 * report's time or the timeout. */
#include "hidsim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hid.h"

#define MAX_DEVS 16

struct hidsim_dev {
	struct hidsim_cfg cfg;
	char path[64], serial[64], manufacturer[64], product[64];
	bool gone, deny;
	struct vauth va; /* the authenticator; its queue also carries Ledger answers */
	/* The Ledger model: the command being received, the fault, the counts. */
	enum hidsim_fault ledger_fault;
	uint8_t rx[8192], out[8192];
	size_t rx_len, rx_got;
	unsigned rx_seq;
	bool rx_busy;
	unsigned ledger_apdus;
	size_t last_len;
	unsigned opens, closes;
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
	d->ledger_apdus++;
	d->last_len = d->rx_len;
	uint8_t *out = d->out;
	/* The answer: the command's data (after a 5-byte header) and 90 00. */
	size_t dn = d->rx_len > 5 ? d->rx_len - 5 : 0;
	memcpy(out, d->rx + 5, dn);
	out[dn] = 0x90;
	out[dn + 1] = 0x00;
	size_t len = dn + 2, n = 0;
	for (unsigned s = 0; n < len || s == 0; s++) {
		uint8_t rep[64] = { 0x01, 0x01, 0x05, (uint8_t)(s >> 8), (uint8_t)s };
		if (d->ledger_fault == HS_LEDGER_BAD_TAG)
			rep[2] = 0x06;
		if (d->ledger_fault == HS_LEDGER_BAD_SEQ && s == 1)
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
		vauth_push(&d->va, rep, now_ms());
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
		d->opens++;
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
	hd->d->closes++;
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
	if (d->cfg.ledger) {
		ledger_report(d, r);
	} else {
		vauth_output(&d->va, r, now_ms());
		d->gone |= d->va.unplugged;
	}
	pthread_cond_broadcast(&cond);
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
		uint64_t t = now_ms(), wake;
		uint8_t rep[VAUTH_REPORT];
		/* What was queued before an unplug is still read, as from a kernel buffer. */
		if (vauth_next(&d->va, rep, t, &wake)) {
			memcpy(buf, rep, cap < 64 ? cap : 64);
			*n = cap < 64 ? cap : 64;
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_OK;
		}
		if (d->gone) {
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_NO_DEVICE;
		}
		if (t >= end) {
			pthread_mutex_unlock(&lock);
			return CALAIS__HID_TIMEOUT;
		}
		if (end < wake)
			wake = end;
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
	vauth_init(&d->va, cfg->caps);
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
	if (f >= HS_LEDGER_BAD_TAG) {
		d->ledger_fault = f;
	} else {
		d->ledger_fault = HS_NONE;
		d->va.fault = (enum vauth_fault)f;
		d->va.fault_arg = arg;
	}
	pthread_mutex_unlock(&lock);
}

void hidsim_u2f(hidsim_dev *d, vauth_u2f_fn fn, void *ctx)
{
	pthread_mutex_lock(&lock);
	d->va.u2f = fn;
	d->va.u2f_ctx = ctx;
	pthread_mutex_unlock(&lock);
}

void hidsim_cbor_keepalives(hidsim_dev *d, unsigned n)
{
	pthread_mutex_lock(&lock);
	d->va.keepalives = n;
	pthread_mutex_unlock(&lock);
}

void hidsim_stats(hidsim_dev *d, struct hidsim_stats *out)
{
	pthread_mutex_lock(&lock);
	const struct vauth_stats *v = &d->va.st;
	*out = (struct hidsim_stats){ .inits = v->inits, .cancels = v->cancels, .msgs = v->msgs,
	                              .cbors = v->cbors, .pings = v->pings, .winks = v->winks,
	                              .ledger_apdus = d->ledger_apdus, .opens = d->opens,
	                              .closes = d->closes };
	if (d->cfg.ledger) {
		memcpy(out->last_msg, d->rx, d->last_len);
		out->last_msg_len = d->last_len;
	} else {
		memcpy(out->last_msg, v->last_msg, v->last_msg_len);
		out->last_msg_len = v->last_msg_len;
	}
	pthread_mutex_unlock(&lock);
}

unsigned hidsim_open_handles(void)
{
	pthread_mutex_lock(&lock);
	unsigned n = open_handles;
	pthread_mutex_unlock(&lock);
	return n;
}
