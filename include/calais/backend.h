/* SPDX-License-Identifier: LGPL-2.1-or-later */
/**
 * @file backend.h
 * @brief The transport backend interface: a table of functions a backend fills in, and
 * the core helpers a backend calls to report readers and card events.
 *
 * Built-in backends (sim, ccid, serial, pcsc...) and third-party ones registered with
 * calais_backend_register() use the same table. The model is libusb's usbi_os_backend
 * with SQLite's versioned, run-time registered tables: members are only ever appended,
 * and @c abi_version says how many a table has.
 *
 * Threads and locks, once for every member below:
 * - The core owns one "I/O lock" per reader. Every per-reader call (power_on, power_off,
 *   set_protocol, transmit, control, get_attrib, set_attrib, slot_status, hold, close)
 *   is made with that reader's I/O lock held, so calls for one reader never overlap;
 *   calls for different readers may run at the same time on different threads.
 * - No other library lock is held during a backend call, so a backend may call any
 *   calais_reader_* helper from inside one (they never wait for I/O).
 * - Calls come from the application thread that made the PC/SC call, or from a runner
 *   thread of the core serving this reader only (power-up at insertion, idle power-down,
 *   presence polling, the end of a hold, close): the core never makes one reader's call
 *   wait for another reader's. The backend keeps it so: no lock or thread of its own
 *   shared between readers may be held or waited on across one reader's device I/O, and
 *   its event threads (hotplug, interrupts, accept loops) never wait for an exchange.
 * - Every wait on the device is bounded (a transmit by its timeout_ms, the rest by the
 *   transport's protocol times) and ends soon after cancel(); see cancel.
 * - Every member returns a PC/SC code (SCARD_S_SUCCESS, SCARD_E_*, SCARD_W_*). Use the
 *   precise one: SCARD_E_NO_SMARTCARD / SCARD_W_REMOVED_CARD when the card is gone,
 *   SCARD_E_READER_UNAVAILABLE when the device is gone, SCARD_W_UNRESPONSIVE_CARD for a
 *   mute card, SCARD_F_COMM_ERROR for a transport failure, SCARD_E_TIMEOUT for a
 *   timeout. Log the native cause (errno, libusb code) through calais_backend_log().
 */
#ifndef CALAIS_BACKEND_H
#define CALAIS_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "pcsc/pcsclite.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CALAIS_API
#define CALAIS_API
#endif

/** A reader slot. Owned by the core; a backend reaches its own part with
 *  calais_reader_priv(). */
typedef struct calais_reader calais_reader;
/** A running backend. Owned by the core; private part via calais_backend_priv(). */
typedef struct calais_backend_instance calais_backend_instance;

/** A part 10 feature a reader offers: the core answers CM_IOCTL_GET_FEATURE_REQUEST
 *  from these, and the application then calls SCardControl(control_code). */
struct calais_feature {
	uint8_t tag;            /**< FEATURE_VERIFY_PIN_DIRECT, ... (reader.h) */
	uint32_t control_code;  /**< the code SCardControl() is called with */
};

/** @name Reader flags (calais_reader_desc.flags) @{ */
/** The transport cannot signal card movement: the core polls slot_status(). */
#define CALAIS_READER_POLL_PRESENCE 0x0001u
/** calais_reader_desc.name is already a whole PC/SC name ("... XX YY", from another
 *  resource manager): kept as it is when no other reader has it; otherwise it gets
 *  " XX YY" appended like any other name. interface_name and serial are ignored. The
 *  backend's get_attrib() is then asked first for the descriptive attributes (vendor,
 *  IFD version, channel id, maximum input, device unit), the core's answers being the
 *  fallback. */
#define CALAIS_READER_KEEP_NAME 0x0002u
/** The backend does not know yet whether a card is in the slot (finding out takes device
 *  I/O, which its own threads must not do for one reader while others wait): publish
 *  with card_present false, and the core calls slot_status() once, from a thread that
 *  serves this reader alone, right after the publish. Start-up waits for that answer
 *  like for the ATRs. Since 0.2. */
#define CALAIS_READER_PROBE_PRESENCE 0x0004u
/** @} */

/**
 * @brief What a backend says about a new reader slot (calais_reader_new()).
 * Strings are copied.
 */
struct calais_reader_desc {
	/** Base name, e.g. "Gemalto PC Twin Reader"; mandatory. The core builds the PC/SC
	 *  name "<name> [<interface>] (<serial>) XX YY" from it. */
	const char *name;
	/** USB interface string or similar; optional (NULL). */
	const char *interface_name;
	/** Serial number; optional (NULL). Left out of the name when interface_name
	 *  already contains it, as pcsc-lite does. */
	const char *serial;
	/** SCARD_ATTR_VENDOR_NAME; optional. */
	const char *vendor;
	/** SCARD_ATTR_VENDOR_IFD_VERSION (0xMMmmbbbb); optional. */
	uint32_t ifd_version;
	/** SCARD_ATTR_CHANNEL_ID (0xDDDDCCCC: type, channel; 0x0020xxxx for USB). */
	uint32_t channel_id;
	/** SCARD_ATTR_MAXINPUT: largest command the reader accepts; 0: 261 (short APDU). */
	uint32_t max_input;
	/** Slot number: the YY of the name. */
	uint32_t slot;
	/** CALAIS_READER_* flags. */
	uint32_t flags;
	/** SCARD_PROTOCOL_* bits the reader can run; 0: T0|T1. */
	uint32_t protocols;
	/** Part 10 features; may be NULL when n_features is 0. Copied. */
	const struct calais_feature *features;
	size_t n_features;
};

/** @name Backend capability bits (calais_backend.caps): informative, for logs and
 *  calais-scan. @{ */
#define CALAIS_BACKEND_CAP_HOTPLUG   0x0001u /**< reports reader arrival and removal */
#define CALAIS_BACKEND_CAP_CARD_EVENTS 0x0002u /**< pushes card insertion and removal */
#define CALAIS_BACKEND_CAP_EXTENDED  0x0004u /**< extended APDUs */
#define CALAIS_BACKEND_CAP_PINPAD    0x0008u /**< part 10 PIN features */
/** @} */

/**
 * @brief A transport backend: the table every backend fills in.
 *
 * Declare it `static const`, with designated initialisers.
 */
struct calais_backend {
	/** CALAIS_BACKEND_ABI_VERSION at the time the table was written. Mandatory. */
	int abi_version;
	/** Short lowercase name ("sim", "ccid"): used in CALAIS_BACKENDS and in logs.
	 *  Mandatory; unique among registered backends. */
	const char *name;
	/** CALAIS_BACKEND_CAP_* bits. */
	uint32_t caps;
	/** Bytes the core allocates, zeroed, for calais_backend_priv(). */
	size_t instance_priv_size;
	/** Bytes the core allocates, zeroed, for each reader's calais_reader_priv(). */
	size_t reader_priv_size;

	/**
	 * Starts the backend. Mandatory.
	 * Called once per start, by the thread that starts the manager (calais_start(), the
	 * first SCardEstablishContext(), the first calais_sim_* call for a backend started
	 * on demand, or calais_backend_register() on a running manager), with no library
	 * lock held; other threads' first SCardEstablishContext() waits for it. Reports the
	 * readers present now (calais_reader_new() then calais_reader_publish(); their
	 * cards' ATRs are read before the start-up ends, within 2 s) and starts whatever
	 * thread or event source it needs to report later arrivals, removals and card
	 * events.
	 * @returns SCARD_S_SUCCESS; any error disables this backend only (it is logged).
	 * A backend that cannot reach its transport yet (service down, no device) should
	 * return success, log once and retry on its own.
	 */
	LONG (*init)(calais_backend_instance *bi);

	/**
	 * Stops reporting. Optional.
	 * Called once at shutdown, after every call in progress has ended (cancel() was
	 * called for them) and before any of its readers is closed, with no library lock
	 * held, from the thread calling calais_shutdown(). Stops the backend's threads;
	 * after it returns the backend must not call calais_reader_new/publish/card_event/
	 * remove any more.
	 */
	void (*stop)(calais_backend_instance *bi);

	/**
	 * Frees what init() set up. Optional.
	 * Called once, after stop() and after close() of every reader of this backend.
	 */
	void (*exit)(calais_backend_instance *bi);

	/**
	 * Releases one reader's resources. Optional.
	 * Called once per published reader, after the backend reported its removal (from a
	 * runner thread, once the call in progress, cancelled, has returned) or at shutdown
	 * (from the shutdown thread), with the reader's I/O lock held. No other call for
	 * this reader follows; its private data is freed by the core when the last handle
	 * on it is gone.
	 */
	void (*close)(calais_reader *r);

	/**
	 * Powers the card up (cold reset) or resets it (warm reset). Mandatory.
	 * @param warm true for a warm reset of a powered card.
	 * @param atr receives the ATR; room for MAX_ATR_SIZE bytes.
	 * @param atr_len receives the ATR length.
	 * @returns SCARD_S_SUCCESS; SCARD_E_NO_SMARTCARD (no card);
	 *  SCARD_W_UNRESPONSIVE_CARD (no ATR); SCARD_E_READER_UNAVAILABLE (device gone);
	 *  SCARD_F_COMM_ERROR.
	 */
	LONG (*power_on)(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len);

	/**
	 * Powers the card down. Optional (absent: the core only records it).
	 * @returns SCARD_S_SUCCESS, or as power_on().
	 */
	LONG (*power_off)(calais_reader *r);

	/**
	 * Selects the protocol for the powered card: PPS and parameters as needed.
	 * Optional: absent means the reader negotiates by itself (APDU-level readers).
	 * Called once after each power-up, at the first SCardConnect() that is not DIRECT.
	 * @param protocol SCARD_PROTOCOL_T0 or SCARD_PROTOCOL_T1, chosen by the core from
	 *  the ATR and the application's preferred protocols.
	 * @returns SCARD_S_SUCCESS; SCARD_E_PROTO_MISMATCH (the reader cannot run it);
	 *  SCARD_W_UNRESPONSIVE_CARD (PPS failed).
	 */
	LONG (*set_protocol)(calais_reader *r, uint32_t protocol);

	/**
	 * Exchanges one command and response with the card. Mandatory.
	 * @param protocol the active protocol (SCARD_PROTOCOL_T0/T1/RAW).
	 * @param tx the command (an APDU; raw bytes for RAW), tx_len bytes.
	 * @param rx receives the response; *rx_len is its capacity on entry and the
	 *  response length on return.
	 * @param timeout_ms the longest the core lets the exchange take (the exchange limit,
	 *  calais_config.exchange_timeout_ms; never 0): bound every wait of the exchange by
	 *  it (protocol waits, WTX, time extensions, retries). The core also cancels the
	 *  call when it is reached.
	 * @returns SCARD_S_SUCCESS; SCARD_E_INSUFFICIENT_BUFFER (response longer than
	 *  *rx_len; set *rx_len to the length needed when known); SCARD_W_REMOVED_CARD or
	 *  SCARD_E_NO_SMARTCARD; SCARD_E_READER_UNAVAILABLE; SCARD_F_COMM_ERROR;
	 *  SCARD_E_TIMEOUT; SCARD_E_CANCELLED after cancel().
	 */
	LONG (*transmit)(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
	                 uint8_t *rx, size_t *rx_len, uint32_t timeout_ms);

	/**
	 * Reader control (escape, PIN pad). Optional (absent: SCARD_E_UNSUPPORTED_FEATURE).
	 * CM_IOCTL_GET_FEATURE_REQUEST never reaches it: the core answers it from
	 * calais_reader_desc.features. Works without a card (DIRECT connections).
	 * @param out receives the answer; @p out_cap bytes of room.
	 * @param out_len receives the answer's length.
	 * @returns SCARD_S_SUCCESS; SCARD_E_UNSUPPORTED_FEATURE (unknown code);
	 *  SCARD_E_INSUFFICIENT_BUFFER (set *out_len to the length needed);
	 *  SCARD_E_INVALID_PARAMETER (malformed input); as transmit().
	 */
	LONG (*control)(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
	                uint8_t *out, size_t out_cap, size_t *out_len);

	/**
	 * Reads an attribute the core does not answer itself. Optional.
	 * @param buf receives the value; *len is its capacity on entry (at least 264 bytes)
	 *  and the value's length on return. Integer attributes are 4 bytes, little-endian
	 *  (as libccid and Windows answer them), never sizeof(DWORD).
	 * @returns SCARD_S_SUCCESS; SCARD_E_UNSUPPORTED_FEATURE (unknown attribute);
	 *  SCARD_E_INSUFFICIENT_BUFFER.
	 */
	LONG (*get_attrib)(calais_reader *r, uint32_t id, uint8_t *buf, size_t *len);

	/**
	 * Writes an attribute. Optional (absent: SCARD_E_UNSUPPORTED_FEATURE).
	 * @returns SCARD_S_SUCCESS; SCARD_E_UNSUPPORTED_FEATURE; SCARD_E_INVALID_VALUE.
	 */
	LONG (*set_attrib)(calais_reader *r, uint32_t id, const uint8_t *buf, size_t len);

	/**
	 * Reports whether a card is present. Mandatory for readers published with
	 * CALAIS_READER_POLL_PRESENCE (the core calls it every poll interval) or
	 * CALAIS_READER_PROBE_PRESENCE (once, after the publish); optional otherwise.
	 * @returns SCARD_S_SUCCESS with *present set; SCARD_E_READER_UNAVAILABLE when the
	 *  device is gone (the core then removes the reader).
	 */
	LONG (*slot_status)(calais_reader *r, bool *present);

	/**
	 * Makes the call in progress on @p r return soon: within 100 ms, 1 s at most.
	 * Optional, but without it nothing bounds a call but the backend itself.
	 * Called by the core's scheduler (or the shutdown thread) WITHOUT the reader's I/O
	 * lock and without any library lock, while a call on @p r is in progress, when:
	 * the reader was reported removed (calais_reader_remove()), its card was reported
	 * removed (calais_reader_card_event(r, false)), the exchange limit passed, or
	 * calais_shutdown() began; not when the call in progress reported the event
	 * itself, and never while close() runs. It may be called again (every 100 ms while the call lasts: a core call
	 * may make several backend calls), and it may arrive just after the call returned,
	 * never after the next call began: so set a flag, wake the waits, and clear the
	 * flag at the start of every call. Must not block (the backend's own short locks
	 * are fine).
	 * The interrupted call returns SCARD_E_CANCELLED (or a more precise code it knows:
	 * SCARD_E_READER_UNAVAILABLE, SCARD_W_REMOVED_CARD); the core turns
	 * SCARD_E_CANCELLED into SCARD_E_READER_UNAVAILABLE, SCARD_W_REMOVED_CARD,
	 * SCARD_E_TIMEOUT or SCARD_E_NO_SERVICE after the cause.
	 */
	void (*cancel)(calais_reader *r);

	/**
	 * The application's hold on the card begins (held true: a transaction began, or an
	 * exclusive connection opened) or ends (false). Optional; exists from abi_version 2
	 * (the core never reads it from an older table).
	 * For backends whose readers other processes share (the passthrough backend): hold
	 * them off for as long as the application needs the card to itself, and no longer.
	 * Called with the reader's I/O lock held; true is called before SCardBeginTransaction()
	 * or the exclusive SCardConnect() returns (an error fails that call), false soon
	 * after the hold ends (from a runner thread).
	 */
	LONG (*hold)(calais_reader *r, bool held);
};

/**
 * @brief Registers a third-party backend and enables it.
 *
 * On a running manager the backend starts at once (its init() is called before this
 * returns); otherwise at the next start. calais_shutdown() forgets every registered
 * backend: register again before starting anew. @p backend must stay valid until
 * calais_shutdown() returns.
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_PARAMETER (NULL, missing mandatory member,
 *  abi_version newer than this library); SCARD_E_DUPLICATE_READER (name taken);
 *  SCARD_E_NO_MEMORY.
 */
CALAIS_API LONG calais_backend_register(const struct calais_backend *backend);

/** The backend's private block (instance_priv_size bytes, zeroed at start). */
CALAIS_API void *calais_backend_priv(calais_backend_instance *bi);

/** Logs a line under the backend's name. Thread-safe, callable from any thread. */
CALAIS_API void calais_backend_log(calais_backend_instance *bi, int level, const char *fmt, ...)
#if defined(__MINGW32__)
	/* C99 formats (%zu) whatever the caller's __USE_MINGW_ANSI_STDIO: the library formats. */
	__attribute__((format(gnu_printf, 3, 4)))
#elif defined(__GNUC__)
	__attribute__((format(printf, 3, 4)))
#endif
	;

/**
 * @brief Creates a reader slot, not yet visible to applications.
 *
 * Fill calais_reader_priv() next, then call calais_reader_publish() (or
 * calais_reader_discard() to give up). Any thread.
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_PARAMETER (no name);
 *  SCARD_E_NO_MEMORY.
 */
CALAIS_API LONG calais_reader_new(calais_backend_instance *bi,
                                  const struct calais_reader_desc *desc,
                                  calais_reader **out);

/** Frees a reader that was never published. */
CALAIS_API void calais_reader_discard(calais_reader *r);

/**
 * @brief Makes the reader visible: it gets its unique name, is listed, and
 * `\\?PnP?\Notification` waiters are woken.
 * @param card_present whether a card is in the slot now (the core powers it up to
 *  read its ATR, then reports it).
 * @returns SCARD_S_SUCCESS; SCARD_E_NO_MEMORY; SCARD_E_DUPLICATE_READER (256 readers
 *  with that base name and slot already); on error the reader was discarded.
 */
CALAIS_API LONG calais_reader_publish(calais_reader *r, bool card_present);

/**
 * @brief Reports a card insertion (present = true) or removal. Any thread, never blocks
 * on I/O. Repeating the current state is harmless. An insertion is reported to
 * applications once the core has read the card's ATR.
 */
CALAIS_API void calais_reader_card_event(calais_reader *r, bool present);

/**
 * @brief Reports that the reader is gone (unplugged). Any thread, never blocks.
 * Applications see it disappear at once; a call in progress on it is cancelled (see
 * cancel) and the core then calls close() from a runner thread. The backend must not
 * use @p r after close() returns.
 */
CALAIS_API void calais_reader_remove(calais_reader *r);

/**
 * @brief Marks the reader unavailable (reason: a PC/SC error, e.g.
 * SCARD_E_SHARING_VIOLATION while another process holds the device), or available again
 * (SCARD_S_SUCCESS). Any thread, never blocks.
 *
 * An unavailable reader stays listed; SCardGetStatusChange() shows
 * SCARD_STATE_UNAVAILABLE, and SCardConnect() other than DIRECT returns @p reason. Card
 * events reported meanwhile are kept and shown once it is available.
 */
CALAIS_API void calais_reader_set_unavailable(calais_reader *r, LONG reason);

/** The reader's private block (reader_priv_size bytes, zeroed). */
CALAIS_API void *calais_reader_priv(calais_reader *r);
/** The backend instance the reader belongs to. */
CALAIS_API calais_backend_instance *calais_reader_backend(calais_reader *r);
/** The reader's PC/SC name (NULL before publish). Valid until close() returns. */
CALAIS_API const char *calais_reader_name(calais_reader *r);

#ifdef __cplusplus
}
#endif

#endif /* CALAIS_BACKEND_H */
