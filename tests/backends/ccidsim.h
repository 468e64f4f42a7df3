/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A CCID device simulator at the CCID backend's USB seam (backends/ccid/usb.h): devices
 * with any exchange level, slot count, with or without an interrupt pipe, cards speaking
 * T=0 or T=1 (down to the byte stream at character level), and faults injected into the
 * transfers. Test-only; one simulated bus per process. */
#ifndef CALAIS_TEST_CCIDSIM_H
#define CALAIS_TEST_CCIDSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CCIDSIM_MAX_SLOTS 4

struct ccidsim_cfg {
	uint16_t vid, pid, bcd_device;
	const char *manufacturer, *product, *serial, *iface;
	unsigned slots;         /* bMaxSlotIndex + 1 */
	bool intr;              /* interrupt endpoint */
	uint32_t features;      /* dwFeatures, level bits included */
	uint32_t max_msg;       /* dwMaxCCIDMessageLength; 0: 271 + extended */
	uint8_t pin_support;
	uint16_t lcd_layout;
	uint8_t voltage;        /* bVoltageSupport; 0: 7 */
	uint32_t protocols;     /* dwProtocols; 0: 3 */
	uint32_t max_ifsd;      /* 0: 254 */
	uint8_t iface_class;    /* 0: 0x0B */
	uint8_t iface_protocol; /* 0 CCID, 1 ICCD-A, 2 ICCD-B */
	bool desc_on_endpoint;  /* class descriptor after the endpoints (OZ776) */
	bool busy;              /* claiming fails as if another process held it */
	uint8_t max_busy;       /* bMaxCCIDBusySlots (0: 1); commands of several slots run at once */
};

struct ccidsim_card {
	uint8_t atr[33];
	size_t atr_len;
	bool t1;           /* speaks T=1 blocks at TPDU/character level (else T=0) */
	bool t1_crc;       /* its T=1 EDC is the CRC (its ATR's TC3 should say so), else LRC */
	bool mute;         /* no ATR */
};

enum ccidsim_fault {
	CS_NONE,
	CS_STALE_SEQ,      /* a reply with the previous bSeq comes first */
	CS_WRONG_SEQ,      /* every reply carries a wrong bSeq */
	CS_SHORT,          /* a 6-byte reply */
	CS_GARBAGE,        /* random bytes */
	CS_BAD_LENGTH,     /* dwLength larger than the bytes sent */
	CS_OVERSIZED,      /* more than the host's buffer holds */
	CS_STALL_OUT,      /* the command's bulk-OUT stalls */
	CS_STALL_IN,       /* the reply's bulk-IN stalls (the reply is lost) */
	CS_TIME_EXT,       /* three time extensions, then the reply */
	CS_TIME_EXT_STORM, /* time extensions for ever */
	CS_MUTE,           /* no reply at all (until an abort) */
	CS_GONE,           /* the device disappears during the transfer */
	CS_PIN_TIMEOUT,    /* Secure fails with PIN_TIMEOUT */
	CS_PIN_BAD_EDC,    /* Secure over T=1 blocks: the card's answer block has a bad EDC */
	CS_ICC_MUTE,       /* XfrBlock fails with ICC_MUTE (the card did not answer in time) */
	CS_FAIL_HW,        /* the command fails with HW_ERROR */
};

struct ccidsim_stats {
	unsigned commands[256];  /* by message type */
	unsigned class_aborts, clear_halts, claims;
	uint8_t last_set_params[8];
	size_t last_set_params_len;
	uint8_t last_secure[600];
	size_t last_secure_len;
	unsigned pps, ifs_requests;
	uint8_t last_power_select;
	uint16_t levels_seen;    /* bit per wLevelParameter kind: 1, 2, 3, 0x10 (bit 4) */
};

typedef struct ccidsim_dev ccidsim_dev;

/* Points the CCID backend at the simulator; call before calais_start(). */
void ccidsim_install(void);
/* Removes every device (after calais_shutdown()). */
void ccidsim_reset(void);
/* Plugs a device in (hotplug event when the backend runs). */
ccidsim_dev *ccidsim_add(const struct ccidsim_cfg *cfg);
void ccidsim_unplug(ccidsim_dev *d);
void ccidsim_insert(ccidsim_dev *d, unsigned slot, const struct ccidsim_card *card);
/* A command running on the slot fails as the card goes (ICC_MUTE, no card)... */
void ccidsim_eject(ccidsim_dev *d, unsigned slot);
/* ...or, here, the reader goes on saying nothing about it (only cancel ends it). */
void ccidsim_eject_silent(ccidsim_dev *d, unsigned slot);
/* The next command's reply is held back ms (a reader busy with a mute card). */
void ccidsim_delay_next(ccidsim_dev *d, uint32_t ms);
/* CS_TIME_EXT_STORM sends one time extension every ms (0: at once, the default). */
void ccidsim_storm_gap(ccidsim_dev *d, uint32_t ms);
/* The next `count` commands get `f` (count 0: every command from now on). */
void ccidsim_fault(ccidsim_dev *d, enum ccidsim_fault f, unsigned count);
/* The same for the commands of one slot only. */
void ccidsim_fault_slot(ccidsim_dev *d, unsigned slot, enum ccidsim_fault f, unsigned count);
void ccidsim_set_busy(ccidsim_dev *d, bool busy);
/* ICCD version B: every DATA_BLOCK answer is "poll again in units x 10 ms" (0: off). */
void ccidsim_iccd_delay(ccidsim_dev *d, uint16_t units);
struct ccidsim_stats ccidsim_stats(ccidsim_dev *d);

#endif
