/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* PC/SC handle types, structures, return codes and flags, with the names, values and
 * layouts of pcsc-lite's <pcsclite.h>, so pcsc-lite programs build and link unchanged. */

/* pcsc-lite's guard name, kept so that this copy and pcsc-lite's never both apply. */
#ifndef __pcsclite_h__
#define __pcsclite_h__

#include "wintypes.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks every exported function and object. Empty for the static library; the
 * shared, libpcsclite.so.1-compatible build defines it to export them. */
#ifndef CALAIS_PCSC_API
#define CALAIS_PCSC_API
#endif

/* ---- handles ------------------------------------------------------------------ */

/* Both are LONG-sized integers, not pointers: pcsc-lite passes them as numbers. */
typedef LONG SCARDCONTEXT;
typedef SCARDCONTEXT *PSCARDCONTEXT;
typedef SCARDCONTEXT *LPSCARDCONTEXT;

typedef LONG SCARDHANDLE;
typedef SCARDHANDLE *PSCARDHANDLE;
typedef SCARDHANDLE *LPSCARDHANDLE;

/* ---- structures --------------------------------------------------------------- */

/* Longest answer-to-reset ISO 7816-3 allows: TS + 32 bytes. */
#define MAX_ATR_SIZE 33

#ifndef SCARD_ATR_LENGTH
#define SCARD_ATR_LENGTH MAX_ATR_SIZE
#endif

/* Only on macOS are these two structures packed (Apple's framework does so). */
#if defined(__APPLE__)
#pragma pack(1)
#endif

/* One reader watched by SCardGetStatusChange(). 80 bytes on LP64 Linux, with 7
 * bytes of tail padding after rgbAtr. */
typedef struct {
	const char *szReader;
	void *pvUserData;
	DWORD dwCurrentState;
	DWORD dwEventState;
	DWORD cbAtr;
	unsigned char rgbAtr[MAX_ATR_SIZE];
} SCARD_READERSTATE, *LPSCARD_READERSTATE;

/* Protocol control information for SCardTransmit(). The members are plain unsigned
 * long even on macOS, where DWORD is 32 bits: pcsc-lite declares them that way. */
typedef struct {
	unsigned long dwProtocol;
	unsigned long cbPciLength;
} SCARD_IO_REQUEST, *PSCARD_IO_REQUEST, *LPSCARD_IO_REQUEST;

typedef const SCARD_IO_REQUEST *LPCSCARD_IO_REQUEST;

/* The three PCI objects are data symbols of the library (lib/pci.c). */
extern CALAIS_PCSC_API const SCARD_IO_REQUEST g_rgSCardT0Pci, g_rgSCardT1Pci,
	g_rgSCardRawPci;

#if defined(__APPLE__)
#pragma pack()
#endif

#define SCARD_PCI_T0 (&g_rgSCardT0Pci)
#define SCARD_PCI_T1 (&g_rgSCardT1Pci)
#define SCARD_PCI_RAW (&g_rgSCardRawPci)

/* ---- return codes -------------------------------------------------------------- */

/* The Windows values, typed LONG. Two differences from Windows are pcsc-lite's and
 * must stay: SCARD_E_UNSUPPORTED_FEATURE is 0x8010001F (it shares SCARD_E_UNEXPECTED's
 * value; Windows uses 0x80100022, which nothing here defines), and 0x8010002B has two
 * spellings (MNG is the historical typo pcsc-lite 2.x keeps as an alias). */
#define SCARD_S_SUCCESS                 ((LONG)0x00000000)

#define SCARD_F_INTERNAL_ERROR          ((LONG)0x80100001)
#define SCARD_E_CANCELLED               ((LONG)0x80100002)
#define SCARD_E_INVALID_HANDLE          ((LONG)0x80100003)
#define SCARD_E_INVALID_PARAMETER       ((LONG)0x80100004)
#define SCARD_E_INVALID_TARGET          ((LONG)0x80100005)
#define SCARD_E_NO_MEMORY               ((LONG)0x80100006)
#define SCARD_F_WAITED_TOO_LONG         ((LONG)0x80100007)
#define SCARD_E_INSUFFICIENT_BUFFER     ((LONG)0x80100008)
#define SCARD_E_UNKNOWN_READER          ((LONG)0x80100009)
#define SCARD_E_TIMEOUT                 ((LONG)0x8010000A)
#define SCARD_E_SHARING_VIOLATION       ((LONG)0x8010000B)
#define SCARD_E_NO_SMARTCARD            ((LONG)0x8010000C)
#define SCARD_E_UNKNOWN_CARD            ((LONG)0x8010000D)
#define SCARD_E_CANT_DISPOSE            ((LONG)0x8010000E)
#define SCARD_E_PROTO_MISMATCH          ((LONG)0x8010000F)
#define SCARD_E_NOT_READY               ((LONG)0x80100010)
#define SCARD_E_INVALID_VALUE           ((LONG)0x80100011)
#define SCARD_E_SYSTEM_CANCELLED        ((LONG)0x80100012)
#define SCARD_F_COMM_ERROR              ((LONG)0x80100013)
#define SCARD_F_UNKNOWN_ERROR           ((LONG)0x80100014)
#define SCARD_E_INVALID_ATR             ((LONG)0x80100015)
#define SCARD_E_NOT_TRANSACTED          ((LONG)0x80100016)
#define SCARD_E_READER_UNAVAILABLE      ((LONG)0x80100017)
#define SCARD_P_SHUTDOWN                ((LONG)0x80100018)
#define SCARD_E_PCI_TOO_SMALL           ((LONG)0x80100019)
#define SCARD_E_READER_UNSUPPORTED      ((LONG)0x8010001A)
#define SCARD_E_DUPLICATE_READER        ((LONG)0x8010001B)
#define SCARD_E_CARD_UNSUPPORTED        ((LONG)0x8010001C)
#define SCARD_E_NO_SERVICE              ((LONG)0x8010001D)
#define SCARD_E_SERVICE_STOPPED         ((LONG)0x8010001E)
#define SCARD_E_UNEXPECTED              ((LONG)0x8010001F)
#define SCARD_E_UNSUPPORTED_FEATURE     ((LONG)0x8010001F)
#define SCARD_E_ICC_INSTALLATION        ((LONG)0x80100020)
#define SCARD_E_ICC_CREATEORDER         ((LONG)0x80100021)
#define SCARD_E_DIR_NOT_FOUND           ((LONG)0x80100023)
#define SCARD_E_FILE_NOT_FOUND          ((LONG)0x80100024)
#define SCARD_E_NO_DIR                  ((LONG)0x80100025)
#define SCARD_E_NO_FILE                 ((LONG)0x80100026)
#define SCARD_E_NO_ACCESS               ((LONG)0x80100027)
#define SCARD_E_WRITE_TOO_MANY          ((LONG)0x80100028)
#define SCARD_E_BAD_SEEK                ((LONG)0x80100029)
#define SCARD_E_INVALID_CHV             ((LONG)0x8010002A)
#define SCARD_E_UNKNOWN_RES_MSG         ((LONG)0x8010002B)
#define SCARD_E_UNKNOWN_RES_MNG         SCARD_E_UNKNOWN_RES_MSG
#define SCARD_E_NO_SUCH_CERTIFICATE     ((LONG)0x8010002C)
#define SCARD_E_CERTIFICATE_UNAVAILABLE ((LONG)0x8010002D)
#define SCARD_E_NO_READERS_AVAILABLE    ((LONG)0x8010002E)
#define SCARD_E_COMM_DATA_LOST          ((LONG)0x8010002F)
#define SCARD_E_NO_KEY_CONTAINER        ((LONG)0x80100030)
#define SCARD_E_SERVER_TOO_BUSY         ((LONG)0x80100031)

#define SCARD_W_UNSUPPORTED_CARD        ((LONG)0x80100065)
#define SCARD_W_UNRESPONSIVE_CARD       ((LONG)0x80100066)
#define SCARD_W_UNPOWERED_CARD          ((LONG)0x80100067)
#define SCARD_W_RESET_CARD              ((LONG)0x80100068)
#define SCARD_W_REMOVED_CARD            ((LONG)0x80100069)
#define SCARD_W_SECURITY_VIOLATION      ((LONG)0x8010006A)
#define SCARD_W_WRONG_CHV               ((LONG)0x8010006B)
#define SCARD_W_CHV_BLOCKED             ((LONG)0x8010006C)
#define SCARD_W_EOF                     ((LONG)0x8010006D)
#define SCARD_W_CANCELLED_BY_USER       ((LONG)0x8010006E)
#define SCARD_W_CARD_NOT_AUTHENTICATED  ((LONG)0x8010006F)

/* ---- arguments and flags -------------------------------------------------------- */

/* Passed as a buffer length: the library allocates the buffer and stores its address
 * in the buffer argument; release it with SCardFreeMemory(). */
#define SCARD_AUTOALLOCATE (DWORD)(-1)

/* SCardEstablishContext() dwScope. */
#define SCARD_SCOPE_USER     0x0000
#define SCARD_SCOPE_TERMINAL 0x0001
#define SCARD_SCOPE_SYSTEM   0x0002
#define SCARD_SCOPE_GLOBAL   0x0003

/* Protocol bits for SCardConnect()/SCardReconnect() and SCARD_IO_REQUEST. */
#define SCARD_PROTOCOL_UNDEFINED 0x0000
#define SCARD_PROTOCOL_UNSET     SCARD_PROTOCOL_UNDEFINED /* older spelling */
#define SCARD_PROTOCOL_T0        0x0001
#define SCARD_PROTOCOL_T1        0x0002
#define SCARD_PROTOCOL_RAW       0x0004
#define SCARD_PROTOCOL_T15       0x0008
#define SCARD_PROTOCOL_ANY       (SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)

/* SCardConnect()/SCardReconnect() dwShareMode. */
#define SCARD_SHARE_EXCLUSIVE 0x0001
#define SCARD_SHARE_SHARED    0x0002
#define SCARD_SHARE_DIRECT    0x0003

/* What to do to the card on disconnect, end of transaction or reconnect. */
#define SCARD_LEAVE_CARD   0x0000
#define SCARD_RESET_CARD   0x0001
#define SCARD_UNPOWER_CARD 0x0002
#define SCARD_EJECT_CARD   0x0003

/* SCardStatus() card state: bits in pcsc-lite, where Windows has an enumeration. */
#define SCARD_UNKNOWN    0x0001
#define SCARD_ABSENT     0x0002
#define SCARD_PRESENT    0x0004
#define SCARD_SWALLOWED  0x0008
#define SCARD_POWERED    0x0010
#define SCARD_NEGOTIABLE 0x0020
#define SCARD_SPECIFIC   0x0040

/* SCARD_READERSTATE dwCurrentState/dwEventState bits; the high 16 bits of
 * dwEventState count card events. */
#define SCARD_STATE_UNAWARE     0x0000
#define SCARD_STATE_IGNORE      0x0001
#define SCARD_STATE_CHANGED     0x0002
#define SCARD_STATE_UNKNOWN     0x0004
#define SCARD_STATE_UNAVAILABLE 0x0008
#define SCARD_STATE_EMPTY       0x0010
#define SCARD_STATE_PRESENT     0x0020
#define SCARD_STATE_ATRMATCH    0x0040
#define SCARD_STATE_EXCLUSIVE   0x0080
#define SCARD_STATE_INUSE       0x0100
#define SCARD_STATE_MUTE        0x0200
#define SCARD_STATE_UNPOWERED   0x0400

/* SCardGetStatusChange() timeout meaning "wait for ever". Guarded because
 * <windows.h>-style headers define it too. */
#ifndef INFINITE
#define INFINITE 0xFFFFFFFF
#endif

/* ---- limits and version ------------------------------------------------------------ */

/* The pcsc-lite release whose API and ABI Calais reproduces and is tested against. */
#define PCSCLITE_VERSION_NUMBER "1.9.9"

/* pcsc-lite's reader limit. Kept for programs that size arrays with it. */
#define PCSCLITE_MAX_READERS_CONTEXTS 16

/* Longest reader name, terminating NUL included. */
#define MAX_READERNAME 128

/* APDU buffers: short (256 data + header and status), and extended:
 * header 4 + Lc 3 + 64 KiB data + Le 3 + SW 2. */
#define MAX_BUFFER_SIZE          264
#define MAX_BUFFER_SIZE_EXTENDED (4 + 3 + (1 << 16) + 3 + 2)

/* ---- functions ------------------------------------------------------------------ */

/* Text for a return code, e.g. "Command timeout.", or "Unknown error: 0x%08lX". It
 * lives in a buffer of the calling thread, overwritten by that thread's next call. */
extern CALAIS_PCSC_API const char *pcsc_stringify_error(const LONG);

#ifdef __cplusplus
}
#endif

#endif /* __pcsclite_h__ */
