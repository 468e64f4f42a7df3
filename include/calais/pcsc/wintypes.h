/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Windows-style scalar and pointer type names the PC/SC API is written in, sized as
 * pcsc-lite sizes them, so Calais needs no pcsc-lite header. */

/* The guard is pcsc-lite's own, on purpose: whichever copy a program includes first
 * wins, and the other cannot redefine the types. */
#ifndef __wintypes_h__
#define __wintypes_h__

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sizes are the whole point of this file.
 *
 * Linux, the BSDs and every other non-Apple system: DWORD, ULONG and LONG are C longs,
 * so 8 bytes on LP64. This is pcsc-lite's ABI (not Windows'), and libpcsclite.so.1
 * callers depend on it.
 *
 * macOS: Apple's PCSC.framework uses fixed 32-bit types and packs its structures;
 * pcsc-lite follows it there, and so do we.
 *
 * Windows (_WIN32): not a pcsc-lite platform. We give the same names with the
 * non-Apple definitions; long is 32 bits on Windows, so DWORD and LONG come out the
 * width winscard.dll uses. BOOL is an int there, as <windows.h> has it: the library
 * includes <windows.h> (WIN32_LEAN_AND_MEAN, so never its <winscard.h>) after this
 * file, and C11 accepts a typedef repeated with the same type.
 */

#if defined(__APPLE__)

#include <stdint.h>

/* Some headers (and older Apple SDKs) already define BYTE as a macro. */
#ifndef BYTE
typedef uint8_t BYTE;
#endif
typedef uint8_t UCHAR;
typedef uint16_t USHORT;
typedef uint16_t WORD;
typedef uint32_t DWORD;
typedef int32_t LONG;

/* CoreFoundation's CFPlugInCOM.h defines these three itself. */
#ifndef __COREFOUNDATION_CFPLUGINCOM__
typedef int16_t BOOL;
typedef uint32_t ULONG;
typedef void *LPVOID;
#endif

#else /* !__APPLE__ */

#ifndef BYTE
typedef unsigned char BYTE;
#endif
typedef unsigned char UCHAR;
typedef unsigned short USHORT;
typedef unsigned short WORD;
#if defined(_WIN32)
typedef int BOOL;
#else
typedef short BOOL;
#endif
typedef unsigned long DWORD;
typedef long LONG;

#ifndef __COREFOUNDATION_CFPLUGINCOM__
typedef unsigned long ULONG;
typedef void *LPVOID;
#endif

#endif /* __APPLE__ */

/* Pointer names, the same on every platform. */
typedef UCHAR *PUCHAR;
typedef ULONG *PULONG;
typedef DWORD *PDWORD;
typedef DWORD *LPDWORD;
typedef BYTE *LPBYTE;
typedef const BYTE *LPCBYTE;
typedef const void *LPCVOID;
typedef char *LPSTR;
typedef const char *LPCSTR;

#if !defined(__APPLE__)
/* The "T" (TCHAR) spellings: deprecated, but old drivers and applications still use
 * them. pcsc-lite has them everywhere but macOS, so we follow. */
typedef LPSTR LPTSTR;
typedef LPCSTR LPCTSTR;
#endif

#ifdef __cplusplus
}
#endif

#endif /* __wintypes_h__ */
