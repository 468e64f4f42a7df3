/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Windows-style scalar types of the PC/SC API, with pcsc-lite's sizes: on Linux and
 * the BSDs DWORD and LONG are C longs (8 bytes on LP64); on macOS they are 32-bit, as in
 * Apple's PC/SC framework. Calais' own copy, so no pcsc-lite header is needed. */
#ifndef __wintypes_h__
#define __wintypes_h__

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__APPLE__)
#include <stdint.h>

#ifndef BYTE
typedef uint8_t BYTE;
#endif
typedef uint8_t UCHAR;
typedef UCHAR *PUCHAR;
typedef uint16_t USHORT;
#ifndef __COREFOUNDATION_CFPLUGINCOM__
typedef uint32_t ULONG;
typedef void *LPVOID;
typedef int16_t BOOL;
#endif
typedef ULONG *PULONG;
typedef const void *LPCVOID;
typedef uint32_t DWORD;
typedef DWORD *PDWORD;
typedef uint16_t WORD;
typedef int32_t LONG;
typedef const char *LPCSTR;
typedef const BYTE *LPCBYTE;
typedef BYTE *LPBYTE;
typedef DWORD *LPDWORD;
typedef char *LPSTR;

#else

#ifndef BYTE
typedef unsigned char BYTE;
#endif
typedef unsigned char UCHAR;
typedef UCHAR *PUCHAR;
typedef unsigned short USHORT;
#ifndef __COREFOUNDATION_CFPLUGINCOM__
typedef unsigned long ULONG;
typedef void *LPVOID;
#endif
typedef const void *LPCVOID;
typedef unsigned long DWORD;
typedef DWORD *PDWORD;
typedef long LONG;
typedef const char *LPCSTR;
typedef const BYTE *LPCBYTE;
typedef BYTE *LPBYTE;
typedef DWORD *LPDWORD;
typedef char *LPSTR;

/* Deprecated names that old drivers and applications still use. */
typedef LPSTR LPTSTR;
typedef LPCSTR LPCTSTR;
typedef short BOOL;
typedef unsigned short WORD;
typedef ULONG *PULONG;

#endif

#ifdef __cplusplus
}
#endif

#endif /* __wintypes_h__ */
