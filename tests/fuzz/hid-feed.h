/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the HID fuzz targets share: the input as a stream of 64-byte input reports, each
 * after a flags byte, handed out by a fake device at most HID_FEED_MAX_READS times per
 * input. */
#ifndef CALAIS_FUZZ_HID_FEED_H
#define CALAIS_FUZZ_HID_FEED_H

#include "hid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HID_FEED_MAX_READS 256

struct hid_feed {
	const uint8_t *p;
	size_t left;
	unsigned reads;
};

/* The next report into buf (CALAIS__HID_REPORT bytes) and its flags byte; -1 when the
 * input or the read budget is spent (the device is then gone). */
static inline int hid_feed_next(struct hid_feed *f, uint8_t *buf, size_t cap)
{
	if (f->reads >= HID_FEED_MAX_READS || f->left < 1 + CALAIS__HID_REPORT ||
	    cap < CALAIS__HID_REPORT)
		return -1;
	f->reads++;
	int flags = f->p[0];
	memcpy(buf, f->p + 1, CALAIS__HID_REPORT);
	f->p += 1 + CALAIS__HID_REPORT;
	f->left -= 1 + CALAIS__HID_REPORT;
	return flags;
}

#endif
