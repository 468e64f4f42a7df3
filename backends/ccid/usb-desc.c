/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Finds CCID and ICCD interfaces in a raw USB configuration descriptor: class 0x0B, and
 * vendor-class (0xFF) interfaces that carry a 54-byte CCID class descriptor, which some
 * readers put after their endpoints instead of after the interface. Every byte comes
 * from the device: lengths are checked before each read. */
#include "calais-internal.h"
#include "usb.h"

#define DT_CONFIG 0x02
#define DT_INTERFACE 0x04
#define DT_ENDPOINT 0x05
#define CCID_DESC_LEN 54

static void finish(struct calais__usb_ccid_if *c, bool *keep, uint8_t cls)
{
	if (!*keep)
		return;
	*keep = false;
	if (!c->class_desc) {
		if (cls == 0x0B)
			calais__warn("USB interface %u: CCID class without a class descriptor",
			             c->number);
		return;
	}
	if (c->kind == CALAIS__CCID_BULK && (!c->ep_bulk_in || !c->ep_bulk_out)) {
		calais__warn("USB interface %u: CCID without bulk endpoints", c->number);
		return;
	}
	*keep = true;
}

size_t calais__usb_find_ccid(const uint8_t *cfg, size_t len, struct calais__usb_ccid_if *out,
                             size_t max)
{
	if (!cfg || len < 9 || cfg[0] < 9 || cfg[1] != DT_CONFIG) {
		calais__warn("USB configuration descriptor malformed (%zu bytes)", len);
		return 0;
	}
	size_t total = (size_t)(cfg[2] | cfg[3] << 8);
	if (total < len)
		len = total; /* trailing bytes are not part of it */

	size_t n = 0;
	struct calais__usb_ccid_if cur;
	bool in_if = false, keep = false;
	uint8_t cur_class = 0;
	unsigned n_ep = 0;

	for (size_t off = cfg[0]; off + 2 <= len;) {
		uint8_t dlen = cfg[off], type = cfg[off + 1];
		if (dlen < 2 || off + dlen > len) {
			calais__warn("USB configuration descriptor: bad descriptor length %u at %zu",
			             dlen, off);
			break;
		}
		const uint8_t *d = cfg + off;
		off += dlen;

		if (type == DT_INTERFACE) {
			if (in_if) {
				finish(&cur, &keep, cur_class);
				if (keep && n < max)
					out[n++] = cur;
			}
			in_if = false;
			keep = false;
			if (dlen < 9)
				continue;
			/* Only the first alternate setting of each interface. */
			if (d[3] != 0)
				continue;
			uint8_t cls = d[5], sub = d[6], proto = d[7];
			if (cls != 0x0B && cls != 0xFF)
				continue;
			memset(&cur, 0, sizeof(cur));
			cur.number = d[2];
			cur.alt = d[3];
			cur.i_interface = d[8];
			cur.vendor_class = cls == 0xFF;
			cur_class = cls;
			n_ep = 0;
			if (cls == 0x0B && sub != 0) {
				calais__warn("USB interface %u: CCID subclass %u unknown", d[2], sub);
				continue;
			}
			if (cls == 0x0B && proto == 1)
				cur.kind = CALAIS__CCID_ICCD_A;
			else if (cls == 0x0B && proto == 2)
				cur.kind = CALAIS__CCID_ICCD_B;
			else if (cls == 0x0B && proto != 0) {
				calais__warn("USB interface %u: CCID protocol %u unknown", d[2], proto);
				continue;
			} else
				cur.kind = CALAIS__CCID_BULK;
			in_if = true;
			keep = true;
		} else if (!in_if) {
			continue;
		} else if (type == DT_ENDPOINT) {
			if (dlen < 7)
				continue;
			uint8_t addr = d[2], attr = d[3] & 3;
			uint16_t size = (uint16_t)((d[4] | d[5] << 8) & 0x7FF);
			n_ep++;
			if (attr == 2 && (addr & 0x80) && !cur.ep_bulk_in) {
				cur.ep_bulk_in = addr;
				cur.bulk_in_size = size;
			} else if (attr == 2 && !(addr & 0x80) && !cur.ep_bulk_out) {
				cur.ep_bulk_out = addr;
				cur.bulk_out_size = size;
			} else if (attr == 3 && (addr & 0x80) && !cur.ep_intr) {
				cur.ep_intr = addr;
			}
		} else if (dlen == CCID_DESC_LEN && (type == 0x21 || type == 0xFF) && !cur.class_desc) {
			cur.class_desc = d;
			cur.desc_on_endpoint = n_ep > 0;
		}
	}
	if (in_if) {
		finish(&cur, &keep, cur_class);
		if (keep && n < max)
			out[n++] = cur;
	}
	return n;
}

const char *calais__usb_status_name(enum calais__usb_status st)
{
	static const char *const names[] = {
		"ok", "timeout", "stall", "no device", "busy", "access denied",
		"cancelled", "overflow", "no memory", "I/O error",
	};
	return (unsigned)st < CALAIS__ARRAY_SIZE(names) ? names[st] : "?";
}
