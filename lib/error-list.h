/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The one list of PC/SC return codes, as an X-macro; pcsc_stringify_error()'s texts
 * are built from it (lib/error.c). */
#ifndef CALAIS_ERROR_LIST_H
#define CALAIS_ERROR_LIST_H

#include <stddef.h>

#include "calais/pcsc/pcsclite.h"

/*
 * CALAIS__PCSC_ERROR_MAP(X) calls X(NAME, text) once per distinct code, in numeric
 * order. NAME is the pcsclite.h macro, so it gives both the value and, with #NAME, the
 * symbolic name. text is exactly what pcsc-lite's pcsc_stringify_error() prints for the
 * code, or NULL where pcsc-lite has no text and prints "Unknown error: 0x%08lX"
 * instead; programs show and sometimes match these strings, so they are not ours to
 * improve.
 *
 * Each value appears once (error.c turns the list into a switch, so a repeat does not
 * compile): SCARD_E_UNEXPECTED is left out for SCARD_E_UNSUPPORTED_FEATURE, which has
 * the same value in pcsc-lite, and SCARD_E_UNKNOWN_RES_MNG for SCARD_E_UNKNOWN_RES_MSG.
 */
#define CALAIS__PCSC_ERROR_MAP(X)                                                      \
	X(SCARD_S_SUCCESS, "Command successful.")                                      \
	X(SCARD_F_INTERNAL_ERROR, "Internal error.")                                   \
	X(SCARD_E_CANCELLED, "Command cancelled.")                                     \
	X(SCARD_E_INVALID_HANDLE, "Invalid handle.")                                   \
	X(SCARD_E_INVALID_PARAMETER, "Invalid parameter given.")                       \
	X(SCARD_E_INVALID_TARGET, "Invalid target given.")                             \
	X(SCARD_E_NO_MEMORY, "Not enough memory.")                                     \
	X(SCARD_F_WAITED_TOO_LONG, "Waited too long.")                                 \
	X(SCARD_E_INSUFFICIENT_BUFFER, "Insufficient buffer.")                         \
	X(SCARD_E_UNKNOWN_READER, "Unknown reader specified.")                         \
	X(SCARD_E_TIMEOUT, "Command timeout.")                                         \
	X(SCARD_E_SHARING_VIOLATION, "Sharing violation.")                             \
	X(SCARD_E_NO_SMARTCARD, "No smart card inserted.")                             \
	X(SCARD_E_UNKNOWN_CARD, "Unknown card.")                                       \
	X(SCARD_E_CANT_DISPOSE, "Cannot dispose handle.")                              \
	X(SCARD_E_PROTO_MISMATCH, "Card protocol mismatch.")                           \
	X(SCARD_E_NOT_READY, "Subsystem not ready.")                                   \
	X(SCARD_E_INVALID_VALUE, "Invalid value given.")                               \
	X(SCARD_E_SYSTEM_CANCELLED, "System cancelled.")                               \
	X(SCARD_F_COMM_ERROR, "RPC transport error.")                                  \
	X(SCARD_F_UNKNOWN_ERROR, "Unknown error.")                                     \
	X(SCARD_E_INVALID_ATR, "Invalid ATR.")                                         \
	X(SCARD_E_NOT_TRANSACTED, "Transaction failed.")                               \
	X(SCARD_E_READER_UNAVAILABLE, "Reader is unavailable.")                        \
	X(SCARD_P_SHUTDOWN, NULL)                                                      \
	X(SCARD_E_PCI_TOO_SMALL, "PCI struct too small.")                              \
	X(SCARD_E_READER_UNSUPPORTED, "Reader is unsupported.")                        \
	X(SCARD_E_DUPLICATE_READER, "Reader already exists.")                          \
	X(SCARD_E_CARD_UNSUPPORTED, "Card is unsupported.")                            \
	X(SCARD_E_NO_SERVICE, "Service not available.")                                \
	X(SCARD_E_SERVICE_STOPPED, "Service was stopped.")                             \
	X(SCARD_E_UNSUPPORTED_FEATURE, "Feature not supported.")                       \
	X(SCARD_E_ICC_INSTALLATION, NULL)                                              \
	X(SCARD_E_ICC_CREATEORDER, NULL)                                               \
	X(SCARD_E_DIR_NOT_FOUND, NULL)                                                 \
	X(SCARD_E_FILE_NOT_FOUND, NULL)                                                \
	X(SCARD_E_NO_DIR, NULL)                                                        \
	X(SCARD_E_NO_FILE, NULL)                                                       \
	X(SCARD_E_NO_ACCESS, NULL)                                                     \
	X(SCARD_E_WRITE_TOO_MANY, NULL)                                                \
	X(SCARD_E_BAD_SEEK, NULL)                                                      \
	X(SCARD_E_INVALID_CHV, NULL)                                                   \
	X(SCARD_E_UNKNOWN_RES_MSG, NULL)                                               \
	X(SCARD_E_NO_SUCH_CERTIFICATE, NULL)                                           \
	X(SCARD_E_CERTIFICATE_UNAVAILABLE, NULL)                                       \
	X(SCARD_E_NO_READERS_AVAILABLE, "Cannot find a smart card reader.")            \
	X(SCARD_E_COMM_DATA_LOST, NULL)                                                \
	X(SCARD_E_NO_KEY_CONTAINER, NULL)                                              \
	X(SCARD_E_SERVER_TOO_BUSY, NULL)                                               \
	X(SCARD_W_UNSUPPORTED_CARD, "Card is not supported.")                          \
	X(SCARD_W_UNRESPONSIVE_CARD, "Card is unresponsive.")                          \
	X(SCARD_W_UNPOWERED_CARD, "Card is unpowered.")                                \
	X(SCARD_W_RESET_CARD, "Card was reset.")                                       \
	X(SCARD_W_REMOVED_CARD, "Card was removed.")                                   \
	X(SCARD_W_SECURITY_VIOLATION, "Access denied.")                                \
	X(SCARD_W_WRONG_CHV, NULL)                                                     \
	X(SCARD_W_CHV_BLOCKED, NULL)                                                   \
	X(SCARD_W_EOF, NULL)                                                           \
	X(SCARD_W_CANCELLED_BY_USER, NULL)                                             \
	X(SCARD_W_CARD_NOT_AUTHENTICATED, NULL)

#endif /* CALAIS_ERROR_LIST_H */
