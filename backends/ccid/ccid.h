/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The CCID backend's internal interface: the class descriptor (CCID 1.1 section 5.1)
 * and the exchange strategy chosen from it. Pure code, shared by the USB and serial
 * transports. */
#ifndef CALAIS_CCID_H
#define CALAIS_CCID_H

#include "calais-internal.h"

#include <stdatomic.h>

#define calais__ccid_log(level, ...)                                                 \
	do {                                                                         \
		if (CALAIS__LOG_ON(level))                                    \
			calais__log((level), "ccid", __VA_ARGS__);                   \
	} while (0)
#define ccid_err(...) calais__ccid_log(CALAIS_LOG_ERROR, __VA_ARGS__)
#define ccid_warn(...) calais__ccid_log(CALAIS_LOG_WARNING, __VA_ARGS__)
#define ccid_info(...) calais__ccid_log(CALAIS_LOG_INFO, __VA_ARGS__)
#define ccid_dbg(...) calais__ccid_log(CALAIS_LOG_DEBUG, __VA_ARGS__)

/* dwFeatures bits (CCID 1.1 table 5.1-1). */
#define CALAIS__CCID_AUTO_PARAM_ATR 0x00000002u
#define CALAIS__CCID_AUTO_PPS_ACTIVE 0x00000040u
#define CALAIS__CCID_AUTO_PPS_CURRENT 0x00000080u
#define CALAIS__CCID_AUTO_IFSD 0x00000400u
#define CALAIS__CCID_ICCD_TOKEN 0x00000800u
#define CALAIS__CCID_LEVEL_MASK 0x00070000u
#define CALAIS__CCID_LEVEL_TPDU 0x00010000u
#define CALAIS__CCID_LEVEL_SHORT 0x00020000u
#define CALAIS__CCID_LEVEL_EXTENDED 0x00040000u

struct calais__ccid_desc {
	uint16_t bcd_ccid;
	uint8_t max_slot_index, voltage_support;
	uint32_t protocols, default_clock_khz, max_clock_khz;
	uint8_t num_clocks;
	uint32_t data_rate, max_data_rate;
	uint8_t num_rates;
	uint32_t max_ifsd, synch_protocols, mechanical, features, max_message_length;
	uint8_t class_get_response, class_envelope;
	uint16_t lcd_layout;
	uint8_t pin_support, max_busy_slots;
};

enum calais__ccid_level {
	CALAIS__CCID_CHARACTER,
	CALAIS__CCID_TPDU,
	CALAIS__CCID_SHORT_APDU,
	CALAIS__CCID_EXTENDED_APDU,
};

/* What the backend does with a reader, decided once from its descriptor. */
struct calais__ccid_strategy {
	enum calais__ccid_level level;
	unsigned slots;        /* bMaxSlotIndex + 1 */
	bool host_pps;         /* the host negotiates PPS (the reader does not) */
	bool set_parameters;   /* the host sends SetParameters after the ATR/PPS */
	bool ifsd_request;     /* the host sends S(IFS request) before the first T=1 APDU */
	bool pin_verify, pin_modify;
	uint32_t max_apdu;     /* the largest command the reader takes (SCARD_ATTR_MAXINPUT) */
};

/* ---- the message layer (ccid-msg.c): one implementation for USB and serial ---------- */

/* PC_to_RDR message types (CCID 1.1 section 6.1). */
enum {
	CALAIS__PC_SET_PARAMETERS = 0x61,
	CALAIS__PC_ICC_POWER_ON = 0x62,
	CALAIS__PC_ICC_POWER_OFF = 0x63,
	CALAIS__PC_GET_SLOT_STATUS = 0x65,
	CALAIS__PC_SECURE = 0x69,
	CALAIS__PC_T0APDU = 0x6A,
	CALAIS__PC_ESCAPE = 0x6B,
	CALAIS__PC_GET_PARAMETERS = 0x6C,
	CALAIS__PC_RESET_PARAMETERS = 0x6D,
	CALAIS__PC_ICC_CLOCK = 0x6E,
	CALAIS__PC_XFR_BLOCK = 0x6F,
	CALAIS__PC_MECHANICAL = 0x71,
	CALAIS__PC_ABORT = 0x72,
	CALAIS__PC_SET_RATE_CLOCK = 0x73,
};
/* RDR_to_PC message types (section 6.2) and interrupt messages (6.3). */
enum {
	CALAIS__RDR_DATA_BLOCK = 0x80,
	CALAIS__RDR_SLOT_STATUS = 0x81,
	CALAIS__RDR_PARAMETERS = 0x82,
	CALAIS__RDR_ESCAPE = 0x83,
	CALAIS__RDR_RATE_CLOCK = 0x84,
	CALAIS__RDR_NOTIFY_SLOT_CHANGE = 0x50,
	CALAIS__RDR_HARDWARE_ERROR = 0x51,
};

#define CALAIS__CCID_HEADER 10
/* The largest message the layer handles: an extended APDU's worth plus headers. */
#define CALAIS__CCID_MSG_MAX (CALAIS__CCID_HEADER + 65536 + 8)
/* Replies with a stale bSeq discarded before giving up. */
#define CALAIS__CCID_MAX_STALE 10
/* Time extensions (bStatus 0x80) within one command, counted (ccid-msg.c): more than
 * CALAIS__CCID_MAX_TIME_EXT_QUICK in a row that each came within
 * CALAIS__CCID_TIME_EXT_QUICK_MS of our read (the reader asks again at once, no card is
 * that busy), or more than CALAIS__CCID_MAX_TIME_EXT in all (over 16 min at one every
 * 100 ms, a PIN pad's pace), is a storm: the command is aborted, SCARD_F_COMM_ERROR and
 * a warning. Each extension's wait is bWTX times the command's timeout, at most 600 s,
 * and every wait is cut to the command's deadline: the exchange's (transmit: the
 * core's exchange limit), else twice the command's timeout. */
#define CALAIS__CCID_MAX_TIME_EXT_QUICK 50
#define CALAIS__CCID_TIME_EXT_QUICK_MS 10
#define CALAIS__CCID_MAX_TIME_EXT 10000
/* The abort procedure's whole budget (class request, PC_to_RDR_Abort, its replies): a
 * cancelled command ends within it even when the reader does not cooperate. */
#define CALAIS__CCID_ABORT_MS 600
#define CALAIS__CCID_SLOTS 256 /* bSlot values */

struct calais__ccid_wait;

/*
 * A CCID device as the message layer sees it: a message pipe (USB bulk pipes, or a
 * framed serial line) and its state.
 *
 * Slots and concurrency. Up to max_busy slots (bMaxCCIDBusySlots, 1 for nearly every
 * reader and for ICCD and serial readers) may have a command in flight at once, one
 * each; a slot's exchange is entered with calais__ccid_enter() and left with
 * calais__ccid_leave(), so an exchange on one slot never delays another slot beyond what
 * the device allows. With max_busy 1 the slot layer also holds `lock` over the exchange
 * (the serial transports hold it around their own line work). The replies of every slot
 * share one pipe: one waiting command at a time reads it and files a reply for another
 * in that one's wait (ccid-msg.c). Nothing here is held over I/O but `lock` (an exclusive
 * exchange) and `txl` (one message being sent); `mx` is the innermost lock.
 */
struct calais__ccid_port {
	void *user;
	/* Sends one whole message. */
	LONG (*send)(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms);
	/* Receives one whole message into buf (cap bytes); SCARD_E_TIMEOUT after
	 * timeout_ms; SCARD_F_COMM_ERROR for a message longer than cap. */
	LONG (*recv)(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms);
	/* Optional: the transport half of the abort procedure (USB class request ABORT). */
	LONG (*abort)(void *user, uint8_t slot, uint8_t seq);
	/* Optional: brings the pipe back after an error (USB clear halt). */
	void (*recover)(void *user);
	const char *name;  /* for logs */
	uint32_t max_msg;  /* dwMaxCCIDMessageLength, clamped to CALAIS__CCID_MSG_MAX */

	unsigned max_busy; /* bMaxCCIDBusySlots (1 unless set before the first command) */

	calais__mutex_t lock; /* an exclusive device's exchange (max_busy 1) */
	atomic_bool gone;   /* the device went away: every command fails at once */
	atomic_bool cancel; /* every slot's command is aborted (serial transports' cancel) */
	/* One slot's cancel(): its command in flight is aborted; cleared by the slot layer
	 * at the start of each of its calls. */
	atomic_bool cancel_slot[CALAIS__CCID_SLOTS];
	/* The slot whose thread reads the reply pipe now (-1: none): cancel() of that slot
	 * also stops the transfer; others are woken through `cond`. */
	atomic_int reader_slot;

	calais__mutex_t txl; /* tx, seq and the sending of one message */
	uint8_t seq;         /* shared by every slot of the device */
	uint8_t *tx;         /* max_msg bytes */

	calais__mutex_t mx;  /* the fields below; never held over I/O */
	calais__cond_t cond; /* a reply filed, the pipe free, a slot free, a cancel */
	unsigned busy;       /* slots inside calais__ccid_enter() .. leave() */
	bool reading;        /* a waiting command reads the reply pipe */
	struct calais__ccid_wait *waits; /* commands whose reply is due */
	uint8_t *rx[CALAIS__CCID_SLOTS]; /* each slot's reply buffer, max_msg bytes */
};

/* A reply, its payload inside the slot's reply buffer (valid until the slot's next
 * command). */
struct calais__ccid_reply {
	uint8_t type, slot, seq, status, error, param;
	const uint8_t *data;
	size_t len;
	bool storm; /* the command ended in a time-extension storm (SCARD_F_COMM_ERROR) */
};

LONG calais__ccid_port_init(struct calais__ccid_port *p, uint32_t max_msg);
void calais__ccid_port_free(struct calais__ccid_port *p);
/* A slot's exchange begins: waits (interruptibly: cancel of the slot or the port, the
 * device gone) until fewer than max_busy slots are busy; wait false: SCARD_E_NOT_READY
 * at once when the device is busy. Every call below between enter and leave. */
LONG calais__ccid_enter(struct calais__ccid_port *p, uint8_t slot, bool wait);
void calais__ccid_leave(struct calais__ccid_port *p);
/* Wakes the slot's waits after cancel_slot[] or gone was set (never blocks long). */
void calais__ccid_wake(struct calais__ccid_port *p);
/* One command and its reply, inside enter/leave (or with port->lock held on a serial
 * port). hdr: the three message-specific bytes. Honours time extensions (counted, see
 * above), discards stale replies, runs the abort procedure on timeout or cancel; every
 * wait is cut to deadline_ms (calais__now_ms() clock; 0: twice timeout_ms from now),
 * past which it ends with SCARD_E_TIMEOUT. A failed command returns its bError mapped
 * to a PC/SC code, with *rep filled so the caller may treat some (SetParameters,
 * Secure) its own way. */
LONG calais__ccid_command_until(struct calais__ccid_port *p, uint8_t type, uint8_t slot,
                                const uint8_t hdr[3], const uint8_t *data, size_t n,
                                struct calais__ccid_reply *rep, uint32_t timeout_ms,
                                uint64_t deadline_ms);
LONG calais__ccid_command(struct calais__ccid_port *p, uint8_t type, uint8_t slot,
                          const uint8_t hdr[3], const uint8_t *data, size_t n,
                          struct calais__ccid_reply *rep, uint32_t timeout_ms);
/* Checks a received message (untrusted bytes) against the command it answers. */
LONG calais__ccid_parse_reply(const uint8_t *b, size_t n, struct calais__ccid_reply *rep);
/* The PC/SC code for a failed command's bError. */
LONG calais__ccid_error(uint8_t status, uint8_t error);
/* An interrupt-IN message (untrusted). NotifySlotChange: bits[i] gets slot i's two bits
 * (bit 0 card present, bit 1 changed) for each slot the message covers, at most n_slots;
 * returns how many. A hardware error or any other message is logged and returns 0. */
size_t calais__ccid_intr_parse(const char *name, const uint8_t *b, size_t n, size_t n_slots,
                               uint8_t *bits);
const char *calais__ccid_error_name(uint8_t error);

/* ---- a slot (ccid-slot.c): power, presence, protocol, exchanges, part 10 ----------- */

/* Part 10 control codes, numbered as libccid does so existing applications that hard-code
 * them keep working: SCARD_CTL_CODE(0x330000 + feature tag). */
#define CALAIS__CCID_IOCTL(tag) SCARD_CTL_CODE(0x330000 + (tag))
/* The Windows-era vendor escape code libccid also accepts. */
#define CALAIS__CCID_IOCTL_VENDOR_IFD_EXCHANGE SCARD_CTL_CODE(1)

struct calais__ccid_slot {
	struct calais__ccid_port *port;
	const struct calais__ccid_desc *desc;
	const struct calais__ccid_strategy *st;
	uint8_t index;              /* bSlot */
	const uint32_t *rates;      /* GET_DATA_RATES answer; NULL: any rate up to the max */
	size_t n_rates;
	uint16_t vid, pid;          /* for FEATURE_GET_TLV_PROPERTIES */
	bool escape;                /* FEATURE_CCID_ESC_COMMAND enabled by configuration */
	/* The card, reset at each power-up. */
	bool powered;
	uint8_t power_select;       /* the bPowerSelect that gave the ATR */
	struct calais__atr atr;
	uint32_t protocol;          /* SCARD_PROTOCOL_T0/T1 once set_protocol ran */
	struct calais__pps_result params;
	struct calais__t1 t1;
	uint32_t timeout_ms;        /* read timeout of a card exchange */
	/* The next transmit's end (calais__now_ms() clock; 0: none), set by the transport
	 * before calais__ccid_transmit(), which bounds every wait of it by this and clears
	 * it: the protocol engine's blocks and bytes, time extensions, retries. */
	uint64_t deadline_ms;
	uint8_t chr[5 + 256 + 4];   /* character level: bytes sent, flushed by the next read */
	size_t chr_len;
	bool storm;                 /* the last command ended in a time-extension storm */
};

/* Every function below enters the port itself (calais__ccid_enter: port->lock on an
 * exclusive device) and ends with SCARD_E_CANCELLED soon after cancel_slot[index] (or
 * port->cancel) is set and the port woken. */
LONG calais__ccid_power_on(struct calais__ccid_slot *s, bool warm, uint8_t *atr, size_t *atr_len);
LONG calais__ccid_power_off(struct calais__ccid_slot *s);
/* SCARD_S_SUCCESS with *present; never an error for an empty slot. */
LONG calais__ccid_slot_status(struct calais__ccid_slot *s, bool *present);
/* The same, without waiting: SCARD_E_NOT_READY while the device is busy with other slots
 * (a presence poll must not wait for another slot's exchange). */
LONG calais__ccid_slot_poll(struct calais__ccid_slot *s, bool *present);
LONG calais__ccid_set_protocol(struct calais__ccid_slot *s, uint32_t protocol);
LONG calais__ccid_transmit(struct calais__ccid_slot *s, uint32_t protocol, const uint8_t *tx,
                           size_t tx_len, uint8_t *rx, size_t *rx_len);
LONG calais__ccid_control(struct calais__ccid_slot *s, uint32_t code, const uint8_t *in,
                          size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);
/* The part 10 features the slot offers (for calais_reader_desc.features); at most 8. */
size_t calais__ccid_features(const struct calais__ccid_slot *s, struct calais_feature *out);

/* Parses a CCID class descriptor (bLength 0x36, bDescriptorType 0x21). Every byte is
 * untrusted: SCARD_E_READER_UNSUPPORTED with a log line for a malformed one. */
LONG calais__ccid_desc_parse(const uint8_t *b, size_t n, struct calais__ccid_desc *d);
/* A GET_DATA_RATES answer (untrusted): up to max little-endian rates, ending at the first
 * 0; SCARD_E_INVALID_VALUE (logged) when the answer is not whole 32-bit values. *n: how
 * many were stored. */
LONG calais__ccid_rates_parse(const char *name, const uint8_t *b, size_t len, uint32_t *rates,
                              size_t max, size_t *n);
void calais__ccid_strategy(const struct calais__ccid_desc *d, struct calais__ccid_strategy *s);

#endif
