/* SPDX-License-Identifier: LGPL-2.1-or-later */
/**
 * @file atr.h
 * @brief Answer-to-Reset decoding for people: what an ATR means (ISO/IEC 7816-3), and
 * which card it is according to pcsc-tools' list.
 */
#ifndef CALAIS_ATR_H
#define CALAIS_ATR_H

#include <stddef.h>
#include <stdint.h>
#include "pcsc/pcsclite.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CALAIS_API
#define CALAIS_API
#endif

/**
 * @brief Writes a multi-line description of an ATR: convention, interface bytes,
 * Fi/Di/fmax, guard time, protocols, specific or negotiable mode, T=0 and T=1
 * parameters, clock stop and classes, historical bytes, TCK.
 * @param buf receives NUL-terminated text, truncated to @p cap bytes.
 * @returns SCARD_S_SUCCESS; SCARD_E_INVALID_ATR for a malformed ATR (the text then says
 *  why, e.g. "invalid ATR: TCK mismatch ..."); SCARD_E_INSUFFICIENT_BUFFER when cut.
 */
CALAIS_API LONG calais_atr_describe(const uint8_t *atr, size_t len, char *buf, size_t cap);

/** The usual place of pcsc-tools' ATR list. */
#define CALAIS_SMARTCARD_LIST "/usr/share/pcsc/smartcard_list.txt"

/**
 * @brief Looks an ATR up in pcsc-tools' smartcard_list.txt (ATR patterns where "."
 * matches any hex digit, each followed by tab-indented descriptions).
 * @param path the list, or NULL for CALAIS_SMARTCARD_LIST.
 * @param buf receives the descriptions of the first matching entry, one per line.
 * @returns SCARD_S_SUCCESS; SCARD_E_UNKNOWN_CARD (no entry matches);
 *  SCARD_E_FILE_NOT_FOUND (no list at @p path); SCARD_E_INVALID_PARAMETER.
 */
CALAIS_API LONG calais_atr_lookup(const uint8_t *atr, size_t len, const char *path, char *buf,
                                  size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* CALAIS_ATR_H */
