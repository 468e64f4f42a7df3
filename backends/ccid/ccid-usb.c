/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The USB CCID/ICCD backend: finds CCID interfaces through the USB seam (usb.h), keeps
 * them in step with hotplug (or periodic re-enumeration), publishes one reader per slot,
 * watches the interrupt endpoint for card movement, and maps the core's calls onto the
 * slot layer (ccid-slot.c).
 *
 * Threads and isolation. The core calls each reader (slot) from its own thread; the
 * backend adds a monitor thread (hotplug, re-enumeration) and one interrupt thread per
 * device. What one slot's exchange may block:
 * - other devices: nothing (each has its own port; cp->lock, the only backend-wide lock,
 *   is held for list and table updates and card events, never over device I/O);
 * - other slots of the same device: only what the device allows. bMaxCCIDBusySlots
 *   slots may have a command in flight at once (the slot layer's calais__ccid_enter());
 *   nearly every multi-slot reader says 1, so a command on a second slot waits for the
 *   first one's end, interruptibly (cancel of its reader, device gone), and a presence
 *   poll does not wait at all (it reports the last known presence);
 * - the interrupt pipe: nothing. Its thread never takes a port lock, so NotifySlotChange
 *   events of every slot keep flowing while a slot is stuck;
 * - the monitor: nothing (it talks only to devices it is adding or claiming).
 * Lock order: port.lock (an exclusive exchange) → port.txl → port.mx; cp->lock is taken
 * alone or before the core's locks (card events), never with a port lock held.
 * cancel(r) sets the slot's flag, wakes its waits and stops its transfer in progress. */
#include "ccid.h"
#include "usb.h"

#include <stdio.h>
#include <stdlib.h>

#define RESCAN_MS 2000 /* re-enumeration without hotplug; retry of busy interfaces */

const struct calais__usb_ops *calais__ccid_usb;

struct ccid_priv;

/* One CCID interface of a USB device: a message port and its slots. */
struct ccid_dev {
	struct ccid_dev *next; /* ccid_priv.devs; ccid_priv.lock */
	unsigned refs;         /* the list, and each published reader; ccid_priv.lock */
	struct ccid_priv *cp;
	const struct calais__usb_ops *ops;
	struct calais__usb_dev *udev;
	struct calais__usb_handle *h;
	uint8_t bus, address;
	struct calais__usb_ccid_if ifc;
	struct calais__ccid_desc desc;
	struct calais__ccid_strategy st;
	struct calais__ccid_port port;
	struct calais__iccd iccd; /* ICCD devices: the control-pipe protocol behind port */
	bool port_ready;
	atomic_bool claimed; /* set under port.lock, read anywhere */
	bool seen;           /* found by the running scan */
	bool busy_logged;
	LONG claim_error;    /* why the interface could not be claimed */
	struct calais__ccid_slot *slots;
	calais_reader **readers;
	unsigned n_slots;
	bool *present;       /* last presence the interrupt pipe reported */
	calais__thread_t intr;
	bool intr_running;   /* cp->lock */
	bool stopped;        /* cp->lock: no interrupt thread any more */
	bool notified;       /* a NotifySlotChange was read since the device was opened */
	atomic_bool intr_stop;
	uint32_t rates[64];
	char serial[128];    /* SCARD_ATTR_VENDOR_IFD_SERIAL_NO */
	char name[320];      /* for logs */
};

struct ccid_priv {
	calais_backend_instance *bi;
	const struct calais__usb_ops *ops;
	void *ctx;
	bool hotplug;
	bool escape;
	calais__mutex_t lock;
	calais__cond_t cond;
	bool stop, rescan;
	calais__thread_t monitor;
	bool monitor_running;
	struct ccid_dev *devs;
};

struct ccid_reader {
	struct ccid_dev *dev;
	unsigned slot;
};

static LONG usb_pcsc(const struct ccid_dev *d, enum calais__usb_status st, const char *what)
{
	switch (st) {
	case CALAIS__USB_OK: return SCARD_S_SUCCESS;
	case CALAIS__USB_TIMEOUT: return SCARD_E_TIMEOUT;
	case CALAIS__USB_CANCELLED: return SCARD_E_CANCELLED;
	case CALAIS__USB_NO_DEVICE:
		ccid_info("%s: device gone (%s)", d->name, what);
		return SCARD_E_READER_UNAVAILABLE;
	case CALAIS__USB_NO_MEM: return SCARD_E_NO_MEMORY;
	case CALAIS__USB_BUSY: return SCARD_E_SHARING_VIOLATION;
	default:
		ccid_warn("%s: %s failed: %s", d->name, what, calais__usb_status_name(st));
		return SCARD_F_COMM_ERROR;
	}
}

static void free_dev(struct ccid_dev *d);

static void dev_unref(struct ccid_dev *d)
{
	struct ccid_priv *cp = d->cp;
	calais__mutex_lock(&cp->lock);
	bool last = --d->refs == 0;
	calais__mutex_unlock(&cp->lock);
	if (last)
		free_dev(d);
}

/* ---- the message port over the bulk pipes ------------------------------------------ */

static LONG bulk_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms)
{
	struct ccid_dev *d = user;
	size_t done = 0;
	enum calais__usb_status st = d->ops->transfer(d->h, d->ifc.ep_bulk_out, false, (uint8_t *)msg,
	                                              n, &done, timeout_ms);
	if (st == CALAIS__USB_STALL)
		d->ops->clear_halt(d->h, d->ifc.ep_bulk_out);
	if (st == CALAIS__USB_OK && done != n)
		st = CALAIS__USB_IO;
	return usb_pcsc(d, st, "bulk OUT");
}

static LONG bulk_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms)
{
	struct ccid_dev *d = user;
	*n = 0;
	enum calais__usb_status st = d->ops->transfer(d->h, d->ifc.ep_bulk_in, false, buf, cap, n,
	                                              timeout_ms);
	if (st == CALAIS__USB_STALL)
		d->ops->clear_halt(d->h, d->ifc.ep_bulk_in);
	if (st == CALAIS__USB_OVERFLOW) {
		ccid_warn("%s: reply longer than dwMaxCCIDMessageLength (%zu)", d->name, cap);
		return SCARD_F_COMM_ERROR;
	}
	return usb_pcsc(d, st, "bulk IN");
}

static LONG bulk_abort(void *user, uint8_t slot, uint8_t seq)
{
	struct ccid_dev *d = user;
	size_t done;
	enum calais__usb_status st = d->ops->control(d->h, 0x21, 0x01, (uint16_t)(seq << 8 | slot),
	                                             d->ifc.number, NULL, 0, &done, 1000);
	return st == CALAIS__USB_OK ? SCARD_S_SUCCESS : SCARD_F_COMM_ERROR;
}

static void bulk_recover(void *user)
{
	struct ccid_dev *d = user;
	d->ops->clear_halt(d->h, d->ifc.ep_bulk_in);
	d->ops->clear_halt(d->h, d->ifc.ep_bulk_out);
}

/* ---- the interrupt pipe -------------------------------------------------------------- */

/* d->readers[] is guarded by cp->lock: the core may close a reader (and free it) at any
 * time after it removed it on its own. Card events never wait, so they are reported with
 * the lock held. */
static void report_slot(struct ccid_dev *d, unsigned i, bool present, bool changed)
{
	calais__mutex_lock(&d->cp->lock);
	if (!d->readers[i]) {
		calais__mutex_unlock(&d->cp->lock);
		return;
	}
	/* Present before and after, yet changed: removed and reinserted between two
	 * notifications. Not for the first one, which readers queue at enumeration for the
	 * card we already know of. */
	if (changed && present && d->present[i] && d->notified)
		calais_reader_card_event(d->readers[i], false);
	if (changed || present != d->present[i])
		calais_reader_card_event(d->readers[i], present);
	d->present[i] = present;
	calais__mutex_unlock(&d->cp->lock);
}

static void *intr_main(void *arg)
{
	struct ccid_dev *d = arg;
	uint8_t buf[64];
	unsigned errors = 0;
	while (!d->intr_stop) {
		size_t n = 0;
		enum calais__usb_status st =
			d->ops->transfer(d->h, d->ifc.ep_intr, true, buf, sizeof(buf), &n, 0);
		if (d->intr_stop || st == CALAIS__USB_CANCELLED)
			break;
		if (st == CALAIS__USB_NO_DEVICE) {
			d->port.gone = true;
			calais__ccid_wake(&d->port);
			calais__mutex_lock(&d->cp->lock);
			d->cp->rescan = true;
			calais__cond_broadcast(&d->cp->cond);
			calais__mutex_unlock(&d->cp->lock);
			break;
		}
		if (st == CALAIS__USB_STALL)
			d->ops->clear_halt(d->h, d->ifc.ep_intr);
		if (st != CALAIS__USB_OK) {
			if (st != CALAIS__USB_TIMEOUT && ++errors % 50 == 1)
				ccid_warn("%s: interrupt pipe: %s", d->name, calais__usb_status_name(st));
			if (st != CALAIS__USB_TIMEOUT)
				calais__sleep_us(20000);
			continue;
		}
		uint8_t bits[4 * 63];
		size_t k = calais__ccid_intr_parse(d->name, buf, n,
		                                   d->n_slots < sizeof(bits) ? d->n_slots : sizeof(bits),
		                                   bits);
		for (size_t i = 0; i < k; i++)
			report_slot(d, (unsigned)i, bits[i] & 1, bits[i] & 2);
		if (n >= 2 && buf[0] == CALAIS__RDR_NOTIFY_SLOT_CHANGE)
			d->notified = true;
	}
	return NULL;
}

/* Stops the interrupt thread for good (the device is going away). */
static void intr_stop(struct ccid_dev *d)
{
	calais__mutex_lock(&d->cp->lock);
	bool running = d->intr_running;
	d->intr_running = false;
	d->intr_stop = true;
	d->stopped = true;
	calais__mutex_unlock(&d->cp->lock);
	if (!running)
		return;
	d->ops->cancel(d->h, d->ifc.ep_intr);
	calais__thread_join(d->intr);
}

/* ---- devices ----------------------------------------------------------------------------- */

/* Claims the interface; false (logged once) while another process or driver has it. */
static bool try_claim(struct ccid_dev *d)
{
	if (d->claimed)
		return true;
	enum calais__usb_status st = d->ops->claim(d->h, d->ifc.number);
	if (st != CALAIS__USB_OK) {
		d->claim_error = st == CALAIS__USB_BUSY ? SCARD_E_SHARING_VIOLATION
		                                        : SCARD_E_READER_UNAVAILABLE;
		if (!d->busy_logged)
			ccid_warn("%s: cannot claim USB interface %u (%s): %s; the reader stays listed "
			          "and unavailable until the device is free",
			          d->name, d->ifc.number, calais__usb_status_name(st),
			          st == CALAIS__USB_BUSY ? "another process or kernel driver holds it"
			          : st == CALAIS__USB_ACCESS ? "no permission on the device node"
			                                     : "USB error");
		d->busy_logged = true;
		return false;
	}
	if (d->busy_logged)
		ccid_info("%s: USB interface %u claimed", d->name, d->ifc.number);
	d->busy_logged = false;
	d->port.gone = false;
	d->claimed = true;
	d->claim_error = SCARD_S_SUCCESS;
	calais__mutex_lock(&d->cp->lock);
	for (unsigned i = 0; i < d->n_slots; i++)
		if (d->readers[i])
			calais_reader_set_unavailable(d->readers[i], SCARD_S_SUCCESS);
	calais__mutex_unlock(&d->cp->lock);
	return true;
}

static void get_rates(struct ccid_dev *d)
{
	if (d->desc.num_rates == 0)
		return;
	uint8_t buf[256];
	size_t done = 0, n = 0;
	if (d->ops->control(d->h, 0xA1, 0x03, 0, d->ifc.number, buf, sizeof(buf), &done, 1000) !=
	    CALAIS__USB_OK) {
		ccid_dbg("%s: no GET_DATA_RATES list", d->name);
		return;
	}
	if (calais__ccid_rates_parse(d->name, buf, done, d->rates, CALAIS__ARRAY_SIZE(d->rates), &n) !=
	    SCARD_S_SUCCESS)
		return;
	for (unsigned i = 0; i < d->n_slots; i++) {
		d->slots[i].rates = n ? d->rates : NULL;
		d->slots[i].n_rates = n;
	}
}

static void free_dev(struct ccid_dev *d)
{
	if (d->h) {
		if (d->claimed)
			d->ops->release(d->h, d->ifc.number);
		d->ops->close(d->h);
	}
	if (d->udev)
		d->ops->unref(d->udev);
	if (d->port_ready)
		calais__ccid_port_free(&d->port);
	free(d->slots);
	free(d->readers);
	free(d->present);
	free(d);
}

static bool card_present_now(struct ccid_dev *d, unsigned slot)
{
	bool present = false;
	if (d->claimed && calais__ccid_slot_status(&d->slots[slot], &present) != SCARD_S_SUCCESS)
		present = false;
	return present;
}

/* Starts the interrupt thread once the interface is claimed (from the monitor, or from
 * the first connection to a device that was busy). */
static void start_intr(struct ccid_dev *d)
{
	calais__mutex_lock(&d->cp->lock);
	if (d->ifc.ep_intr && d->claimed && !d->intr_running && !d->stopped) {
		d->intr_stop = false;
		if (calais__thread_create(&d->intr, intr_main, d) == 0)
			d->intr_running = true;
		else
			ccid_err("%s: cannot start the interrupt thread", d->name);
	}
	calais__mutex_unlock(&d->cp->lock);
}

/* Opens one CCID interface and publishes its slots. */
static void add_dev(struct ccid_priv *cp, struct calais__usb_dev *udev,
                    const struct calais__usb_dev_info *info, const struct calais__usb_ccid_if *ifc)
{
	struct ccid_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->cp = cp;
	d->ops = cp->ops;
	d->bus = info->bus;
	d->address = info->address;
	d->ifc = *ifc;
	d->seen = true;
	snprintf(d->name, sizeof(d->name), "USB %04X:%04X bus %u address %u interface %u", info->vid,
	         info->pid, info->bus, info->address, ifc->number);
	if (calais__ccid_desc_parse(ifc->class_desc, 54, &d->desc) != SCARD_S_SUCCESS) {
		ccid_warn("%s: unusable CCID class descriptor", d->name);
		free(d);
		return;
	}
	calais__ccid_strategy(&d->desc, &d->st);
	if (ifc->kind != CALAIS__CCID_BULK) {
		/* ICCD has no SetParameters, Secure or Escape; version A exchanges T=0 TPDUs,
		 * version B APDUs with the extended chaining (as libccid drives it, even when
		 * the descriptor says short APDU). */
		d->st.host_pps = d->st.set_parameters = d->st.ifsd_request = false;
		d->st.pin_verify = d->st.pin_modify = false;
		if (ifc->kind == CALAIS__CCID_ICCD_A) {
			d->st.level = CALAIS__CCID_TPDU;
			d->desc.protocols = 1;
			d->st.max_apdu = 5 + 255;
		} else {
			d->st.level = CALAIS__CCID_EXTENDED_APDU;
			d->st.max_apdu = MAX_BUFFER_SIZE_EXTENDED;
		}
		if (d->desc.max_message_length > CALAIS__CCID_HEADER + CALAIS__ICCD_MAX_DATA)
			d->desc.max_message_length = CALAIS__CCID_HEADER + CALAIS__ICCD_MAX_DATA;
	}
	enum calais__usb_status st = d->ops->open(udev, &d->h);
	if (st != CALAIS__USB_OK) {
		ccid_warn("%s: cannot open the device: %s%s", d->name, calais__usb_status_name(st),
		          st == CALAIS__USB_ACCESS ? " (no permission on the device node)" : "");
		free(d);
		return;
	}
	d->ops->ref(udev);
	d->udev = udev;

	char manufacturer[128] = "", product[128] = "", serial[128] = "", iface[128] = "";
	d->ops->string(d->h, info->i_manufacturer, manufacturer, sizeof(manufacturer));
	d->ops->string(d->h, info->i_product, product, sizeof(product));
	d->ops->string(d->h, info->i_serial, serial, sizeof(serial));
	d->ops->string(d->h, ifc->i_interface, iface, sizeof(iface));
	snprintf(d->serial, sizeof(d->serial), "%s", serial);
	char base[260];
	if (*manufacturer && *product)
		snprintf(base, sizeof(base), "%s %s", manufacturer, product);
	else if (*product || *manufacturer)
		snprintf(base, sizeof(base), "%s", *product ? product : manufacturer);
	else
		snprintf(base, sizeof(base), "USB CCID reader %04X:%04X", info->vid, info->pid);
	snprintf(d->name, sizeof(d->name), "%s (bus %u address %u interface %u)", base, info->bus,
	         info->address, ifc->number);

	if (ifc->kind == CALAIS__CCID_BULK) {
		d->port.user = d;
		d->port.send = bulk_send;
		d->port.recv = bulk_recv;
		d->port.abort = bulk_abort;
		d->port.recover = bulk_recover;
	} else {
		d->iccd = (struct calais__iccd){ .ops = d->ops, .h = d->h, .iface = ifc->number,
		                                 .version_b = ifc->kind == CALAIS__CCID_ICCD_B,
		                                 .name = d->name, .port = &d->port };
		d->port.user = &d->iccd;
		d->port.send = calais__iccd_send;
		d->port.recv = calais__iccd_recv;
	}
	d->port.name = d->name;
	/* Slots that may run a command at once (CCID 1.1 5.1, bMaxCCIDBusySlots); ICCD
	 * devices have one slot. */
	d->port.max_busy = 1;
	if (ifc->kind == CALAIS__CCID_BULK && d->desc.max_busy_slots > 1)
		d->port.max_busy = d->desc.max_busy_slots < d->st.slots ? d->desc.max_busy_slots
		                                                        : d->st.slots;
	if (calais__ccid_port_init(&d->port, d->desc.max_message_length) != SCARD_S_SUCCESS) {
		free_dev(d);
		return;
	}
	d->port_ready = true;
	d->n_slots = d->st.slots;
	d->slots = calloc(d->n_slots, sizeof(*d->slots));
	d->readers = calloc(d->n_slots, sizeof(*d->readers));
	d->present = calloc(d->n_slots, sizeof(*d->present));
	if (!d->slots || !d->readers || !d->present) {
		free_dev(d);
		return;
	}
	for (unsigned i = 0; i < d->n_slots; i++) {
		struct calais__ccid_slot *s = &d->slots[i];
		s->port = &d->port;
		s->desc = &d->desc;
		s->st = &d->st;
		s->index = (uint8_t)i;
		s->vid = info->vid;
		s->pid = info->pid;
		s->escape = cp->escape;
	}
	try_claim(d);
	if (d->claimed)
		get_rates(d);

	d->refs = 1; /* the list */
	for (unsigned i = 0; i < d->n_slots; i++) {
		struct calais_feature features[8];
		size_t n_features = calais__ccid_features(&d->slots[i], features);
		uint32_t protocols = d->desc.protocols & 3;
		struct calais_reader_desc rd = {
			.name = base,
			.interface_name = *iface ? iface : NULL,
			.serial = *serial ? serial : NULL,
			.vendor = *manufacturer ? manufacturer : NULL,
			.ifd_version = (uint32_t)info->bcd_device << 16,
			.channel_id = 0x00200000u | (uint32_t)info->bus << 8 | info->address,
			.max_input = d->st.max_apdu,
			.slot = i,
			/* The first presence is asked by the core from this reader's own
			 * thread: a device that does not answer it holds up no other. */
			.flags = CALAIS_READER_PROBE_PRESENCE |
			         (d->ifc.ep_intr ? 0 : CALAIS_READER_POLL_PRESENCE),
			.protocols = protocols ? protocols : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
			.features = features,
			.n_features = n_features,
		};
		calais_reader *r;
		if (calais_reader_new(cp->bi, &rd, &r) != SCARD_S_SUCCESS)
			continue;
		struct ccid_reader *cr = calais_reader_priv(r);
		cr->dev = d;
		cr->slot = i;
		if (!d->claimed)
			calais_reader_set_unavailable(r, d->claim_error);
		calais__mutex_lock(&cp->lock);
		d->refs++;
		calais__mutex_unlock(&cp->lock);
		if (calais_reader_publish(r, false) != SCARD_S_SUCCESS) {
			calais__mutex_lock(&cp->lock);
			d->refs--;
			calais__mutex_unlock(&cp->lock);
			continue;
		}
		calais__mutex_lock(&cp->lock);
		d->readers[i] = r;
		calais__mutex_unlock(&cp->lock);
	}
	ccid_info("%s: %s, %u slot(s), %s level, %s", d->name,
	          (const char *[]){ "CCID", "ICCD version A", "ICCD version B" }[ifc->kind], d->n_slots,
	          (const char *[]){ "character", "TPDU", "short APDU", "extended APDU" }[d->st.level],
	          d->ifc.ep_intr ? "interrupt pipe" : "polled presence");
	start_intr(d);
	calais__mutex_lock(&cp->lock);
	d->next = cp->devs;
	cp->devs = d;
	calais__mutex_unlock(&cp->lock);
}

/* The device is gone (or the backend stops): readers removed, device freed once the core
 * has closed them. Called without cp->lock, d already off the list. */
static void remove_dev(struct ccid_dev *d, bool unplugged)
{
	if (unplugged) {
		d->port.gone = true;
		if (d->port_ready)
			calais__ccid_wake(&d->port);
		ccid_info("%s: removed", d->name);
	}
	intr_stop(d);
	if (unplugged) {
		calais__mutex_lock(&d->cp->lock);
		for (unsigned i = 0; i < d->n_slots; i++)
			if (d->readers[i])
				calais_reader_remove(d->readers[i]);
		calais__mutex_unlock(&d->cp->lock);
	}
	dev_unref(d);
}

static void scan(struct ccid_priv *cp)
{
	struct calais__usb_dev **list = NULL;
	size_t n = 0;
	if (cp->ops->list(cp->ctx, &list, &n) != CALAIS__USB_OK) {
		ccid_warn("USB enumeration failed");
		return;
	}
	calais__mutex_lock(&cp->lock);
	for (struct ccid_dev *d = cp->devs; d; d = d->next)
		d->seen = false;
	calais__mutex_unlock(&cp->lock);

	for (size_t i = 0; i < n; i++) {
		struct calais__usb_dev_info info;
		if (cp->ops->info(list[i], &info) != CALAIS__USB_OK)
			continue;
		struct calais__usb_ccid_if ifs[CALAIS__USB_MAX_CCID_IFS];
		size_t n_ifs = calais__usb_find_ccid(info.config, info.config_len, ifs,
		                                     CALAIS__USB_MAX_CCID_IFS);
		for (size_t k = 0; k < n_ifs; k++) {
			bool known = false;
			calais__mutex_lock(&cp->lock);
			for (struct ccid_dev *d = cp->devs; d; d = d->next)
				if (d->bus == info.bus && d->address == info.address &&
				    d->ifc.number == ifs[k].number) {
					d->seen = known = true;
				}
			calais__mutex_unlock(&cp->lock);
			if (!known)
				add_dev(cp, list[i], &info, &ifs[k]);
		}
	}

	/* Devices no longer listed are gone; unclaimed ones get another try. */
	struct ccid_dev *gone = NULL;
	calais__mutex_lock(&cp->lock);
	for (struct ccid_dev **pp = &cp->devs; *pp;) {
		struct ccid_dev *d = *pp;
		if (!d->seen) {
			*pp = d->next;
			d->next = gone;
			gone = d;
		} else {
			pp = &d->next;
		}
	}
	calais__mutex_unlock(&cp->lock);
	while (gone) {
		struct ccid_dev *d = gone;
		gone = d->next;
		remove_dev(d, true);
	}
	calais__mutex_lock(&cp->lock);
	for (struct ccid_dev *d = cp->devs; d; d = d->next) {
		if (d->claimed || d->port.gone)
			continue;
		calais__mutex_unlock(&cp->lock);
		/* The claim happens under the reader's I/O locks elsewhere; here a free
		 * device simply becomes usable, and its cards are reported. */
		calais__mutex_lock(&d->port.lock);
		bool ok = try_claim(d);
		calais__mutex_unlock(&d->port.lock);
		if (ok) {
			for (unsigned s = 0; s < d->n_slots; s++)
				report_slot(d, s, card_present_now(d, s), false);
			start_intr(d);
		}
		calais__mutex_lock(&cp->lock);
	}
	calais__mutex_unlock(&cp->lock);
	for (size_t i = 0; i < n; i++)
		cp->ops->unref(list[i]);
	free(list);
}

static bool any_unclaimed(struct ccid_priv *cp)
{
	for (struct ccid_dev *d = cp->devs; d; d = d->next)
		if (!d->claimed)
			return true;
	return false;
}

static void *monitor_main(void *arg)
{
	struct ccid_priv *cp = arg;
	calais__mutex_lock(&cp->lock);
	while (!cp->stop) {
		if (cp->rescan) {
			cp->rescan = false;
			calais__mutex_unlock(&cp->lock);
			scan(cp);
			calais__mutex_lock(&cp->lock);
			continue;
		}
		bool periodic = !cp->hotplug || any_unclaimed(cp);
		if (periodic) {
			if (!calais__cond_wait_until(&cp->cond, &cp->lock,
			                             calais__now_ms() + RESCAN_MS))
				cp->rescan = true;
		} else {
			calais__cond_wait(&cp->cond, &cp->lock);
		}
	}
	calais__mutex_unlock(&cp->lock);
	return NULL;
}

static void usb_changed(void *user)
{
	struct ccid_priv *cp = user;
	calais__mutex_lock(&cp->lock);
	cp->rescan = true;
	calais__cond_broadcast(&cp->cond);
	calais__mutex_unlock(&cp->lock);
}

/* ---- the backend table --------------------------------------------------------------------- */

static LONG ccid_init(calais_backend_instance *bi)
{
	struct ccid_priv *cp = calais_backend_priv(bi);
	cp->bi = bi;
	cp->ops = calais__ccid_usb ? calais__ccid_usb : &calais__usb_libusb;
	const char *esc = calais__getenv("CALAIS_CCID_ESCAPE");
	cp->escape = calais__mgr.cfg.ccid_escape || calais__parse_flag(esc);
	calais__mutex_init(&cp->lock);
	calais__cond_init(&cp->cond);
	enum calais__usb_status st = cp->ops->init(&cp->ctx, usb_changed, cp, &cp->hotplug);
	if (st != CALAIS__USB_OK) {
		ccid_warn("USB transport %s unavailable: %s", cp->ops->name, calais__usb_status_name(st));
		cp->ops = NULL;
		return SCARD_S_SUCCESS; /* no readers from this backend; nothing to retry */
	}
	scan(cp);
	if (calais__thread_create(&cp->monitor, monitor_main, cp) == 0)
		cp->monitor_running = true;
	else
		ccid_err("cannot start the USB monitor thread");
	return SCARD_S_SUCCESS;
}

static void ccid_stop(calais_backend_instance *bi)
{
	struct ccid_priv *cp = calais_backend_priv(bi);
	if (!cp->ops)
		return;
	calais__mutex_lock(&cp->lock);
	cp->stop = true;
	calais__cond_broadcast(&cp->cond);
	calais__mutex_unlock(&cp->lock);
	if (cp->monitor_running)
		calais__thread_join(cp->monitor);
	cp->monitor_running = false;
	calais__mutex_lock(&cp->lock);
	struct ccid_dev *list = cp->devs;
	cp->devs = NULL;
	calais__mutex_unlock(&cp->lock);
	while (list) {
		struct ccid_dev *d = list;
		list = d->next;
		remove_dev(d, false);
	}
}

static void ccid_exit(calais_backend_instance *bi)
{
	struct ccid_priv *cp = calais_backend_priv(bi);
	if (cp->ops)
		cp->ops->exit(cp->ctx);
	calais__cond_destroy(&cp->cond);
	calais__mutex_destroy(&cp->lock);
}

static void ccid_close(calais_reader *r)
{
	struct ccid_reader *cr = calais_reader_priv(r);
	struct ccid_dev *d = cr->dev;
	if (!d)
		return;
	calais__mutex_lock(&d->cp->lock);
	d->readers[cr->slot] = NULL;
	calais__mutex_unlock(&d->cp->lock);
	if (d->slots[cr->slot].powered && !d->port.gone) {
		d->port.cancel_slot[cr->slot] = false; /* a cancel() must not stop the power-off */
		calais__ccid_power_off(&d->slots[cr->slot]);
	}
	cr->dev = NULL;
	dev_unref(d);
}

/* The device may be held by another process: claim it on first use. */
static LONG ensure_claimed(struct ccid_dev *d)
{
	if (d->claimed)
		return SCARD_S_SUCCESS;
	calais__mutex_lock(&d->port.lock);
	bool ok = try_claim(d);
	calais__mutex_unlock(&d->port.lock);
	if (!ok) {
		ccid_warn("%s: in use by another process; connection refused", d->name);
		return SCARD_E_SHARING_VIOLATION;
	}
	get_rates(d);
	start_intr(d);
	return SCARD_S_SUCCESS;
}

#define SLOT(r) (&((struct ccid_reader *)calais_reader_priv(r))->dev->slots[                  \
	((struct ccid_reader *)calais_reader_priv(r))->slot])
#define DEV(r) (((struct ccid_reader *)calais_reader_priv(r))->dev)

/* A call begins: a cancel() meant for an earlier call (it may come just after that one
 * returned) does not stop this one. */
static void call_start(calais_reader *r)
{
	struct ccid_reader *cr = calais_reader_priv(r);
	cr->dev->port.cancel_slot[cr->slot] = false;
}

static LONG ccid_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	call_start(r);
	LONG rv = ensure_claimed(DEV(r));
	return rv != SCARD_S_SUCCESS ? rv : calais__ccid_power_on(SLOT(r), warm, atr, atr_len);
}

static LONG ccid_power_off(calais_reader *r)
{
	call_start(r);
	return DEV(r)->claimed ? calais__ccid_power_off(SLOT(r)) : SCARD_S_SUCCESS;
}

static LONG ccid_set_protocol(calais_reader *r, uint32_t protocol)
{
	call_start(r);
	return calais__ccid_set_protocol(SLOT(r), protocol);
}

static LONG ccid_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	call_start(r);
	/* The whole exchange (every block, byte, time extension and retry) ends by the
	 * core's exchange limit. */
	SLOT(r)->deadline_ms = timeout_ms ? calais__now_ms() + timeout_ms : 0;
	return calais__ccid_transmit(SLOT(r), protocol, tx, tx_len, rx, rx_len);
}

static LONG ccid_control(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len)
{
	call_start(r);
	LONG rv = ensure_claimed(DEV(r));
	return rv != SCARD_S_SUCCESS ? rv
	                             : calais__ccid_control(SLOT(r), code, in, in_len, out, out_cap,
	                                                    out_len);
}

static LONG ccid_get_attrib(calais_reader *r, uint32_t id, uint8_t *buf, size_t *len)
{
	struct ccid_dev *d = DEV(r);
	if (id != SCARD_ATTR_VENDOR_IFD_SERIAL_NO || !d->serial[0])
		return SCARD_E_UNSUPPORTED_FEATURE;
	size_t n = strlen(d->serial) + 1; /* with its NUL, as libccid answers it */
	if (n > *len) {
		*len = n;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	memcpy(buf, d->serial, n);
	*len = n;
	return SCARD_S_SUCCESS;
}

static LONG ccid_slot_status(calais_reader *r, bool *present)
{
	struct ccid_dev *d = DEV(r);
	if (d->port.gone)
		return SCARD_E_READER_UNAVAILABLE;
	if (!d->claimed) {
		*present = false;
		return SCARD_S_SUCCESS;
	}
	call_start(r);
	/* A poll never waits for another slot's exchange: the last presence known then. */
	unsigned slot = ((struct ccid_reader *)calais_reader_priv(r))->slot;
	LONG rv = calais__ccid_slot_poll(SLOT(r), present);
	if (rv == SCARD_E_READER_UNAVAILABLE) {
		usb_changed(d->cp);
		return rv;
	}
	calais__mutex_lock(&d->cp->lock);
	if (rv != SCARD_S_SUCCESS)
		*present = d->present[slot];
	else if (!d->ifc.ep_intr)
		d->present[slot] = *present; /* with a pipe, its events keep this */
	calais__mutex_unlock(&d->cp->lock);
	return SCARD_S_SUCCESS;
}

/* Never blocks: the slot's flag, a wake-up of its waits (for the device, a command
 * slot, a reply another slot reads), and its bulk-IN transfer stopped when it is the
 * one reading (another slot's read would only start again). ICCD waits are control
 * transfers of at most 10 s and polls that see the flag within 10 ms. */
static void ccid_cancel(calais_reader *r)
{
	struct ccid_reader *cr = calais_reader_priv(r);
	struct ccid_dev *d = cr->dev;
	if (!d || !d->port_ready)
		return;
	d->port.cancel_slot[cr->slot] = true;
	calais__ccid_wake(&d->port);
	if (d->claimed && d->ifc.kind == CALAIS__CCID_BULK &&
	    atomic_load(&d->port.reader_slot) == (int)cr->slot)
		d->ops->cancel(d->h, d->ifc.ep_bulk_in);
}

const struct calais_backend calais__backend_ccid = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "ccid",
	.caps = CALAIS_BACKEND_CAP_HOTPLUG | CALAIS_BACKEND_CAP_CARD_EVENTS |
	        CALAIS_BACKEND_CAP_EXTENDED | CALAIS_BACKEND_CAP_PINPAD,
	.instance_priv_size = sizeof(struct ccid_priv),
	.reader_priv_size = sizeof(struct ccid_reader),
	.init = ccid_init,
	.stop = ccid_stop,
	.exit = ccid_exit,
	.close = ccid_close,
	.power_on = ccid_power_on,
	.power_off = ccid_power_off,
	.set_protocol = ccid_set_protocol,
	.transmit = ccid_transmit,
	.control = ccid_control,
	.get_attrib = ccid_get_attrib,
	.slot_status = ccid_slot_status,
	.cancel = ccid_cancel,
};
