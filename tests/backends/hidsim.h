/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Simulated HID devices at the HID backend's seam (backends/hid/hid.h): FIDO
 * authenticators speaking CTAPHID (INIT, PING, WINK, MSG with a small U2F model, CBOR with
 * keepalives, CANCEL) and Ledger devices speaking its APDU framing, each with faults
 * injected into what it sends. Test-only; one simulated bus per process. */
#ifndef CALAIS_TEST_HIDSIM_H
#define CALAIS_TEST_HIDSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hidsim_cfg {
	const char *path;       /* unique per device */
	uint16_t vid, pid;
	uint16_t usage_page, usage; /* 0: FIDO's 0xF1D0 / 1 */
	int interface;
	const char *serial, *manufacturer, *product;
	uint8_t caps;           /* CTAPHID capabilities */
	bool ledger;            /* speaks the Ledger framing */
	bool deny_open;         /* open() fails: permission denied */
};

enum hidsim_fault {
	HS_NONE,
	HS_SILENT,          /* nothing is ever answered */
	HS_SILENT_COMMANDS, /* INIT is answered, nothing else */
	HS_WRONG_CHANNEL,   /* every answer goes to another channel */
	HS_OTHER_CHANNEL_FIRST, /* a stray message on another channel, then the answer */
	HS_WRONG_NONCE,     /* INIT answers echo another nonce */
	HS_OTHER_NONCE_FIRST, /* an INIT answer with another nonce, then the right one */
	HS_BAD_SEQ,         /* the answer's first continuation has sequence 1 */
	HS_OVERLONG,        /* the answer announces 7610 bytes */
	HS_KEEPALIVE_FOREVER, /* keepalives every 50 ms, never an answer */
	HS_ERROR,           /* the next command gets ERROR (fault_arg) */
	HS_BUSY,            /* the next fault_arg commands get ERROR 06 (channel busy) */
	HS_INVALID_CHANNEL, /* the next command gets ERROR 0B (the device forgot channels) */
	HS_UNPLUG_MID,      /* the answer's first packet, then the device is gone */
	HS_NEW_MSG_MID,     /* a new message start in place of the answer's continuation */
	HS_TRUNCATED,       /* the answer's first packet only */
	HS_STRAY_CONT,      /* a continuation packet before the answer */
	HS_LEDGER_BAD_TAG,  /* Ledger: the answer's tag is 0x06 */
	HS_LEDGER_BAD_SEQ,  /* Ledger: the answer's second report has sequence 2 */
};

/* What a device saw. */
struct hidsim_stats {
	unsigned inits, cancels, msgs, cbors, pings, winks, ledger_apdus;
	unsigned opens, closes;
	uint8_t last_msg[8192]; /* the last CTAPHID_MSG (or Ledger APDU) received */
	size_t last_msg_len;
};

typedef struct hidsim_dev hidsim_dev;

/* Points the backend at the simulator (before calais_start()). */
void hidsim_install(void);
/* Forgets every device (after calais_shutdown()). */
void hidsim_reset(void);

hidsim_dev *hidsim_add(const struct hidsim_cfg *cfg);
/* The device leaves: enumeration no longer lists it, I/O on it fails with NO_DEVICE. */
void hidsim_unplug(hidsim_dev *d);
void hidsim_allow_open(hidsim_dev *d);
void hidsim_fault(hidsim_dev *d, enum hidsim_fault f, unsigned arg);
/* CBOR commands: keepalives (status 2, every 30 ms) before the answer. */
void hidsim_cbor_keepalives(hidsim_dev *d, unsigned n);
void hidsim_stats(hidsim_dev *d, struct hidsim_stats *out);
/* Handles open now, over every device. */
unsigned hidsim_open_handles(void);

/* The answers the model gives. U2F: VERSION "U2F_V2"; REGISTER (INS 01) 1000 bytes
 * i & 0xFF; AUTHENTICATE (INS 02) its data back; every answer ends with 90 00. CBOR:
 * command 0x04 (getInfo) 00 A1 01 81 68 "FIDO_2_0"; anything else 00 then the request's
 * bytes (so long messages come back whole). Ledger: 90 00 after the APDU's data. */
#define HIDSIM_REGISTER_LEN 1000u

#endif
