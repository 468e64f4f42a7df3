/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The USB seam on libusb-1.0: one private libusb context, an event thread for hotplug
 * callbacks, and asynchronous transfers waited for synchronously so that cancel() can
 * stop one from another thread (the interrupt pipe at shutdown, a card exchange on
 * SCardCancel or removal). */
#include "calais-internal.h"
#include "usb.h"

#include <libusb.h>
#include <stdlib.h>

#define usb_log(level, ...)                                                          \
	do {                                                                         \
		if (CALAIS__LOG_ON(level))                                    \
			calais__log((level), "usb", __VA_ARGS__);                    \
	} while (0)

struct usb_ctx {
	libusb_context *ctx;
	calais__usb_changed_cb changed;
	void *user;
	bool hotplug;
	libusb_hotplug_callback_handle cb;
	calais__thread_t events;
	int stop;
};

struct calais__usb_dev {
	libusb_device *dev;
	struct usb_ctx *uc;
	unsigned refs; /* lock below */
	uint8_t *config;
	size_t config_len;
	struct libusb_device_descriptor dd;
};

#define MAX_ACTIVE 4
struct calais__usb_handle {
	libusb_device_handle *h;
	struct usb_ctx *uc;
	calais__mutex_t lock;
	struct libusb_transfer *active[MAX_ACTIVE];
	uint8_t cancel_ep[MAX_ACTIVE]; /* cancel() with nothing in flight: the next one ends */
};

static calais__mutex_t ref_lock = CALAIS__MUTEX_INIT;

static enum calais__usb_status map_error(int e)
{
	switch (e) {
	case LIBUSB_SUCCESS: return CALAIS__USB_OK;
	case LIBUSB_ERROR_TIMEOUT: return CALAIS__USB_TIMEOUT;
	case LIBUSB_ERROR_PIPE: return CALAIS__USB_STALL;
	case LIBUSB_ERROR_NO_DEVICE: return CALAIS__USB_NO_DEVICE;
	case LIBUSB_ERROR_BUSY: return CALAIS__USB_BUSY;
	case LIBUSB_ERROR_ACCESS: return CALAIS__USB_ACCESS;
	case LIBUSB_ERROR_OVERFLOW: return CALAIS__USB_OVERFLOW;
	case LIBUSB_ERROR_NO_MEM: return CALAIS__USB_NO_MEM;
	case LIBUSB_ERROR_INTERRUPTED: return CALAIS__USB_CANCELLED;
	default: return CALAIS__USB_IO;
	}
}

static enum calais__usb_status logged(int e, const char *what)
{
	if (e < 0 && e != LIBUSB_ERROR_TIMEOUT)
		usb_log(CALAIS_LOG_DEBUG, "%s: %s", what, libusb_error_name(e));
	return map_error(e);
}

static int LIBUSB_CALL hotplug_cb(libusb_context *ctx, libusb_device *dev,
                                  libusb_hotplug_event event, void *user)
{
	struct usb_ctx *uc = user;
	/* No libusb call here: the backend re-enumerates from its own thread. */
	uc->changed(uc->user);
	return 0;
}

static void *events_main(void *arg)
{
	struct usb_ctx *uc = arg;
	while (!__atomic_load_n(&uc->stop, __ATOMIC_ACQUIRE)) {
		struct timeval tv = { 1, 0 };
		libusb_handle_events_timeout_completed(uc->ctx, &tv, &uc->stop);
	}
	return NULL;
}

static enum calais__usb_status lu_init(void **out, calais__usb_changed_cb changed, void *user,
                                       bool *hotplug)
{
	struct usb_ctx *uc = calloc(1, sizeof(*uc));
	if (!uc)
		return CALAIS__USB_NO_MEM;
	int e = libusb_init(&uc->ctx);
	if (e < 0) {
		usb_log(CALAIS_LOG_WARNING, "libusb_init: %s", libusb_error_name(e));
		free(uc);
		return map_error(e);
	}
	uc->changed = changed;
	uc->user = user;
	if (libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
		e = libusb_hotplug_register_callback(
			uc->ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
			0, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
			hotplug_cb, uc, &uc->cb);
		uc->hotplug = e == LIBUSB_SUCCESS;
		if (!uc->hotplug)
			usb_log(CALAIS_LOG_INFO, "no USB hotplug (%s): periodic re-enumeration",
			        libusb_error_name(e));
	}
	if (calais__thread_create(&uc->events, events_main, uc) != 0) {
		if (uc->hotplug)
			libusb_hotplug_deregister_callback(uc->ctx, uc->cb);
		libusb_exit(uc->ctx);
		free(uc);
		return CALAIS__USB_NO_MEM;
	}
	*hotplug = uc->hotplug;
	*out = uc;
	return CALAIS__USB_OK;
}

static void lu_exit(void *ctx)
{
	struct usb_ctx *uc = ctx;
	if (uc->hotplug)
		libusb_hotplug_deregister_callback(uc->ctx, uc->cb);
	__atomic_store_n(&uc->stop, 1, __ATOMIC_RELEASE);
	libusb_interrupt_event_handler(uc->ctx);
	calais__thread_join(uc->events);
	libusb_exit(uc->ctx);
	free(uc);
}

/* libusb parses the configuration descriptor; the seam wants it raw, so the parts the
 * backend reads are written back in order (interfaces, class descriptors, endpoints). */
static uint8_t *raw_config(const struct libusb_config_descriptor *c, size_t *len)
{
	size_t n = 9 + (size_t)c->extra_length;
	for (int i = 0; i < c->bNumInterfaces; i++)
		for (int a = 0; a < c->interface[i].num_altsetting; a++) {
			const struct libusb_interface_descriptor *id = &c->interface[i].altsetting[a];
			n += 9 + (size_t)id->extra_length;
			for (int e = 0; e < id->bNumEndpoints; e++)
				n += 7 + (size_t)id->endpoint[e].extra_length;
		}
	if (n > 0xFFFF)
		return NULL;
	uint8_t *b = malloc(n), *p = b;
	if (!b)
		return NULL;
	*p++ = 9;
	*p++ = LIBUSB_DT_CONFIG;
	*p++ = (uint8_t)n;
	*p++ = (uint8_t)(n >> 8);
	*p++ = c->bNumInterfaces;
	*p++ = c->bConfigurationValue;
	*p++ = c->iConfiguration;
	*p++ = c->bmAttributes;
	*p++ = c->MaxPower;
	memcpy(p, c->extra, (size_t)c->extra_length);
	p += c->extra_length;
	for (int i = 0; i < c->bNumInterfaces; i++)
		for (int a = 0; a < c->interface[i].num_altsetting; a++) {
			const struct libusb_interface_descriptor *id = &c->interface[i].altsetting[a];
			*p++ = 9;
			*p++ = LIBUSB_DT_INTERFACE;
			*p++ = id->bInterfaceNumber;
			*p++ = id->bAlternateSetting;
			*p++ = id->bNumEndpoints;
			*p++ = id->bInterfaceClass;
			*p++ = id->bInterfaceSubClass;
			*p++ = id->bInterfaceProtocol;
			*p++ = id->iInterface;
			memcpy(p, id->extra, (size_t)id->extra_length);
			p += id->extra_length;
			for (int e = 0; e < id->bNumEndpoints; e++) {
				const struct libusb_endpoint_descriptor *ed = &id->endpoint[e];
				*p++ = 7;
				*p++ = LIBUSB_DT_ENDPOINT;
				*p++ = ed->bEndpointAddress;
				*p++ = ed->bmAttributes;
				*p++ = (uint8_t)ed->wMaxPacketSize;
				*p++ = (uint8_t)(ed->wMaxPacketSize >> 8);
				*p++ = ed->bInterval;
				memcpy(p, ed->extra, (size_t)ed->extra_length);
				p += ed->extra_length;
			}
		}
	*len = n;
	return b;
}

static enum calais__usb_status lu_list(void *ctx, struct calais__usb_dev ***out, size_t *n_out)
{
	struct usb_ctx *uc = ctx;
	libusb_device **list;
	ssize_t n = libusb_get_device_list(uc->ctx, &list);
	if (n < 0)
		return logged((int)n, "libusb_get_device_list");
	struct calais__usb_dev **devs = calloc((size_t)n + 1, sizeof(*devs));
	size_t k = 0;
	for (ssize_t i = 0; devs && i < n; i++) {
		struct libusb_device_descriptor dd;
		struct libusb_config_descriptor *cfg;
		if (libusb_get_device_descriptor(list[i], &dd) < 0)
			continue;
		/* Only devices that may carry a CCID interface: class 0 (per interface) or
		 * 0x0B, or vendor-specific. Hubs and the like are skipped cheaply. */
		if (dd.bDeviceClass != 0 && dd.bDeviceClass != 0x0B && dd.bDeviceClass != 0xFF &&
		    dd.bDeviceClass != 0xEF)
			continue;
		if (libusb_get_active_config_descriptor(list[i], &cfg) < 0 &&
		    libusb_get_config_descriptor(list[i], 0, &cfg) < 0)
			continue;
		struct calais__usb_dev *d = calloc(1, sizeof(*d));
		if (d)
			d->config = raw_config(cfg, &d->config_len);
		libusb_free_config_descriptor(cfg);
		if (!d || !d->config) {
			free(d);
			continue;
		}
		d->dev = libusb_ref_device(list[i]);
		d->uc = uc;
		d->refs = 1;
		d->dd = dd;
		devs[k++] = d;
	}
	libusb_free_device_list(list, 1);
	if (!devs)
		return CALAIS__USB_NO_MEM;
	*out = devs;
	*n_out = k;
	return CALAIS__USB_OK;
}

static void lu_ref(struct calais__usb_dev *d)
{
	calais__mutex_lock(&ref_lock);
	d->refs++;
	calais__mutex_unlock(&ref_lock);
}

static void lu_unref(struct calais__usb_dev *d)
{
	calais__mutex_lock(&ref_lock);
	bool last = --d->refs == 0;
	calais__mutex_unlock(&ref_lock);
	if (!last)
		return;
	libusb_unref_device(d->dev);
	free(d->config);
	free(d);
}

static enum calais__usb_status lu_info(struct calais__usb_dev *d, struct calais__usb_dev_info *o)
{
	memset(o, 0, sizeof(*o));
	o->vid = d->dd.idVendor;
	o->pid = d->dd.idProduct;
	o->bcd_device = d->dd.bcdDevice;
	o->i_manufacturer = d->dd.iManufacturer;
	o->i_product = d->dd.iProduct;
	o->i_serial = d->dd.iSerialNumber;
	o->bus = libusb_get_bus_number(d->dev);
	o->address = libusb_get_device_address(d->dev);
	o->config = d->config;
	o->config_len = d->config_len;
	return CALAIS__USB_OK;
}

static enum calais__usb_status lu_open(struct calais__usb_dev *d, struct calais__usb_handle **out)
{
	struct calais__usb_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return CALAIS__USB_NO_MEM;
	int e = libusb_open(d->dev, &h->h);
	if (e < 0) {
		free(h);
		return logged(e, "libusb_open");
	}
	h->uc = d->uc;
	calais__mutex_init(&h->lock);
	*out = h;
	return CALAIS__USB_OK;
}

static void lu_close(struct calais__usb_handle *h)
{
	libusb_close(h->h);
	calais__mutex_destroy(&h->lock);
	free(h);
}

static enum calais__usb_status lu_claim(struct calais__usb_handle *h, uint8_t iface)
{
	return logged(libusb_claim_interface(h->h, iface), "libusb_claim_interface");
}

static void lu_release(struct calais__usb_handle *h, uint8_t iface)
{
	libusb_release_interface(h->h, iface);
}

static enum calais__usb_status lu_string(struct calais__usb_handle *h, uint8_t index, char *buf,
                                         size_t cap)
{
	if (cap)
		buf[0] = 0;
	if (!index || cap < 2)
		return CALAIS__USB_OK;
	int n = libusb_get_string_descriptor_ascii(h->h, index, (unsigned char *)buf,
	                                           cap > 255 ? 255 : (int)cap);
	if (n < 0) {
		buf[0] = 0;
		return logged(n, "string descriptor");
	}
	buf[(size_t)n < cap ? (size_t)n : cap - 1] = 0;
	/* Trailing spaces (seen in real readers) would end up in the reader name. */
	while (n > 0 && buf[n - 1] == ' ')
		buf[--n] = 0;
	return CALAIS__USB_OK;
}

static void LIBUSB_CALL transfer_done(struct libusb_transfer *t)
{
	__atomic_store_n((int *)t->user_data, 1, __ATOMIC_RELEASE);
}

static enum calais__usb_status lu_transfer(struct calais__usb_handle *h, uint8_t ep,
                                           bool interrupt, uint8_t *buf, size_t len,
                                           size_t *done, uint32_t timeout_ms)
{
	*done = 0;
	if (len > INT32_MAX)
		return CALAIS__USB_IO;
	struct libusb_transfer *t = libusb_alloc_transfer(0);
	if (!t)
		return CALAIS__USB_NO_MEM;
	int completed = 0;
	if (interrupt)
		libusb_fill_interrupt_transfer(t, h->h, ep, buf, (int)len, transfer_done, &completed,
		                               timeout_ms);
	else
		libusb_fill_bulk_transfer(t, h->h, ep, buf, (int)len, transfer_done, &completed,
		                          timeout_ms);
	calais__mutex_lock(&h->lock);
	int slot = -1;
	bool cancelled = false;
	for (int i = 0; i < MAX_ACTIVE; i++) {
		if (h->cancel_ep[i] == ep) {
			h->cancel_ep[i] = 0;
			cancelled = true;
		}
		if (slot < 0 && !h->active[i])
			slot = i;
	}
	int e = cancelled ? LIBUSB_ERROR_INTERRUPTED : slot < 0 ? LIBUSB_ERROR_BUSY
	                                                        : libusb_submit_transfer(t);
	if (e == 0)
		h->active[slot] = t;
	calais__mutex_unlock(&h->lock);
	if (e < 0) {
		libusb_free_transfer(t);
		return logged(e, "submit");
	}
	while (!__atomic_load_n(&completed, __ATOMIC_ACQUIRE)) {
		if (libusb_handle_events_completed(h->uc->ctx, &completed) < 0) {
			libusb_cancel_transfer(t);
			while (!__atomic_load_n(&completed, __ATOMIC_ACQUIRE))
				libusb_handle_events_completed(h->uc->ctx, &completed);
		}
	}
	calais__mutex_lock(&h->lock);
	h->active[slot] = NULL;
	calais__mutex_unlock(&h->lock);
	enum calais__usb_status st;
	switch (t->status) {
	case LIBUSB_TRANSFER_COMPLETED: st = CALAIS__USB_OK; break;
	case LIBUSB_TRANSFER_TIMED_OUT: st = CALAIS__USB_TIMEOUT; break;
	case LIBUSB_TRANSFER_STALL: st = CALAIS__USB_STALL; break;
	case LIBUSB_TRANSFER_NO_DEVICE: st = CALAIS__USB_NO_DEVICE; break;
	case LIBUSB_TRANSFER_CANCELLED: st = CALAIS__USB_CANCELLED; break;
	case LIBUSB_TRANSFER_OVERFLOW: st = CALAIS__USB_OVERFLOW; break;
	default: st = CALAIS__USB_IO; break;
	}
	*done = (size_t)t->actual_length;
	libusb_free_transfer(t);
	return st;
}

static enum calais__usb_status lu_control(struct calais__usb_handle *h, uint8_t request_type,
                                          uint8_t request, uint16_t value, uint16_t index,
                                          uint8_t *buf, size_t len, size_t *done,
                                          uint32_t timeout_ms)
{
	*done = 0;
	if (len > 0xFFFF)
		return CALAIS__USB_IO;
	int n = libusb_control_transfer(h->h, request_type, request, value, index, buf,
	                                (uint16_t)len, timeout_ms);
	if (n < 0)
		return logged(n, "control transfer");
	*done = (size_t)n;
	return CALAIS__USB_OK;
}

static enum calais__usb_status lu_clear_halt(struct calais__usb_handle *h, uint8_t ep)
{
	return logged(libusb_clear_halt(h->h, ep), "clear halt");
}

static void lu_cancel(struct calais__usb_handle *h, uint8_t ep)
{
	calais__mutex_lock(&h->lock);
	bool found = false;
	for (int i = 0; i < MAX_ACTIVE; i++)
		if (h->active[i] && (ep == 0 || h->active[i]->endpoint == ep)) {
			libusb_cancel_transfer(h->active[i]);
			found = true;
		}
	if (!found && ep) {
		for (int i = 0; i < MAX_ACTIVE; i++)
			if (!h->cancel_ep[i] || h->cancel_ep[i] == ep) {
				h->cancel_ep[i] = ep;
				break;
			}
	}
	calais__mutex_unlock(&h->lock);
}

const struct calais__usb_ops calais__usb_libusb = {
	.name = "libusb",
	.init = lu_init,
	.exit = lu_exit,
	.list = lu_list,
	.ref = lu_ref,
	.unref = lu_unref,
	.info = lu_info,
	.open = lu_open,
	.close = lu_close,
	.claim = lu_claim,
	.release = lu_release,
	.string = lu_string,
	.transfer = lu_transfer,
	.control = lu_control,
	.clear_halt = lu_clear_halt,
	.cancel = lu_cancel,
};
