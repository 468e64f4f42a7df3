/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HID backend's internals: the seam it reaches HID devices through (hid-hidapi.c fills
 * it with hidapi; the tests with a simulated authenticator), the CTAPHID transport
 * (hid-ctap.c), the FIDO card a FIDO reader holds (hid-fido.c, the CTAP NFC binding on
 * top of CTAPHID) and the Ledger APDU framing (hid-ledger.c). */
#ifndef CALAIS_HID_H
#define CALAIS_HID_H

#include "calais-internal.h"

#define hid_log(level, ...) CALAIS__LOG((level), "hid", __VA_ARGS__)
#define hid_err(...) hid_log(CALAIS_LOG_ERROR, __VA_ARGS__)
#define hid_warn(...) hid_log(CALAIS_LOG_WARNING, __VA_ARGS__)
#define hid_info(...) hid_log(CALAIS_LOG_INFO, __VA_ARGS__)
#define hid_dbg(...) hid_log(CALAIS_LOG_DEBUG, __VA_ARGS__)

/* ---- the seam ------------------------------------------------------------------------ */

/* What a HID operation ended with; the layers above map it to a PC/SC code. */
enum calais__hid_status {
	CALAIS__HID_OK = 0,
	CALAIS__HID_TIMEOUT,   /* no report within the time given */
	CALAIS__HID_NO_DEVICE, /* unplugged */
	CALAIS__HID_ACCESS,    /* no permission on the device node */
	CALAIS__HID_NO_MEM,
	CALAIS__HID_IO,        /* anything else */
};

/* One HID interface (a top-level collection) as enumerated. Strings are UTF-8, never
 * NULL ("" when the device has none), and untrusted. */
struct calais__hid_info {
	char *path;
	uint16_t vid, pid, release;
	uint16_t usage_page, usage;
	int interface; /* USB interface number; -1 when unknown */
	char *serial, *manufacturer, *product;
};

struct calais__hid_dev; /* an opened device */

/* The transport. Thread-safe: enumerate and open run on the backend's monitor thread,
 * write and read on the thread of the reader that owns the handle. */
struct calais__hid_ops {
	const char *name;
	enum calais__hid_status (*init)(void);
	void (*exit)(void);
	/* Every HID interface present now: *list is an array of *n, freed with
	 * calais__hid_free_list(). No device I/O (hidapi reads sysfs / the registry). */
	enum calais__hid_status (*enumerate)(struct calais__hid_info **list, size_t *n);
	enum calais__hid_status (*open)(const char *path, struct calais__hid_dev **h);
	void (*close)(struct calais__hid_dev *h);
	/* One output report of len bytes, without the report id (the transport adds 0). */
	enum calais__hid_status (*write)(struct calais__hid_dev *h, const uint8_t *buf, size_t len);
	/* One input report into buf (at most cap bytes, *n set), waiting at most timeout_ms
	 * (0: only what is queued). CALAIS__HID_TIMEOUT when none came. */
	enum calais__hid_status (*read)(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
	                                size_t *n, uint32_t timeout_ms);
};

void calais__hid_free_list(struct calais__hid_info *list, size_t n);
const char *calais__hid_status_name(enum calais__hid_status st);

/* hidapi (hid-hidapi.c). */
extern const struct calais__hid_ops calais__hid_hidapi;
/* The transport the backend uses when set (tests point it at their simulator). */
extern const struct calais__hid_ops *calais__hid_transport;

/* The size of every report FIDO and Ledger devices exchange. */
#define CALAIS__HID_REPORT 64u
/* The longest a read waits before looking at the cancel flag again. */
#define CALAIS__HID_SLICE_MS 20u

/* Reads one report of the device in slices, ending early on *cancel: OK, TIMEOUT at
 * deadline_ms (calais__now_ms() clock), NO_DEVICE, IO; *cancelled says a cancel ended
 * it. The report is zero-padded to CALAIS__HID_REPORT bytes. */
enum calais__hid_status calais__hid_read_until(const struct calais__hid_ops *ops,
                                               struct calais__hid_dev *h, uint8_t *report,
                                               uint64_t deadline_ms, atomic_bool *cancel,
                                               bool *cancelled);

/* ---- CTAPHID (hid-ctap.c) --------------------------------------------------------------- */

#define CALAIS__CTAPHID_MAX_MSG 7609u /* 57 + 128 * 59 */
#define CALAIS__CTAPHID_BROADCAST 0xFFFFFFFFu

#define CALAIS__CTAPHID_PING 0x81u
#define CALAIS__CTAPHID_MSG 0x83u
#define CALAIS__CTAPHID_LOCK 0x84u
#define CALAIS__CTAPHID_INIT 0x86u
#define CALAIS__CTAPHID_WINK 0x88u
#define CALAIS__CTAPHID_CBOR 0x90u
#define CALAIS__CTAPHID_CANCEL 0x91u
#define CALAIS__CTAPHID_KEEPALIVE 0xBBu
#define CALAIS__CTAPHID_ERROR 0xBFu

#define CALAIS__CTAPHID_CAP_WINK 0x01u
#define CALAIS__CTAPHID_CAP_CBOR 0x04u
#define CALAIS__CTAPHID_CAP_NMSG 0x08u

/* The longest wait for the next packet of a message once its first one came. */
#define CALAIS__CTAPHID_PACKET_MS 500u
/* The longest wait for an answer's first packet (or the next keepalive): devices send a
 * keepalive every 100 ms while they work. */
#define CALAIS__CTAPHID_ANSWER_MS 3000u
/* How often, and for how long at most, a busy channel is tried again. */
#define CALAIS__CTAPHID_BUSY_RETRY_MS 100u
#define CALAIS__CTAPHID_BUSY_MS 3000u

/* One CTAPHID channel on an opened device. Used by one thread at a time (the reader's
 * I/O lock), except cancel, which any thread may set. */
struct calais__ctaphid {
	const struct calais__hid_ops *ops;
	struct calais__hid_dev *h;
	const char *name;     /* for logs */
	atomic_bool *cancel;  /* the reader's cancel flag */
	uint32_t cid;         /* 0: no channel (allocate one before the next command) */
	uint8_t version, major, minor, build, caps;
	/* Fills n bytes with a fresh nonce; NULL: a per-process generator (hid-ctap.c). */
	void (*nonce)(uint8_t *out, size_t n);
	/* Waits ms before a busy channel is tried again; NULL: a sleep that ends early on
	 * *cancel (the fuzz target passes one that returns at once). */
	void (*pause)(const struct calais__ctaphid *c, uint32_t ms);
	uint8_t msg[CALAIS__CTAPHID_MAX_MSG]; /* the last message received */
	size_t msg_len;
};

/* Allocates a channel: CTAPHID_INIT on the broadcast channel with a fresh 8-byte nonce,
 * whose echo is required. SCARD_W_UNRESPONSIVE_CARD when no answer comes. */
LONG calais__ctaphid_open(struct calais__ctaphid *c, uint64_t deadline_ms);

/* What calais__ctaphid_call() does with keepalives. */
enum calais__ctaphid_ka {
	CALAIS__CTAPHID_KA_WAIT,   /* wait through them (until the deadline) */
	CALAIS__CTAPHID_KA_RETURN, /* return at the first one: *ka_status set, SCARD_S_SUCCESS
	                            * with resp_cmd KEEPALIVE; resume with ..._resume() */
};

/* One command and its answer on the channel (allocating one first when there is none).
 * On success c->msg holds the answer's c->msg_len bytes and *resp_cmd its command (the
 * command sent, or KEEPALIVE with KA_RETURN). Device ERROR replies are mapped to PC/SC
 * codes; a busy channel is retried; a lost channel is reallocated once. */
LONG calais__ctaphid_call(struct calais__ctaphid *c, uint8_t cmd, const uint8_t *data,
                          size_t len, enum calais__ctaphid_ka ka, uint8_t *resp_cmd,
                          uint8_t *ka_status, uint64_t deadline_ms);
/* Goes on waiting for the answer of a call that returned at a keepalive. */
LONG calais__ctaphid_resume(struct calais__ctaphid *c, uint8_t cmd, enum calais__ctaphid_ka ka,
                            uint8_t *resp_cmd, uint8_t *ka_status, uint64_t deadline_ms);
/* Tells the device to stop the command in progress (CTAPHID_CANCEL) and forgets the
 * channel, so a late answer is never taken for the next one. */
void calais__ctaphid_abandon(struct calais__ctaphid *c);

/* ---- the FIDO card (hid-fido.c) ------------------------------------------------------------ */

/* The ATR a FIDO reader's card has (PC/SC part 3 contactless form). */
extern const uint8_t calais__fido_atr[];
extern const size_t calais__fido_atr_len;

/* What the card remembers between APDUs. */
struct calais__fido_card {
	struct calais__ctaphid *c;
	bool selected;
	/* A command being chained (CLA bit 0x10): its header and the data so far. */
	bool chaining;
	uint8_t chain_hdr[4];
	uint8_t chain[CALAIS__CTAPHID_MAX_MSG];
	size_t chain_len;
	/* An answer handed out in pieces (61xx, GET RESPONSE). */
	uint8_t out[CALAIS__CTAPHID_MAX_MSG + 2];
	size_t out_len, out_off;
	/* An NFCCTAP_MSG whose answer is still coming (91 00 given). */
	bool cbor_pending;
};

/* Powers the card up: a new channel, the application deselected. */
LONG calais__fido_reset(struct calais__fido_card *k, uint64_t deadline_ms);
/* One APDU (the NFC binding). */
LONG calais__fido_transmit(struct calais__fido_card *k, const uint8_t *tx, size_t tx_len,
                           uint8_t *rx, size_t *rx_len, uint64_t deadline_ms);

/* ---- Ledger (hid-ledger.c) ----------------------------------------------------------------- */

extern const uint8_t calais__ledger_atr[];
extern const size_t calais__ledger_atr_len;

#define CALAIS__LEDGER_CHANNEL 0x0101u
#define CALAIS__LEDGER_TAG 0x05u
#define CALAIS__LEDGER_MAX 0xFFFFu /* the length field's limit */

/* One APDU through the Ledger framing; the answer (data + SW1 SW2) in rx. */
LONG calais__ledger_transmit(const struct calais__hid_ops *ops, struct calais__hid_dev *h,
                             const char *name, atomic_bool *cancel, const uint8_t *tx,
                             size_t tx_len, uint8_t *rx, size_t *rx_len, uint64_t deadline_ms);

#endif
