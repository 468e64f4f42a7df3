/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID backend: USB FIDO authenticators (HID usage page 0xF1D0, usage 1) as readers
 * whose card answers as an NFC FIDO authenticator does (hid-fido.c over hid-ctap.c), and,
 * when asked for, Ledger devices (APDUs over HID, hid-ledger.c). One reader per device,
 * "<product> [FIDO] (<serial>)" or "[Ledger]"; its card is in for as long as the device
 * is plugged.
 *
 * hidapi 0.13 has no hotplug: a monitor thread enumerates again every poll interval
 * (calais_config.poll_interval_ms) and compares by path, vendor, product and serial, so
 * devices it knows see no I/O. It opens new devices (open() only: the channel is made by
 * the card's power-up, on the reader's own thread); one it cannot open is listed
 * unavailable, with a log line saying why, and tried again at every pass. Exchanges run
 * on the calling thread with only that device's state: the one backend lock (hp->lock)
 * guards the device list and is never held over device I/O. cancel() sets the reader's
 * flag, which every read looks at every 20 ms.
 *
 * Configuration: calais_config.hid_devices, else CALAIS_HID: a comma-separated list of
 * "fido" (FIDO authenticators), "ledger" (Ledger devices, vendor 0x2C97) and
 * "ledger=VVVV[:PPPP]" (the Ledger framing on other hexadecimal vendor/product ids);
 * unset: "fido". */
#include "hid.h"

#include <stdio.h>
#include <stdlib.h>

#define FIDO_USAGE_PAGE 0xF1D0u
#define FIDO_USAGE 0x01u
#define LEDGER_VID 0x2C97u
#define LEDGER_USAGE_PAGE 0xFFA0u
#define MAX_LEDGER_IDS 8
/* A FIDO card's power-up (channel allocation) is bounded by this, not by the exchange
 * limit: a device that does not answer INIT is a mute card. */
#define POWER_UP_MS 3000u

enum kind { KIND_FIDO, KIND_LEDGER };

struct hid_priv;

struct hid_dev {
	struct hid_dev *next; /* hp->devs; hp->lock */
	unsigned refs;        /* the list and the reader; hp->lock */
	struct hid_priv *hp;
	enum kind kind;
	char *path;
	uint16_t vid, pid;
	char serial[128];
	/* Set once by the monitor (NULL until the device could be opened); closed when the
	 * device is freed. */
	_Atomic(struct calais__hid_dev *) h;
	calais_reader *r; /* hp->lock; NULL once closed */
	bool seen;        /* hp->lock: found by the running scan */
	bool seen_closed; /* hp->lock: the running scan's open retry failed */
	bool open_logged;
	atomic_bool gone;   /* an exchange saw the device leave */
	atomic_bool cancel; /* the reader's cancel flag */
	/* The reader's thread only (its I/O lock). */
	struct calais__ctaphid ctap;
	struct calais__fido_card card;
	char name[200]; /* for logs */
};

struct ledger_id {
	uint16_t vid, pid; /* pid 0: any */
};

struct hid_priv {
	calais_backend_instance *bi;
	const struct calais__hid_ops *ops;
	bool fido;
	struct ledger_id ledger[MAX_LEDGER_IDS];
	size_t n_ledger;
	uint32_t scan_ms;
	calais__mutex_t lock;
	calais__cond_t cond;
	bool stop, rescan;
	calais__thread_t monitor;
	bool monitor_running;
	struct hid_dev *devs;
};

struct hid_reader {
	struct hid_dev *dev;
};

/* ---- configuration ------------------------------------------------------------------ */

static bool parse_hex16(const char *p, size_t n, uint16_t *out)
{
	if (n == 0 || n > 4)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
		           : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
		           : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
		if (d > 15)
			return false;
		v = v << 4 | d;
	}
	*out = (uint16_t)v;
	return true;
}

static void parse_config(struct hid_priv *hp, const char *spec)
{
	hp->fido = false;
	hp->n_ledger = 0;
	for (const char *p = spec; *p;) {
		size_t len = strcspn(p, ", ");
		if (len == 4 && strncmp(p, "fido", 4) == 0) {
			hp->fido = true;
		} else if (len == 6 && strncmp(p, "ledger", 6) == 0) {
			if (hp->n_ledger < MAX_LEDGER_IDS)
				hp->ledger[hp->n_ledger++] = (struct ledger_id){ LEDGER_VID, 0 };
		} else if (len > 7 && strncmp(p, "ledger=", 7) == 0) {
			const char *v = p + 7;
			size_t vl = len - 7, colon = strcspn(v, ":");
			struct ledger_id id = { 0, 0 };
			bool ok = colon < vl ? parse_hex16(v, colon, &id.vid) &&
			                               parse_hex16(v + colon + 1, vl - colon - 1, &id.pid)
			                     : parse_hex16(v, vl, &id.vid);
			if (!ok || !id.vid)
				hid_warn("\"%.*s\": not ledger=VVVV[:PPPP] in hexadecimal; ignored",
				         (int)len, p);
			else if (hp->n_ledger < MAX_LEDGER_IDS)
				hp->ledger[hp->n_ledger++] = id;
			else
				hid_warn("more than %d Ledger ids; \"%.*s\" ignored", MAX_LEDGER_IDS,
				         (int)len, p);
		} else if (len) {
			hid_warn("unknown device kind \"%.*s\" ignored (fido, ledger, "
			         "ledger=VVVV[:PPPP])", (int)len, p);
		}
		p += len;
		while (*p == ',' || *p == ' ')
			p++;
	}
}

static bool match(const struct hid_priv *hp, const struct calais__hid_info *x, enum kind *kind)
{
	if (hp->fido && x->usage_page == FIDO_USAGE_PAGE && x->usage == FIDO_USAGE) {
		*kind = KIND_FIDO;
		return true;
	}
	/* Ledger's APDU interface: usage page 0xFFA0 where the platform reports usages
	 * (Windows, macOS), interface 0 where it may not. */
	if (x->usage_page == FIDO_USAGE_PAGE ||
	    !(x->usage_page == LEDGER_USAGE_PAGE || x->interface == 0))
		return false;
	for (size_t i = 0; i < hp->n_ledger; i++)
		if (hp->ledger[i].vid == x->vid && (!hp->ledger[i].pid || hp->ledger[i].pid == x->pid)) {
			*kind = KIND_LEDGER;
			return true;
		}
	return false;
}

/* ---- devices ---------------------------------------------------------------------------- */

static void free_dev(struct hid_dev *d)
{
	struct calais__hid_dev *h = atomic_load(&d->h);
	if (h)
		d->hp->ops->close(h);
	free(d->path);
	free(d);
}

static void dev_unref(struct hid_dev *d)
{
	struct hid_priv *hp = d->hp;
	calais__mutex_lock(&hp->lock);
	bool last = --d->refs == 0;
	calais__mutex_unlock(&hp->lock);
	if (last)
		free_dev(d);
}

/* Opens the device if it is not yet; logs why not once. Monitor thread. */
static bool try_open(struct hid_dev *d, LONG *why)
{
	if (atomic_load(&d->h))
		return true;
	struct calais__hid_dev *h = NULL;
	enum calais__hid_status st = d->hp->ops->open(d->path, &h);
	if (st != CALAIS__HID_OK) {
		*why = st == CALAIS__HID_NO_MEM ? SCARD_E_NO_MEMORY : SCARD_E_READER_UNAVAILABLE;
		if (!d->open_logged)
			hid_warn("%s: cannot open %s: %s%s; listed unavailable until it can be", d->name,
			         d->path, calais__hid_status_name(st),
			         st == CALAIS__HID_ACCESS
			                 ? " (no permission on the device node: on Linux a udev rule "
			                   "must give this user the hidraw node, see README)"
			                 : "");
		d->open_logged = true;
		return false;
	}
	d->ctap.h = h;
	atomic_store(&d->h, h);
	if (d->open_logged)
		hid_info("%s: opened", d->name);
	d->open_logged = false;
	return true;
}

static void add_dev(struct hid_priv *hp, const struct calais__hid_info *x, enum kind kind)
{
	struct hid_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	size_t pl = strlen(x->path) + 1;
	d->path = malloc(pl);
	if (!d->path) {
		free(d);
		return;
	}
	memcpy(d->path, x->path, pl);
	d->hp = hp;
	d->kind = kind;
	d->vid = x->vid;
	d->pid = x->pid;
	d->seen = true;
	snprintf(d->serial, sizeof(d->serial), "%s", x->serial);
	char base[260];
	if (*x->manufacturer && *x->product && strncmp(x->product, x->manufacturer,
	                                               strlen(x->manufacturer)) != 0)
		snprintf(base, sizeof(base), "%s %s", x->manufacturer, x->product);
	else if (*x->product || *x->manufacturer)
		snprintf(base, sizeof(base), "%s", *x->product ? x->product : x->manufacturer);
	else
		snprintf(base, sizeof(base), "HID %s %04X:%04X", kind == KIND_FIDO ? "FIDO" : "Ledger",
		         x->vid, x->pid);
	calais__sanitise(base, ' ');
	snprintf(d->name, sizeof(d->name), "%.120s (%04X:%04X %.60s)", base, x->vid, x->pid,
	         x->path);
	calais__sanitise(d->name, '?');
	d->ctap = (struct calais__ctaphid){ .ops = hp->ops, .name = d->name, .cancel = &d->cancel };
	d->card.c = &d->ctap;

	LONG why = SCARD_S_SUCCESS;
	bool opened = try_open(d, &why);
	struct calais_reader_desc rd = {
		.name = base,
		.interface_name = kind == KIND_FIDO ? "FIDO" : "Ledger",
		.serial = d->serial[0] ? d->serial : NULL,
		.vendor = *x->manufacturer ? x->manufacturer : NULL,
		.ifd_version = (uint32_t)x->release << 16,
		.channel_id = 0x00200000u,
		.max_input = kind == KIND_FIDO ? 7 + CALAIS__CTAPHID_MAX_MSG + 2 : 5 + 255 + 1,
		.protocols = SCARD_PROTOCOL_T1,
	};
	calais_reader *r;
	if (calais_reader_new(hp->bi, &rd, &r) != SCARD_S_SUCCESS) {
		free_dev(d);
		return;
	}
	((struct hid_reader *)calais_reader_priv(r))->dev = d;
	if (!opened)
		calais_reader_set_unavailable(r, why);
	d->refs = 2; /* the list and the reader */
	calais__mutex_lock(&hp->lock);
	d->r = r;
	d->next = hp->devs;
	hp->devs = d;
	calais__mutex_unlock(&hp->lock);
	if (calais_reader_publish(r, opened) != SCARD_S_SUCCESS) {
		/* Discarded by the core: no close() will come. */
		calais__mutex_lock(&hp->lock);
		d->r = NULL;
		calais__mutex_unlock(&hp->lock);
		dev_unref(d);
		return;
	}
	hid_info("%s: %s device", d->name, kind == KIND_FIDO ? "FIDO" : "Ledger");
}

static void scan(struct hid_priv *hp)
{
	struct calais__hid_info *list = NULL;
	size_t n = 0;
	enum calais__hid_status st = hp->ops->enumerate(&list, &n);
	if (st != CALAIS__HID_OK) {
		hid_warn("HID enumeration failed: %s", calais__hid_status_name(st));
		return;
	}
	calais__mutex_lock(&hp->lock);
	for (struct hid_dev *d = hp->devs; d; d = d->next)
		d->seen = false;
	calais__mutex_unlock(&hp->lock);
	for (size_t i = 0; i < n; i++) {
		const struct calais__hid_info *x = &list[i];
		enum kind kind;
		if (!match(hp, x, &kind))
			continue;
		bool known = false;
		calais__mutex_lock(&hp->lock);
		for (struct hid_dev *d = hp->devs; d && !known; d = d->next)
			if (strcmp(d->path, x->path) == 0 && d->vid == x->vid && d->pid == x->pid &&
			    strncmp(d->serial, x->serial, sizeof(d->serial) - 1) == 0 &&
			    !atomic_load(&d->gone))
				d->seen = known = true;
		/* hidapi lists a device once per top-level collection: the first match
		 * stands for it (a gone device's path is taken by its successor). */
		for (struct hid_dev *d = hp->devs; d && !known; d = d->next)
			if (d->seen && strcmp(d->path, x->path) == 0)
				known = true;
		calais__mutex_unlock(&hp->lock);
		if (!known)
			add_dev(hp, x, kind);
	}
	calais__hid_free_list(list, n);

	struct hid_dev *gone = NULL;
	calais__mutex_lock(&hp->lock);
	for (struct hid_dev **pp = &hp->devs; *pp;) {
		struct hid_dev *d = *pp;
		if (!d->seen) {
			*pp = d->next;
			d->next = gone;
			gone = d;
			if (d->r)
				calais_reader_remove(d->r);
		} else {
			pp = &d->next;
		}
	}
	calais__mutex_unlock(&hp->lock);
	while (gone) {
		struct hid_dev *d = gone;
		gone = d->next;
		hid_info("%s: removed", d->name);
		dev_unref(d);
	}

	/* Devices that could not be opened get another try (outside the lock: open() is
	 * the device's business); on success their card is in. */
	for (;;) {
		struct hid_dev *d;
		calais__mutex_lock(&hp->lock);
		for (d = hp->devs; d; d = d->next)
			if (!atomic_load(&d->h) && d->r && !d->seen_closed) {
				d->refs++;
				break;
			}
		calais__mutex_unlock(&hp->lock);
		if (!d)
			break;
		LONG why;
		bool ok = try_open(d, &why);
		calais__mutex_lock(&hp->lock);
		d->seen_closed = !ok; /* once per pass */
		if (ok && d->r) {
			calais_reader_set_unavailable(d->r, SCARD_S_SUCCESS);
			calais_reader_card_event(d->r, true);
		}
		calais__mutex_unlock(&hp->lock);
		dev_unref(d);
	}
	calais__mutex_lock(&hp->lock);
	for (struct hid_dev *d = hp->devs; d; d = d->next)
		d->seen_closed = false;
	calais__mutex_unlock(&hp->lock);
}

static void *monitor_main(void *arg)
{
	struct hid_priv *hp = arg;
	calais__mutex_lock(&hp->lock);
	while (!hp->stop) {
		if (hp->rescan) {
			hp->rescan = false;
			calais__mutex_unlock(&hp->lock);
			scan(hp);
			calais__mutex_lock(&hp->lock);
			continue;
		}
		if (!calais__cond_wait_until(&hp->cond, &hp->lock, calais__now_ms() + hp->scan_ms))
			hp->rescan = true;
	}
	calais__mutex_unlock(&hp->lock);
	return NULL;
}

/* An exchange saw the device leave: the next pass removes its reader at once. */
static void lost(struct hid_dev *d)
{
	atomic_store(&d->gone, true);
	calais__mutex_lock(&d->hp->lock);
	d->hp->rescan = true;
	calais__cond_broadcast(&d->hp->cond);
	calais__mutex_unlock(&d->hp->lock);
}

/* ---- the backend table ------------------------------------------------------------------ */

static LONG hid_init(calais_backend_instance *bi)
{
	struct hid_priv *hp = calais_backend_priv(bi);
	hp->bi = bi;
	hp->ops = calais__hid_transport ? calais__hid_transport : &calais__hid_hidapi;
	const char *spec = calais__mgr.cfg.hid_devices;
	if (!spec)
		spec = calais__getenv("CALAIS_HID");
	parse_config(hp, spec ? spec : "fido");
	hp->scan_ms = calais__mgr.cfg.poll_interval_ms ? calais__mgr.cfg.poll_interval_ms : 400;
	calais__mutex_init(&hp->lock);
	calais__cond_init(&hp->cond);
	enum calais__hid_status st = hp->ops->init();
	if (st != CALAIS__HID_OK) {
		hid_warn("HID transport %s unavailable: %s", hp->ops->name,
		         calais__hid_status_name(st));
		hp->ops = NULL;
		return SCARD_S_SUCCESS;
	}
	if (!hp->fido && !hp->n_ledger)
		hid_info("no device kind enabled (CALAIS_HID)");
	scan(hp);
	if (calais__thread_create(&hp->monitor, monitor_main, hp) == 0)
		hp->monitor_running = true;
	else
		hid_err("cannot start the HID monitor thread");
	return SCARD_S_SUCCESS;
}

static void hid_stop(calais_backend_instance *bi)
{
	struct hid_priv *hp = calais_backend_priv(bi);
	if (!hp->ops)
		return;
	calais__mutex_lock(&hp->lock);
	hp->stop = true;
	calais__cond_broadcast(&hp->cond);
	calais__mutex_unlock(&hp->lock);
	if (hp->monitor_running)
		calais__thread_join(hp->monitor);
	hp->monitor_running = false;
	calais__mutex_lock(&hp->lock);
	struct hid_dev *list = hp->devs;
	hp->devs = NULL;
	calais__mutex_unlock(&hp->lock);
	while (list) {
		struct hid_dev *d = list;
		list = d->next;
		dev_unref(d);
	}
}

static void hid_exit(calais_backend_instance *bi)
{
	struct hid_priv *hp = calais_backend_priv(bi);
	if (hp->ops)
		hp->ops->exit();
	calais__cond_destroy(&hp->cond);
	calais__mutex_destroy(&hp->lock);
}

#define DEV(r) (((struct hid_reader *)calais_reader_priv(r))->dev)

static void hid_close(calais_reader *r)
{
	struct hid_dev *d = DEV(r);
	if (!d)
		return;
	calais__mutex_lock(&d->hp->lock);
	d->r = NULL;
	calais__mutex_unlock(&d->hp->lock);
	DEV(r) = NULL;
	dev_unref(d);
}

/* A call begins: a cancel meant for the one before is forgotten. NULL when the device
 * cannot be used. */
static struct hid_dev *call_start(calais_reader *r, LONG *rv)
{
	struct hid_dev *d = DEV(r);
	atomic_store(&d->cancel, false);
	if (atomic_load(&d->gone) || !atomic_load(&d->h)) {
		*rv = SCARD_E_READER_UNAVAILABLE;
		return NULL;
	}
	return d;
}

static LONG call_end(struct hid_dev *d, LONG rv)
{
	if (rv == SCARD_E_READER_UNAVAILABLE)
		lost(d);
	return rv;
}

static LONG hid_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	LONG rv;
	struct hid_dev *d = call_start(r, &rv);
	if (!d)
		return rv;
	if (d->kind == KIND_FIDO) {
		/* A new channel at every power-up: a reset of the card resets the device's
		 * state for us, as INIT does. */
		rv = call_end(d, calais__fido_reset(&d->card, calais__now_ms() + POWER_UP_MS));
		if (rv != SCARD_S_SUCCESS)
			return rv == SCARD_E_TIMEOUT ? SCARD_W_UNRESPONSIVE_CARD : rv;
		memcpy(atr, calais__fido_atr, calais__fido_atr_len);
		*atr_len = calais__fido_atr_len;
	} else {
		memcpy(atr, calais__ledger_atr, calais__ledger_atr_len);
		*atr_len = calais__ledger_atr_len;
	}
	return SCARD_S_SUCCESS;
}

static LONG hid_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	LONG rv;
	struct hid_dev *d = call_start(r, &rv);
	if (!d)
		return rv;
	uint64_t deadline = calais__now_ms() + (timeout_ms ? timeout_ms : CALAIS__EXCHANGE_TIMEOUT_MS);
	if (d->kind == KIND_FIDO)
		rv = calais__fido_transmit(&d->card, tx, tx_len, rx, rx_len, deadline);
	else
		rv = calais__ledger_transmit(d->hp->ops, atomic_load(&d->h), d->name, &d->cancel, tx,
		                             tx_len, rx, rx_len, deadline);
	return call_end(d, rv);
}

static void hid_cancel(calais_reader *r)
{
	struct hid_dev *d = DEV(r);
	if (d)
		atomic_store(&d->cancel, true);
}

const struct calais_backend calais__backend_hid = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "hid",
	.caps = CALAIS_BACKEND_CAP_HOTPLUG | CALAIS_BACKEND_CAP_EXTENDED,
	.instance_priv_size = sizeof(struct hid_priv),
	.reader_priv_size = sizeof(struct hid_reader),
	.init = hid_init,
	.stop = hid_stop,
	.exit = hid_exit,
	.close = hid_close,
	.power_on = hid_power_on,
	.transmit = hid_transmit,
	.cancel = hid_cancel,
};
