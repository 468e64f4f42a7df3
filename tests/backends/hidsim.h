/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Simulated HID devices at the HID backend's seam (backends/hid/hid.h): FIDO
 * authenticators (the virtual authenticator of tests/hid/vauth.c: CTAPHID, a small U2F
 * model, CBOR with keepalives) and Ledger devices speaking its APDU framing, each with
 * faults injected into what it sends. Test-only; one simulated bus per process. */
#ifndef CALAIS_TEST_HIDSIM_H
#define CALAIS_TEST_HIDSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vauth.h"

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

/* The CTAPHID faults are the virtual authenticator's (tests/hid/vauth.h); two more for
 * the Ledger framing. */
enum hidsim_fault {
	HS_NONE = VA_NONE,
	HS_SILENT = VA_SILENT,
	HS_SILENT_COMMANDS = VA_SILENT_COMMANDS,
	HS_WRONG_CHANNEL = VA_WRONG_CHANNEL,
	HS_OTHER_CHANNEL_FIRST = VA_OTHER_CHANNEL_FIRST,
	HS_WRONG_NONCE = VA_WRONG_NONCE,
	HS_OTHER_NONCE_FIRST = VA_OTHER_NONCE_FIRST,
	HS_BAD_SEQ = VA_BAD_SEQ,
	HS_OVERLONG = VA_OVERLONG,
	HS_KEEPALIVE_FOREVER = VA_KEEPALIVE_FOREVER,
	HS_ERROR = VA_ERROR,
	HS_BUSY = VA_BUSY,
	HS_INVALID_CHANNEL = VA_INVALID_CHANNEL,
	HS_UNPLUG_MID = VA_UNPLUG_MID,
	HS_NEW_MSG_MID = VA_NEW_MSG_MID,
	HS_TRUNCATED = VA_TRUNCATED,
	HS_STRAY_CONT = VA_STRAY_CONT,
	HS_LEDGER_BAD_TAG = VA_FAULTS, /* Ledger: the answer's tag is 0x06 */
	HS_LEDGER_BAD_SEQ,  /* Ledger: the answer's second report has sequence 2 */
};


/* What a device saw: its authenticator's counts, or the Ledger model's. */
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
/* U2F requests answered by fn (vauth.h's vauth_u2f_fn) instead of the model below. */
void hidsim_u2f(hidsim_dev *d, vauth_u2f_fn fn, void *ctx);
/* CBOR commands: keepalives (status 2, every 30 ms) before the answer. */
void hidsim_cbor_keepalives(hidsim_dev *d, unsigned n);
void hidsim_stats(hidsim_dev *d, struct hidsim_stats *out);
/* Handles open now, over every device. */
unsigned hidsim_open_handles(void);

/* The answers the models give. U2F: VERSION "U2F_V2"; REGISTER (INS 01) 1000 bytes
 * i & 0xFF; AUTHENTICATE (INS 02) its data back; every answer ends with 90 00. CBOR:
 * command 0x04 (getInfo) vauth_get_info; anything else 00 then the request's bytes (so
 * long messages come back whole). Ledger: the APDU's data after its header, then 90 00. */
#define HIDSIM_REGISTER_LEN VAUTH_REGISTER_LEN

#endif
