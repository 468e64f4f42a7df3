/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The virtual authenticator (vauth.c) as a real HID device of the Linux kernel, through
 * /dev/uhid: a USB FIDO key (usage page 0xF1D0, usage 1, 64-byte input and output reports,
 * no report ids) that hid-generic binds and hidraw exposes, for the QEMU guest test
 * (guest_fido.c), which drives it on a control pipe. Usage:
 *   vauth-uhid [caps-hex]
 * It creates the device, prints "ready", then takes one command a line on stdin and
 * answers each with one line on stdout ("ok ..." or "error ..."):
 *   keepalives N       keepalives before each CBOR answer (30 ms apart)
 *   fault none|forever keepalives every 50 ms and never an answer (VA_KEEPALIVE_FOREVER)
 *                      from the next command on, or no more of that (keepalives already
 *                      running go on until the host cancels)
 *   unplug | plug      destroy the uhid device | create it again (a fresh authenticator)
 *   stats              "ok inits=N msgs=N cbors=N cancels=N pings=N"
 *   quit               destroy the device and exit
 * U2F has real P-256 keys (vauth-u2f.c); its credentials outlive an unplug. End of stdin
 * is quit. Reports: UHID_OUTPUT into vauth_output(), vauth_next() as
 * UHID_INPUT2 when due; the loop polls with the next report's due time as its timeout. */
#include <errno.h>
#include <fcntl.h>
#include <linux/uhid.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vauth.h"

#define VID 0x1209u /* pid.codes' open-source vendor id */
#define PID 0xCA15u
#define CONTROL_MAX 128

/* FIDO's report descriptor (CTAP 2.1, "USB"): usage page 0xF1D0, usage 1 (CTAPHID), one
 * 64-byte input and one 64-byte output report, no report ids. */
static const uint8_t fido_rdesc[] = {
	0x06, 0xD0, 0xF1, /* Usage Page (FIDO Alliance) */
	0x09, 0x01,       /* Usage (CTAPHID) */
	0xA1, 0x01,       /* Collection (Application) */
	0x09, 0x20,       /*   Usage (Input Report Data) */
	0x15, 0x00,       /*   Logical Minimum (0) */
	0x26, 0xFF, 0x00, /*   Logical Maximum (255) */
	0x75, 0x08,       /*   Report Size (8) */
	0x95, 0x40,       /*   Report Count (64) */
	0x81, 0x02,       /*   Input (Data, Var, Abs) */
	0x09, 0x21,       /*   Usage (Output Report Data) */
	0x15, 0x00,       /*   Logical Minimum (0) */
	0x26, 0xFF, 0x00, /*   Logical Maximum (255) */
	0x75, 0x08,       /*   Report Size (8) */
	0x95, 0x40,       /*   Report Count (64) */
	0x91, 0x02,       /*   Output (Data, Var, Abs) */
	0xC0,             /* End Collection */
};

static struct vauth va;
static uint8_t caps;
static int ufd = -1;
static unsigned keepalives;
static enum vauth_fault fault = VA_NONE;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("# vauth-uhid: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	putchar('\n');
	fflush(stdout);
	va_end(ap);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One uhid event out; uhid takes an event whole or not at all. */
static int send_ev(const struct uhid_event *ev)
{
	ssize_t w;
	do
		w = write(ufd, ev, sizeof(*ev));
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)sizeof(*ev)) {
		note("write to /dev/uhid: %s", w < 0 ? strerror(errno) : "short write");
		return -1;
	}
	return 0;
}

/* A new device: a fresh authenticator (no channels yet) behind it, as on a real replug. */
static int plug(void)
{
	ufd = open("/dev/uhid", O_RDWR | O_CLOEXEC);
	if (ufd < 0) {
		note("/dev/uhid: %s", strerror(errno));
		return -1;
	}
	vauth_init(&va, caps);
	vauth_use_u2f(&va); /* the credentials outlive the device, as on a real key */
	va.keepalives = keepalives;
	va.fault = fault;
	struct uhid_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.type = UHID_CREATE2;
	snprintf((char *)ev.u.create2.name, sizeof(ev.u.create2.name), "Calais vauth");
	snprintf((char *)ev.u.create2.phys, sizeof(ev.u.create2.phys), "vauth-uhid");
	snprintf((char *)ev.u.create2.uniq, sizeof(ev.u.create2.uniq), "VAUTH0001");
	ev.u.create2.rd_size = sizeof(fido_rdesc);
	memcpy(ev.u.create2.rd_data, fido_rdesc, sizeof(fido_rdesc));
	ev.u.create2.bus = BUS_USB;
	ev.u.create2.vendor = VID;
	ev.u.create2.product = PID;
	ev.u.create2.version = 0x0100;
	if (send_ev(&ev) != 0) {
		close(ufd);
		ufd = -1;
		return -1;
	}
	return 0;
}

static void unplug(void)
{
	if (ufd < 0)
		return;
	struct uhid_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.type = UHID_DESTROY;
	send_ev(&ev);
	close(ufd); /* closing destroys it too; the event makes it explicit */
	ufd = -1;
}

/* The answer EIO to a GET_REPORT or SET_REPORT request (both replies start with the
 * request's id and an error code). */
static int refuse(uint32_t type, uint32_t id)
{
	struct uhid_event a;
	memset(&a, 0, sizeof(a));
	a.type = type;
	a.u.get_report_reply.id = id;
	a.u.get_report_reply.err = EIO;
	return send_ev(&a);
}

/* What the kernel sent: output reports go to the authenticator; report requests (none
 * in FIDO's descriptor) are refused. */
static int from_kernel(void)
{
	struct uhid_event ev;
	ssize_t r = read(ufd, &ev, sizeof(ev));
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (r < (ssize_t)sizeof(ev.type))
		return -1;
	switch (ev.type) {
	case UHID_OUTPUT: {
		/* hidraw hands the report number on (0: no report ids) as the first byte. */
		const uint8_t *d = ev.u.output.data;
		size_t n = ev.u.output.size;
		if (n == VAUTH_REPORT + 1 && d[0] == 0) {
			d++;
			n--;
		}
		if (n != VAUTH_REPORT) {
			note("output report of %zu bytes dropped", n);
			break;
		}
		vauth_output(&va, d, now_ms());
		break;
	}
	case UHID_GET_REPORT:
		return refuse(UHID_GET_REPORT_REPLY, ev.u.get_report.id);
	case UHID_SET_REPORT:
		return refuse(UHID_SET_REPORT_REPLY, ev.u.set_report.id);
	default: /* START, STOP, OPEN, CLOSE */
		break;
	}
	return 0;
}

/* The reports due now, as UHID_INPUT2; *wake gets when the next one is. */
static int to_kernel(uint64_t *wake)
{
	struct uhid_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.type = UHID_INPUT2;
	ev.u.input2.size = VAUTH_REPORT;
	while (vauth_next(&va, ev.u.input2.data, now_ms(), wake))
		if (send_ev(&ev) != 0)
			return -1;
	return 0;
}

/* One control line; returns 1 to quit. */
static int command(char *line)
{
	unsigned n;
	char word[16];
	if (sscanf(line, "keepalives %u", &n) == 1) {
		keepalives = va.keepalives = n;
		reply("ok keepalives %u", n);
	} else if (sscanf(line, "fault %15s", word) == 1 &&
	           (strcmp(word, "none") == 0 || strcmp(word, "forever") == 0)) {
		/* Keepalives already running go on until the host cancels or opens a channel. */
		fault = va.fault = word[0] == 'n' ? VA_NONE : VA_KEEPALIVE_FOREVER;
		reply("ok fault %s", word);
	} else if (strcmp(line, "unplug") == 0) {
		unplug();
		reply("ok unplugged");
	} else if (strcmp(line, "plug") == 0) {
		if (ufd >= 0)
			reply("error already plugged");
		else if (plug() != 0)
			reply("error cannot create the device");
		else
			reply("ok plugged");
	} else if (strcmp(line, "stats") == 0) {
		reply("ok inits=%u msgs=%u cbors=%u cancels=%u pings=%u", va.st.inits, va.st.msgs,
		      va.st.cbors, va.st.cancels, va.st.pings);
	} else if (strcmp(line, "quit") == 0) {
		return 1;
	} else {
		reply("error unknown command: %s", line);
	}
	return 0;
}

int main(int argc, char **argv)
{
	caps = argc > 1 ? (uint8_t)strtoul(argv[1], NULL, 16) : 0x05;
	if (plug() != 0) {
		reply("error cannot create the device");
		return 1;
	}
	reply("ready");
	char ctl[CONTROL_MAX];
	size_t ctl_len = 0;
	for (;;) {
		uint64_t wake = UINT64_MAX;
		if (ufd >= 0 && to_kernel(&wake) != 0)
			return 1;
		uint64_t now = now_ms();
		int timeout = wake == UINT64_MAX ? -1 : wake > now ? (int)(wake - now) : 0;
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = ufd, .events = POLLIN } };
		int rc = poll(p, ufd >= 0 ? 2 : 1, timeout);
		if (rc < 0 && errno != EINTR)
			return 1;
		if (rc <= 0)
			continue;
		if (ufd >= 0 && (p[1].revents & (POLLERR | POLLHUP))) {
			note("/dev/uhid closed on us");
			return 1;
		}
		if (ufd >= 0 && (p[1].revents & POLLIN) && from_kernel() != 0) {
			note("read from /dev/uhid: %s", strerror(errno));
			return 1;
		}
		if (p[0].revents & (POLLIN | POLLHUP)) {
			ssize_t r = read(0, ctl + ctl_len, sizeof(ctl) - 1 - ctl_len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			ctl_len += (size_t)r;
			ctl[ctl_len] = '\0';
			char *nl;
			while ((nl = strchr(ctl, '\n'))) {
				*nl = '\0';
				if (command(ctl))
					goto out;
				size_t used = (size_t)(nl + 1 - ctl);
				memmove(ctl, nl + 1, ctl_len - used + 1);
				ctl_len -= used;
			}
			if (ctl_len == sizeof(ctl) - 1) {
				reply("error command too long");
				ctl_len = 0;
			}
		}
	}
out:
	unplug();
	return 0;
}
