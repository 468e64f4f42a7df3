/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID seam on hidapi (0.13: hidraw on Linux, IOHIDManager on macOS, the HID class
 * driver on Windows): enumeration, open, one report out, one report in with a timeout.
 * hidapi has no hotplug in 0.13; the backend re-enumerates. */
#include "hid.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

#include <hidapi.h>
#if defined(__APPLE__)
#include <hidapi_darwin.h>
#endif

/* hidapi's strings are wchar_t (UTF-32 on Linux and macOS, UTF-16 on Windows): to UTF-8,
 * with anything broken as '?'. */
static char *utf8(const wchar_t *w)
{
	size_t n = w ? wcslen(w) : 0;
	char *s = malloc(4 * n + 1);
	if (!s)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t c = (uint32_t)w[i];
		if (sizeof(wchar_t) == 2 && c >= 0xD800 && c < 0xDC00 && i + 1 < n &&
		    (uint32_t)w[i + 1] >= 0xDC00 && (uint32_t)w[i + 1] < 0xE000) {
			c = 0x10000 + ((c - 0xD800) << 10) + ((uint32_t)w[i + 1] - 0xDC00);
			i++;
		}
		if (c >= 0xD800 && c < 0xE000)
			c = '?';
		if (c < 0x80) {
			s[o++] = (char)c;
		} else if (c < 0x800) {
			s[o++] = (char)(0xC0 | c >> 6);
			s[o++] = (char)(0x80 | (c & 0x3F));
		} else if (c < 0x10000) {
			s[o++] = (char)(0xE0 | c >> 12);
			s[o++] = (char)(0x80 | (c >> 6 & 0x3F));
			s[o++] = (char)(0x80 | (c & 0x3F));
		} else if (c < 0x110000) {
			s[o++] = (char)(0xF0 | c >> 18);
			s[o++] = (char)(0x80 | (c >> 12 & 0x3F));
			s[o++] = (char)(0x80 | (c >> 6 & 0x3F));
			s[o++] = (char)(0x80 | (c & 0x3F));
		} else {
			s[o++] = '?';
		}
	}
	s[o] = '\0';
	return s;
}

static char *dup(const char *p)
{
	size_t n = strlen(p) + 1;
	char *s = malloc(n);
	if (s)
		memcpy(s, p, n);
	return s;
}

static enum calais__hid_status h_init(void)
{
	if (hid_init() != 0)
		return CALAIS__HID_IO;
#if defined(__APPLE__)
	/* hidapi opens devices exclusively on macOS by default: the browsers and other
	 * FIDO clients must still reach a key Calais has open. */
	hid_darwin_set_open_exclusive(0);
#endif
	return CALAIS__HID_OK;
}

static void h_exit(void)
{
	hid_exit();
}

static enum calais__hid_status h_enumerate(struct calais__hid_info **out, size_t *n_out)
{
	*out = NULL;
	*n_out = 0;
	struct hid_device_info *all = hid_enumerate(0, 0);
	size_t n = 0;
	for (struct hid_device_info *d = all; d; d = d->next)
		n++;
	if (!n) {
		hid_free_enumeration(all);
		return CALAIS__HID_OK;
	}
	struct calais__hid_info *list = calloc(n, sizeof(*list));
	if (!list) {
		hid_free_enumeration(all);
		return CALAIS__HID_NO_MEM;
	}
	size_t i = 0;
	bool oom = false;
	for (struct hid_device_info *d = all; d; d = d->next, i++) {
		struct calais__hid_info *x = &list[i];
		x->path = dup(d->path ? d->path : "");
		x->vid = d->vendor_id;
		x->pid = d->product_id;
		x->release = d->release_number;
		x->usage_page = d->usage_page;
		x->usage = d->usage;
		x->interface = d->interface_number;
		x->serial = utf8(d->serial_number);
		x->manufacturer = utf8(d->manufacturer_string);
		x->product = utf8(d->product_string);
		oom |= !x->path || !x->serial || !x->manufacturer || !x->product;
	}
	hid_free_enumeration(all);
	if (oom) {
		calais__hid_free_list(list, n);
		return CALAIS__HID_NO_MEM;
	}
	*out = list;
	*n_out = n;
	return CALAIS__HID_OK;
}

static enum calais__hid_status from_errno(int e)
{
	switch (e) {
	case EACCES:
	case EPERM:
		return CALAIS__HID_ACCESS;
	case ENOENT:
	case ENODEV:
	case ENXIO:
	case EPIPE:
	case ESHUTDOWN:
		return CALAIS__HID_NO_DEVICE;
	case ENOMEM:
		return CALAIS__HID_NO_MEM;
	default:
		return CALAIS__HID_IO;
	}
}

static enum calais__hid_status h_open(const char *path, struct calais__hid_dev **h)
{
	errno = 0;
	hid_device *d = hid_open_path(path);
	if (!d) {
		int e = errno;
		const wchar_t *why = hid_error(NULL);
		char *w = utf8(why);
		hid_dbg("%s: hid_open_path: %s (errno %d)", path, w ? w : "?", e);
		free(w);
		return from_errno(e);
	}
	*h = (struct calais__hid_dev *)d;
	return CALAIS__HID_OK;
}

static void h_close(struct calais__hid_dev *h)
{
	hid_close((hid_device *)h);
}

static void log_error(struct calais__hid_dev *h, const char *what, int e)
{
	char *w = utf8(hid_error((hid_device *)h));
	hid_dbg("%s: %s (errno %d)", what, w ? w : "?", e);
	free(w);
}

static enum calais__hid_status h_write(struct calais__hid_dev *h, const uint8_t *buf, size_t len)
{
	uint8_t report[1 + CALAIS__HID_REPORT];
	if (len > CALAIS__HID_REPORT)
		return CALAIS__HID_IO;
	report[0] = 0; /* no report ids: hidapi wants a 0 first */
	memcpy(report + 1, buf, len);
	errno = 0;
	int rc = hid_write((hid_device *)h, report, len + 1);
	if (rc < 0) {
		int e = errno;
		log_error(h, "hid_write", e);
		/* hidraw: ENODEV once the device is gone; elsewhere hidapi says nothing
		 * better than "failed", and the next enumeration tells. */
		return e ? from_errno(e) : CALAIS__HID_IO;
	}
	return (size_t)rc >= len ? CALAIS__HID_OK : CALAIS__HID_IO;
}

static enum calais__hid_status h_read(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
                                      size_t *n, uint32_t timeout_ms)
{
	*n = 0;
	errno = 0;
	int rc = hid_read_timeout((hid_device *)h, buf, cap,
	                          timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms);
	if (rc < 0) {
		int e = errno;
		log_error(h, "hid_read_timeout", e);
		/* hidraw returns -1 on POLLHUP/POLLERR, which is the unplug. */
		return e && from_errno(e) != CALAIS__HID_NO_DEVICE ? from_errno(e)
		                                                    : CALAIS__HID_NO_DEVICE;
	}
	if (rc == 0)
		return CALAIS__HID_TIMEOUT;
	*n = (size_t)rc;
	return CALAIS__HID_OK;
}

const struct calais__hid_ops calais__hid_hidapi = {
	.name = "hidapi",
	.init = h_init,
	.exit = h_exit,
	.enumerate = h_enumerate,
	.open = h_open,
	.close = h_close,
	.write = h_write,
	.read = h_read,
};
