/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The eighteen SCard* functions of the PC/SC API, with pcsc-lite's exact prototypes,
 * served by Calais' in-process resource manager. */

/* pcsc-lite's guard name, kept so that this copy and pcsc-lite's never both apply.
 * tests/abi/abi_protos.c relies on it: it includes pcsc-lite's headers, then this file,
 * whose only effect is then to redeclare the functions below against pcsc-lite's
 * types, so any difference in a prototype is a compile error. */
#ifndef __winscard_h__
#define __winscard_h__

#include "pcsclite.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Normally set by pcsclite.h; repeated for the case above, where pcsc-lite's
 * pcsclite.h was included instead of ours. */
#ifndef CALAIS_PCSC_API
#define CALAIS_PCSC_API
#endif

/* pcsc-lite's own export marker. Defined (empty) only because pcsc-lite's header
 * defines it and some code tests for it; ours is CALAIS_PCSC_API. */
#ifndef PCSC_API
#define PCSC_API
#endif

/* ---- contexts ---------------------------------------------------------------------- */

CALAIS_PCSC_API LONG SCardEstablishContext(DWORD dwScope, LPCVOID pvReserved1,
                                           LPCVOID pvReserved2, LPSCARDCONTEXT phContext);
CALAIS_PCSC_API LONG SCardReleaseContext(SCARDCONTEXT hContext);
CALAIS_PCSC_API LONG SCardIsValidContext(SCARDCONTEXT hContext);
CALAIS_PCSC_API LONG SCardCancel(SCARDCONTEXT hContext);
CALAIS_PCSC_API LONG SCardFreeMemory(SCARDCONTEXT hContext, LPCVOID pvMem);

/* ---- readers ----------------------------------------------------------------------- */

CALAIS_PCSC_API LONG SCardListReaderGroups(SCARDCONTEXT hContext, LPSTR mszGroups,
                                           LPDWORD pcchGroups);
CALAIS_PCSC_API LONG SCardListReaders(SCARDCONTEXT hContext, LPCSTR mszGroups,
                                      LPSTR mszReaders, LPDWORD pcchReaders);
/* rgReaderStates is a plain pointer, not LPSCARD_READERSTATE: the same type, but this
 * is how pcsc-lite spells it. */
CALAIS_PCSC_API LONG SCardGetStatusChange(SCARDCONTEXT hContext, DWORD dwTimeout,
                                          SCARD_READERSTATE *rgReaderStates,
                                          DWORD cReaders);

/* ---- cards ------------------------------------------------------------------------- */

CALAIS_PCSC_API LONG SCardConnect(SCARDCONTEXT hContext, LPCSTR szReader,
                                  DWORD dwShareMode, DWORD dwPreferredProtocols,
                                  LPSCARDHANDLE phCard, LPDWORD pdwActiveProtocol);
CALAIS_PCSC_API LONG SCardReconnect(SCARDHANDLE hCard, DWORD dwShareMode,
                                    DWORD dwPreferredProtocols, DWORD dwInitialization,
                                    LPDWORD pdwActiveProtocol);
CALAIS_PCSC_API LONG SCardDisconnect(SCARDHANDLE hCard, DWORD dwDisposition);
CALAIS_PCSC_API LONG SCardBeginTransaction(SCARDHANDLE hCard);
CALAIS_PCSC_API LONG SCardEndTransaction(SCARDHANDLE hCard, DWORD dwDisposition);
CALAIS_PCSC_API LONG SCardStatus(SCARDHANDLE hCard, LPSTR mszReaderName,
                                 LPDWORD pcchReaderLen, LPDWORD pdwState,
                                 LPDWORD pdwProtocol, LPBYTE pbAtr, LPDWORD pcbAtrLen);
CALAIS_PCSC_API LONG SCardTransmit(SCARDHANDLE hCard, const SCARD_IO_REQUEST *pioSendPci,
                                   LPCBYTE pbSendBuffer, DWORD cbSendLength,
                                   SCARD_IO_REQUEST *pioRecvPci, LPBYTE pbRecvBuffer,
                                   LPDWORD pcbRecvLength);
CALAIS_PCSC_API LONG SCardControl(SCARDHANDLE hCard, DWORD dwControlCode,
                                  LPCVOID pbSendBuffer, DWORD cbSendLength,
                                  LPVOID pbRecvBuffer, DWORD cbRecvLength,
                                  LPDWORD lpBytesReturned);
CALAIS_PCSC_API LONG SCardGetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPBYTE pbAttr,
                                    LPDWORD pcbAttrLen);
CALAIS_PCSC_API LONG SCardSetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPCBYTE pbAttr,
                                    DWORD cbAttrLen);

#ifdef __cplusplus
}
#endif

#endif /* __winscard_h__ */
