/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The USB-transfer seam of the CCID backend: the few USB operations it needs, as a table
 * of functions. usb-libusb.c fills it with libusb-1.0; the tests fill it with a CCID
 * device simulator, so every fault can be injected below the message layer. Also the
 * configuration-descriptor parser that finds CCID/ICCD interfaces (usb-desc.c). */
#ifndef CALAIS_CCID_USB_H
#define CALAIS_CCID_USB_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "calais/pcsc/pcsclite.h"

/* What a USB operation ended with. The transport logs the native code; the backend maps
 * these to PC/SC codes (calais__usb_pcsc()). */
enum calais__usb_status {
	CALAIS__USB_OK = 0,
	CALAIS__USB_TIMEOUT,
	CALAIS__USB_STALL,     /* endpoint halted: clear_halt() recovers */
	CALAIS__USB_NO_DEVICE, /* unplugged */
	CALAIS__USB_BUSY,      /* interface claimed by another process or driver */
	CALAIS__USB_ACCESS,    /* no permission on the device node */
	CALAIS__USB_CANCELLED, /* cancel() stopped the transfer */
	CALAIS__USB_OVERFLOW,  /* the device sent more than the buffer holds */
	CALAIS__USB_NO_MEM,
	CALAIS__USB_IO,        /* anything else */
};

/* A device as found by list(): opaque, reference-counted by the transport. */
struct calais__usb_dev;
/* An opened device. */
struct calais__usb_handle;
struct calais__ccid_port;

struct calais__usb_dev_info {
	uint16_t vid, pid, bcd_device;
	uint8_t bus, address;
	uint8_t i_manufacturer, i_product, i_serial;
	/* The active configuration descriptor, raw (wTotalLength bytes); owned by the
	 * device, valid until its last unref(). */
	const uint8_t *config;
	size_t config_len;
};

/* Called by the transport, from any thread, when a device arrived or left (hotplug). */
typedef void (*calais__usb_changed_cb)(void *user);

/*
 * The transport. Every function is thread-safe; transfers on one handle may run on
 * several threads at once (bulk on one, interrupt on another).
 */
struct calais__usb_ops {
	const char *name;
	/* Starts the transport. Sets *hotplug when changed() will be called on arrivals and
	 * removals; otherwise the backend re-enumerates periodically. */
	enum calais__usb_status (*init)(void **ctx, calais__usb_changed_cb changed, void *user,
	                                bool *hotplug);
	/* Stops it; no changed() call runs or follows when it returns. */
	void (*exit)(void *ctx);
	/* The devices present now, each referenced once (unref() them). */
	enum calais__usb_status (*list)(void *ctx, struct calais__usb_dev ***devs, size_t *n);
	void (*ref)(struct calais__usb_dev *d);
	void (*unref)(struct calais__usb_dev *d);
	enum calais__usb_status (*info)(struct calais__usb_dev *d, struct calais__usb_dev_info *out);
	enum calais__usb_status (*open)(struct calais__usb_dev *d, struct calais__usb_handle **h);
	void (*close)(struct calais__usb_handle *h);
	enum calais__usb_status (*claim)(struct calais__usb_handle *h, uint8_t iface);
	void (*release)(struct calais__usb_handle *h, uint8_t iface);
	/* A string descriptor in UTF-8 (first language); "" when index is 0. */
	enum calais__usb_status (*string)(struct calais__usb_handle *h, uint8_t index, char *buf,
	                                  size_t cap);
	/* Bulk or interrupt transfer on ep (direction from bit 7); *done gets the bytes moved.
	 * timeout_ms 0: no timeout (cancel() ends it). An IN transfer ends at a short packet. */
	enum calais__usb_status (*transfer)(struct calais__usb_handle *h, uint8_t ep, bool interrupt,
	                                    uint8_t *buf, size_t len, size_t *done,
	                                    uint32_t timeout_ms);
	/* Control transfer; direction from bit 7 of request_type. */
	enum calais__usb_status (*control)(struct calais__usb_handle *h, uint8_t request_type,
	                                   uint8_t request, uint16_t value, uint16_t index,
	                                   uint8_t *buf, size_t len, size_t *done,
	                                   uint32_t timeout_ms);
	enum calais__usb_status (*clear_halt)(struct calais__usb_handle *h, uint8_t ep);
	/* Makes a transfer in progress on ep end with CALAIS__USB_CANCELLED soon (ep 0: all
	 * transfers on h). Never blocks; harmless when nothing runs. */
	void (*cancel)(struct calais__usb_handle *h, uint8_t ep);
};

/* libusb-1.0 (usb-libusb.c), when built. */
extern const struct calais__usb_ops calais__usb_libusb;
/* The transport the backend uses: tests point it at their simulator before start. */
extern const struct calais__usb_ops *calais__ccid_usb;

const char *calais__usb_status_name(enum calais__usb_status st);

/* ---- configuration descriptor parsing (usb-desc.c) --------------------------------- */

enum calais__ccid_kind {
	CALAIS__CCID_BULK,   /* CCID: bulk-OUT, bulk-IN, optional interrupt-IN */
	CALAIS__CCID_ICCD_A, /* ICCD version A: control pipe only */
	CALAIS__CCID_ICCD_B, /* ICCD version B: control pipe, optional interrupt-IN */
};

/* One CCID or ICCD interface found in a configuration descriptor. */
struct calais__usb_ccid_if {
	uint8_t number, alt, i_interface;
	enum calais__ccid_kind kind;
	uint8_t ep_bulk_in, ep_bulk_out, ep_intr; /* 0: absent */
	uint16_t bulk_in_size, bulk_out_size;
	const uint8_t *class_desc; /* the 54-byte class descriptor, inside the config bytes */
	bool desc_on_endpoint;     /* found after an endpoint (OZ776-style) */
	bool vendor_class;         /* interface class 0xFF carrying a CCID descriptor */
};

#define CALAIS__USB_MAX_CCID_IFS 8

/* Finds the CCID/ICCD interfaces of a raw configuration descriptor (untrusted bytes).
 * Returns how many were stored in out (at most max); malformed descriptors are logged
 * and their bad parts skipped. */
size_t calais__usb_find_ccid(const uint8_t *cfg, size_t len, struct calais__usb_ccid_if *out,
                             size_t max);

/* ---- ICCD (usb-iccd.c) --------------------------------------------------------------- */

/* The largest data block one ICCD control transfer carries (what libccid found devices
 * to accept). */
#define CALAIS__ICCD_MAX_DATA 0x1000

/* An ICCD device behind the CCID message interface: send() runs the control-pipe
 * requests that stand for one CCID message, recv() hands back the CCID reply built from
 * their answers, so the slot layer above is the same for CCID and ICCD. */
struct calais__iccd {
	const struct calais__usb_ops *ops;
	struct calais__usb_handle *h;
	uint8_t iface;
	bool version_b;
	const char *name;
	/* The message port it serves: its gone and cancel flags end the polls (slot 0). */
	struct calais__ccid_port *port;
	uint8_t reply[10 + CALAIS__ICCD_MAX_DATA + 2];
	size_t reply_len;
};

/* struct calais__ccid_port send/recv for an ICCD device (user: struct calais__iccd). */
LONG calais__iccd_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms);
LONG calais__iccd_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms);

#endif
