/* SPDX-License-Identifier: LGPL-2.1-or-later */
/**
 * @file sim.h
 * @brief The simulated backend: readers and cards described in code, so PC/SC programs
 * can be developed and tested without hardware.
 *
 * A simulated card is an ATR plus a function that answers APDUs. Readers can be added,
 * cards inserted and removed, and readers unplugged at any time from any thread; every
 * change reaches SCardGetStatusChange() waiters as a real reader's would.
 *
 * With CALAIS_BACKENDS=sim the backend also creates one reader, "Calais Virtual
 * Reader", holding the demo card (calais_sim_democard()).
 */
#ifndef CALAIS_SIM_H
#define CALAIS_SIM_H

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

/** A simulated reader, returned by calais_sim_reader_add(). */
typedef struct calais_sim_reader calais_sim_reader;

/**
 * @brief Answers one command APDU.
 *
 * Called with the reader's I/O lock held (never twice at once for one card), from the
 * thread that called SCardTransmit().
 * @param user the card's user pointer.
 * @param apdu the command, @p apdu_len bytes.
 * @param resp receives the response including SW1 SW2; *resp_len is its capacity on
 *  entry (at least 258 bytes) and the response length on return.
 * @returns SCARD_S_SUCCESS, or a PC/SC error to inject a fault (e.g.
 *  SCARD_F_COMM_ERROR, SCARD_W_UNRESPONSIVE_CARD).
 */
typedef LONG (*calais_sim_apdu_fn)(void *user, const uint8_t *apdu, size_t apdu_len,
                                   uint8_t *resp, size_t *resp_len);

/**
 * @brief A simulated card. Copied by calais_sim_card_insert(), except @c user.
 *
 * Zero every member you do not set (a designated initialiser does): a zero member
 * leaves its behaviour off. Members are only ever appended, each marked with the
 * version that added it, so an initialiser written for an older sim.h describes the
 * same card. The library copies the whole struct as this header declares it: build
 * against the sim.h of the library you link (the library is static, so that is the
 * case unless headers and library come from different installs).
 *
 * The fault knobs (@c latency_us, @c mute, @c atr_delay_ms, @c silent) simulate slow,
 * mute and hung cards. Every wait they cause ends early, without the card answering,
 * when the card is removed (SCARD_W_REMOVED_CARD), the reader is unplugged
 * (SCARD_E_READER_UNAVAILABLE), the library cancels the call (at calais_shutdown(), whose
 * callers in a call get SCARD_E_NO_SERVICE), or the exchange limit passes
 * (calais_config.exchange_timeout_ms or CALAIS_EXCHANGE_TIMEOUT_MS, 300 s by default: an
 * APDU then ends with SCARD_E_TIMEOUT, and a power-up fails, the card shown mute).
 */
struct calais_sim_card {
	/** The ATR (2 to 33 bytes). */
	const uint8_t *atr;
	size_t atr_len;
	/** Answers APDUs; mandatory. */
	calais_sim_apdu_fn apdu;
	/** Called at every power-up and reset (to clear selected files, etc.); optional. */
	void (*reset)(void *user);
	/** Passed to apdu() and reset(); must stay valid until the card is removed. */
	void *user;
	/** When non-zero, each insertion gets its own zeroed block of this many bytes,
	 *  passed to apdu() and reset() instead of @c user (per-card state, freed at
	 *  removal): the same description can then be inserted in several readers. */
	size_t state_size;
	/** Delay before each response, in microseconds (simulated card latency). A
	 *  latency longer than the exchange limit ends the APDU at the limit with
	 *  SCARD_E_TIMEOUT. */
	uint32_t latency_us;
	/** A mute card: power-up fails (SCARD_W_UNRESPONSIVE_CARD, after @c atr_delay_ms
	 *  when set), state MUTE. */
	bool mute;
	/** Delay before the ATR at each power-up and reset, in milliseconds (a slow card,
	 *  or with @c mute a card that the reader takes this long to declare mute). A delay
	 *  past the exchange limit makes the card mute.
	 *  Since 0.2, `CALAIS_VERSION >= CALAIS_MAKE_VERSION(0, 2, 0)`. */
	uint32_t atr_delay_ms;
	/** A card that goes silent in mid-exchange: after answering @c silent_after APDUs
	 *  following each power-up or reset, it stops answering; every later APDU waits
	 *  with no answer until the card is removed, the reader unplugged, the call
	 *  cancelled or the exchange limit passes (see above). A reset (SCardReconnect()
	 *  with SCARD_RESET_CARD or SCARD_UNPOWER_CARD) revives it for another
	 *  @c silent_after APDUs, as a reset revives a card stuck in a loop.
	 *  Since 0.2, `CALAIS_VERSION >= CALAIS_MAKE_VERSION(0, 2, 0)`. */
	bool silent;
	/** With @c silent: how many APDUs the card answers after each power-up before it
	 *  goes silent (0: none).
	 *  Since 0.2, `CALAIS_VERSION >= CALAIS_MAKE_VERSION(0, 2, 0)`. */
	uint32_t silent_after;
};

/**
 * @brief Adds a simulated reader (starting the manager with its defaults if needed).
 * @param name base name; the PC/SC name gets the usual " XX YY" suffix.
 * @param out receives the reader; valid until calais_sim_reader_unplug() or
 *  calais_shutdown().
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_PARAMETER; SCARD_E_NO_MEMORY.
 */
CALAIS_API LONG calais_sim_reader_add(const char *name, calais_sim_reader **out);

/** The reader's PC/SC name (NULL after unplug). Valid until unplug or shutdown. */
CALAIS_API const char *calais_sim_reader_name(calais_sim_reader *r);

/**
 * @brief Inserts a card. Waiters see PRESENT with the card's ATR.
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_PARAMETER (bad card description);
 *  SCARD_E_SHARING_VIOLATION (a card is already inserted);
 *  SCARD_E_READER_UNAVAILABLE (unplugged reader).
 */
CALAIS_API LONG calais_sim_card_insert(calais_sim_reader *r, const struct calais_sim_card *card);

/**
 * @brief Removes the card. Handles on it get SCARD_W_REMOVED_CARD; an APDU in progress
 * returns SCARD_W_REMOVED_CARD (at once, even while the card is slow or silent).
 * @returns SCARD_S_SUCCESS; SCARD_E_NO_SMARTCARD (no card).
 */
CALAIS_API LONG calais_sim_card_remove(calais_sim_reader *r);

/**
 * @brief Unplugs the reader: it disappears from the reader list, handles on it get
 * SCARD_E_READER_UNAVAILABLE, `\\?PnP?\Notification` waiters are woken; an APDU or a
 * power-up waiting on a slow or silent card returns SCARD_E_READER_UNAVAILABLE at once.
 * @p r is freed.
 */
CALAIS_API LONG calais_sim_reader_unplug(calais_sim_reader *r);

/**
 * @brief The demo card: a small ISO 7816-4 file system.
 *
 * ATR 3B 8E 01 "CalaisDemoCard" AD (T=1 only; the historical bytes spell CalaisDemoCard).
 * It answers SELECT (by file id: MF 3F00, EF 0001 holding a greeting text, DF 5000 and
 * its EF 5001 of 300 bytes (byte i is i mod 256); by DF name: the AID
 * A0 00 00 06 47 43 41 4C selects DF 5000), READ BINARY
 * (short and extended offsets, Le 00 for up to 256), GET RESPONSE, GET CHALLENGE, and
 * VERIFY with PIN "1234" (3 tries, 63 Cx). Each insertion of the demo card starts from
 * a fresh state.
 */
CALAIS_API const struct calais_sim_card *calais_sim_democard(void);

#ifdef __cplusplus
}
#endif

#endif /* CALAIS_SIM_H */
