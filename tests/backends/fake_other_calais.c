/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A stand-in for another Calais build posing as the platform's PC/SC library: every
 * SCard* the passthrough backend looks up, answering nothing, and the marker answer of
 * pcsc_stringify_error() every Calais build gives. The backend must refuse it. */
#include <winscard.h>

#define NO { return SCARD_E_NO_SERVICE; }
LONG SCardEstablishContext(DWORD a, LPCVOID b, LPCVOID c, LPSCARDCONTEXT d) NO
LONG SCardReleaseContext(SCARDCONTEXT a) NO
LONG SCardListReaders(SCARDCONTEXT a, LPCSTR b, LPSTR c, LPDWORD d) NO
LONG SCardGetStatusChange(SCARDCONTEXT a, DWORD b, SCARD_READERSTATE *c, DWORD d) NO
LONG SCardCancel(SCARDCONTEXT a) NO
LONG SCardConnect(SCARDCONTEXT a, LPCSTR b, DWORD c, DWORD d, LPSCARDHANDLE e, LPDWORD f) NO
LONG SCardReconnect(SCARDHANDLE a, DWORD b, DWORD c, DWORD d, LPDWORD e) NO
LONG SCardDisconnect(SCARDHANDLE a, DWORD b) NO
LONG SCardBeginTransaction(SCARDHANDLE a) NO
LONG SCardEndTransaction(SCARDHANDLE a, DWORD b) NO
LONG SCardStatus(SCARDHANDLE a, LPSTR b, LPDWORD c, LPDWORD d, LPDWORD e, LPBYTE f, LPDWORD g) NO
LONG SCardTransmit(SCARDHANDLE a, const SCARD_IO_REQUEST *b, LPCBYTE c, DWORD d,
                   SCARD_IO_REQUEST *e, LPBYTE f, LPDWORD g) NO
LONG SCardControl(SCARDHANDLE a, DWORD b, LPCVOID c, DWORD d, LPVOID e, DWORD f, LPDWORD g) NO
LONG SCardGetAttrib(SCARDHANDLE a, DWORD b, LPBYTE c, LPDWORD d) NO
LONG SCardSetAttrib(SCARDHANDLE a, DWORD b, LPCBYTE c, DWORD d) NO

const char *pcsc_stringify_error(const LONG rv)
{
	return rv == (LONG)0x43414C53 ? "Calais in-process PC/SC resource manager" : "?";
}
