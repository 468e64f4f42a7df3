/* SPDX-License-Identifier: LGPL-2.1-or-later */
/**
 * @file calais.h
 * @brief Calais native API: configuration, logging and life cycle of the in-process
 * smart card resource manager.
 *
 * The PC/SC API (`<winscard.h>`) is the main interface; this header only adds what PC/SC
 * has no words for. A program that never includes it still works: the manager starts on
 * the first SCardEstablishContext() with defaults read from the environment.
 */
#ifndef CALAIS_CALAIS_H
#define CALAIS_CALAIS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* The PC/SC codes (SCARD_S_SUCCESS, SCARD_E_*) are the library's one error vocabulary,
 * so the native API returns them as the PC/SC LONG too. */
#include "pcsc/pcsclite.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CALAIS_API
#define CALAIS_API
#endif

/** @name Version
 * Checkable at compile time with the macros and at run time with calais_version().
 * @{ */
#define CALAIS_VERSION_MAJOR 0
#define CALAIS_VERSION_MINOR 2
#define CALAIS_VERSION_PATCH 0
#define CALAIS_MAKE_VERSION(mj, mn, p) (((mj) << 24) | ((mn) << 8) | (p))
#define CALAIS_VERSION \
	CALAIS_MAKE_VERSION(CALAIS_VERSION_MAJOR, CALAIS_VERSION_MINOR, CALAIS_VERSION_PATCH)
#define CALAIS_VERSION_STR "0.2.0"
/** Version of the backend table layout (struct calais_backend). */
#define CALAIS_BACKEND_ABI_VERSION 2
/** @} */

/** The library's run-time version as CALAIS_MAKE_VERSION() computes it. */
CALAIS_API uint32_t calais_version(void);
/** The library's run-time version as a string, e.g. "0.1.0". */
CALAIS_API const char *calais_version_str(void);

/** Log levels, from quietest to most verbose. */
enum calais_log_level {
	CALAIS_LOG_NONE = 0,
	CALAIS_LOG_ERROR = 1,
	CALAIS_LOG_WARNING = 2,
	CALAIS_LOG_INFO = 3,
	CALAIS_LOG_DEBUG = 4,
};

/**
 * @brief Receives one formatted log line (no trailing newline).
 *
 * Called from a thread of the library or of the application, never with a library lock
 * held, one line at a time in the order they were logged: it may call back into the
 * library (even log). A slow callback delays only the thread delivering to it; lines
 * logged meanwhile wait in a bounded queue (when it is full, new lines are dropped and
 * their number reported). @p domain is the module ("core", "sim", a backend's name).
 */
typedef void (*calais_log_cb)(enum calais_log_level level, const char *domain,
                              const char *message, void *user);

/**
 * @brief Manager configuration for calais_start().
 *
 * Zero-initialise it (or use calais_config_init()) and set what you need: a zero field
 * means "the default". Strings are copied by calais_start().
 */
struct calais_config {
	/** Comma-separated backend names ("sim,ccid"); NULL: $CALAIS_BACKENDS, else every
	 *  built backend that needs no declaration (the simulated one excluded). */
	const char *backends;
	/** Log level; CALAIS_LOG_NONE with log_level_set false: $CALAIS_LOG, else none. */
	enum calais_log_level log_level;
	/** true when log_level above is meant (so CALAIS_LOG_NONE can be asked for). */
	bool log_level_set;
	/** Log sink; NULL: lines go to stderr, and only when a level was raised. */
	calais_log_cb log_cb;
	void *log_user;
	/** Interval for backends that must poll card presence, in ms; 0: 400 ms. */
	uint32_t poll_interval_ms;
	/** Idle powered cards are powered down after this delay, in ms; 0: 5000 ms;
	 *  UINT32_MAX: never. */
	uint32_t power_down_delay_ms;
	/** A transaction idle for this long (no card operation) is ended and the card reset,
	 *  as Windows does after 5 s; 0: never (pcsc-lite's behaviour). */
	uint32_t transaction_timeout_ms;
	/** Show APDU bodies in debug logs. Off by default: APDUs carry PINs and keys. */
	bool trace_apdu_data;
	/** USB CCID readers: offer FEATURE_CCID_ESC_COMMAND (raw vendor escape commands)
	 *  to applications. Off by default, as in libccid: an escape can change a reader's
	 *  firmware settings. Also enabled by CALAIS_CCID_ESCAPE=1. */
	bool ccid_escape;
	/** The platform PC/SC library the passthrough backend (`pcsc`) loads; NULL:
	 *  $CALAIS_PCSC_LIBRARY, else the platform's (libpcsclite_real.so.1 or
	 *  libpcsclite.so.1, the PC/SC framework, winscard.dll). */
	const char *pcsc_library;
	/** Serial readers (they cannot be enumerated): "device:protocol[:model]" separated by
	 *  commas, e.g. "/dev/ttyUSB0:gemtwin,/dev/ttyS1:gemtwin:GemPCPinPad"; NULL:
	 *  $CALAIS_SERIAL_READERS. */
	const char *serial_readers;
	/** The longest one exchange with a reader may take (a Transmit, a Control such as a
	 *  PIN entry, a power-up), in ms; 0: $CALAIS_EXCHANGE_TIMEOUT_MS, else 300000 (5 min,
	 *  for PIN entry). A call that reaches it is ended: SCARD_E_TIMEOUT. Backends bound
	 *  their own protocol waits by it too.
	 *  Since 0.2, `CALAIS_VERSION >= CALAIS_MAKE_VERSION(0, 2, 0)`. */
	uint32_t exchange_timeout_ms;
	/** The HID backend (`hid`): which devices become readers, a comma-separated list of
	 *  "fido" (FIDO authenticators, usage page 0xF1D0), "ledger" (Ledger devices, vendor
	 *  0x2C97) and "ledger=VVVV[:PPPP]" (the Ledger APDU framing on other hexadecimal
	 *  vendor and product ids); NULL: $CALAIS_HID, else "fido". Read at start.
	 *  Since 0.2, `CALAIS_VERSION >= CALAIS_MAKE_VERSION(0, 2, 0)`. */
	const char *hid_devices;
};

/** Fills @p cfg with the defaults (all zero). */
CALAIS_API void calais_config_init(struct calais_config *cfg);

/**
 * @brief Starts the manager with an explicit configuration.
 *
 * Optional: without it, the first SCardEstablishContext() starts the manager with the
 * defaults and the environment (CALAIS_BACKENDS, CALAIS_LOG, per-backend variables).
 * Environment variables are not read for a field that @p cfg sets.
 * @param cfg the configuration, or NULL for the defaults.
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_VALUE when already started or a backend
 *  name is unknown; SCARD_E_NO_MEMORY. (The return type is the PC/SC LONG.)
 * Thread-safe.
 */
CALAIS_API LONG calais_start(const struct calais_config *cfg);

/**
 * @brief Stops every thread, closes every reader and frees all memory.
 *
 * Every context and card handle becomes invalid (calls on them return
 * SCARD_E_INVALID_HANDLE); calls waiting for an event or a transaction return
 * SCARD_E_CANCELLED, calls inside an exchange with a reader SCARD_E_NO_SERVICE within
 * 1 s, and an SCardEstablishContext() made meanwhile SCARD_E_NO_SERVICE. The manager may
 * be started again afterwards (the next SCardEstablishContext() does it). Must not be
 * called from a backend callback.
 */
CALAIS_API void calais_shutdown(void);

/** true while the manager runs (started explicitly or lazily). */
CALAIS_API bool calais_is_running(void);

/**
 * @brief Sets the log level and sink at run time.
 * @param cb the sink, or NULL for stderr.
 */
CALAIS_API void calais_log_set(enum calais_log_level level, calais_log_cb cb, void *user);

#ifdef __cplusplus
}
#endif

#include "atr.h"
#include "backend.h"
#include "sim.h"

#endif /* CALAIS_CALAIS_H */
