/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reader attribute tags (SCardGetAttrib), SCardControl codes and the PC/SC part 10
 * feature tags and secure-PIN structures, with pcsc-lite's <reader.h> names, values and
 * byte layouts. */

/* pcsc-lite's guard name, kept so that this copy and pcsc-lite's never both apply. */
#ifndef __reader_h__
#define __reader_h__

/* inttypes.h rather than stdint.h: pcsc-lite's header pulls it in, and programs that
 * print these fields with PRIu32 and friends rely on that. */
#include <inttypes.h>

#include "wintypes.h"

/* ---- attributes ------------------------------------------------------------------- */

/* An attribute id: its class in the high 16 bits, its tag in the low 16. */
#define SCARD_ATTR_VALUE(Class, Tag) ((((ULONG)(Class)) << 16) | ((ULONG)(Tag)))

#define SCARD_CLASS_VENDOR_INFO    1
#define SCARD_CLASS_COMMUNICATIONS 2
#define SCARD_CLASS_PROTOCOL       3
#define SCARD_CLASS_POWER_MGMT     4
#define SCARD_CLASS_SECURITY       5
#define SCARD_CLASS_MECHANICAL     6
#define SCARD_CLASS_VENDOR_DEFINED 7
#define SCARD_CLASS_IFD_PROTOCOL   8
#define SCARD_CLASS_ICC_STATE      9
#define SCARD_CLASS_SYSTEM         0x7fff

/* Who made the reader. */
#define SCARD_ATTR_VENDOR_NAME          SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_INFO, 0x0100)
#define SCARD_ATTR_VENDOR_IFD_TYPE      SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_INFO, 0x0101)
#define SCARD_ATTR_VENDOR_IFD_VERSION   SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_INFO, 0x0102)
#define SCARD_ATTR_VENDOR_IFD_SERIAL_NO SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_INFO, 0x0103)

/* What the reader can do. */
#define SCARD_ATTR_CHANNEL_ID               SCARD_ATTR_VALUE(SCARD_CLASS_COMMUNICATIONS, 0x0110)
#define SCARD_ATTR_ASYNC_PROTOCOL_TYPES     SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0120)
#define SCARD_ATTR_DEFAULT_CLK              SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0121)
#define SCARD_ATTR_MAX_CLK                  SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0122)
#define SCARD_ATTR_DEFAULT_DATA_RATE        SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0123)
#define SCARD_ATTR_MAX_DATA_RATE            SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0124)
#define SCARD_ATTR_MAX_IFSD                 SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0125)
#define SCARD_ATTR_SYNC_PROTOCOL_TYPES      SCARD_ATTR_VALUE(SCARD_CLASS_PROTOCOL, 0x0126)
#define SCARD_ATTR_POWER_MGMT_SUPPORT       SCARD_ATTR_VALUE(SCARD_CLASS_POWER_MGMT, 0x0131)
#define SCARD_ATTR_USER_TO_CARD_AUTH_DEVICE SCARD_ATTR_VALUE(SCARD_CLASS_SECURITY, 0x0140)
#define SCARD_ATTR_USER_AUTH_INPUT_DEVICE   SCARD_ATTR_VALUE(SCARD_CLASS_SECURITY, 0x0142)
#define SCARD_ATTR_CHARACTERISTICS          SCARD_ATTR_VALUE(SCARD_CLASS_MECHANICAL, 0x0150)

/* The protocol in use with the current card. */
#define SCARD_ATTR_CURRENT_PROTOCOL_TYPE SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0201)
#define SCARD_ATTR_CURRENT_CLK           SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0202)
#define SCARD_ATTR_CURRENT_F             SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0203)
#define SCARD_ATTR_CURRENT_D             SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0204)
#define SCARD_ATTR_CURRENT_N             SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0205)
#define SCARD_ATTR_CURRENT_W             SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0206)
#define SCARD_ATTR_CURRENT_IFSC          SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0207)
#define SCARD_ATTR_CURRENT_IFSD          SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0208)
#define SCARD_ATTR_CURRENT_BWT           SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x0209)
#define SCARD_ATTR_CURRENT_CWT           SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x020A)
#define SCARD_ATTR_CURRENT_EBC_ENCODING  SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x020B)
#define SCARD_ATTR_EXTENDED_BWT          SCARD_ATTR_VALUE(SCARD_CLASS_IFD_PROTOCOL, 0x020C)

/* The card in the slot. */
#define SCARD_ATTR_ICC_PRESENCE         SCARD_ATTR_VALUE(SCARD_CLASS_ICC_STATE, 0x0300)
#define SCARD_ATTR_ICC_INTERFACE_STATUS SCARD_ATTR_VALUE(SCARD_CLASS_ICC_STATE, 0x0301)
#define SCARD_ATTR_CURRENT_IO_STATE     SCARD_ATTR_VALUE(SCARD_CLASS_ICC_STATE, 0x0302)
#define SCARD_ATTR_ATR_STRING           SCARD_ATTR_VALUE(SCARD_CLASS_ICC_STATE, 0x0303)
#define SCARD_ATTR_ICC_TYPE_PER_ATR     SCARD_ATTR_VALUE(SCARD_CLASS_ICC_STATE, 0x0304)

#define SCARD_ATTR_ESC_RESET       SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_DEFINED, 0xA000)
#define SCARD_ATTR_ESC_CANCEL      SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_DEFINED, 0xA003)
#define SCARD_ATTR_ESC_AUTHREQUEST SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_DEFINED, 0xA005)
#define SCARD_ATTR_MAXINPUT        SCARD_ATTR_VALUE(SCARD_CLASS_VENDOR_DEFINED, 0xA007)

/* The system's view of the reader. "SUPRESS" is misspelt in every PC/SC header. */
#define SCARD_ATTR_DEVICE_UNIT             SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0001)
#define SCARD_ATTR_DEVICE_IN_USE           SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0002)
#define SCARD_ATTR_DEVICE_FRIENDLY_NAME_A  SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0003)
#define SCARD_ATTR_DEVICE_SYSTEM_NAME_A    SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0004)
#define SCARD_ATTR_DEVICE_FRIENDLY_NAME_W  SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0005)
#define SCARD_ATTR_DEVICE_SYSTEM_NAME_W    SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0006)
#define SCARD_ATTR_SUPRESS_T1_IFS_REQUEST  SCARD_ATTR_VALUE(SCARD_CLASS_SYSTEM, 0x0007)

/* The unsuffixed names follow UNICODE, as on Windows. */
#ifdef UNICODE
#define SCARD_ATTR_DEVICE_FRIENDLY_NAME SCARD_ATTR_DEVICE_FRIENDLY_NAME_W
#define SCARD_ATTR_DEVICE_SYSTEM_NAME   SCARD_ATTR_DEVICE_SYSTEM_NAME_W
#else
#define SCARD_ATTR_DEVICE_FRIENDLY_NAME SCARD_ATTR_DEVICE_FRIENDLY_NAME_A
#define SCARD_ATTR_DEVICE_SYSTEM_NAME   SCARD_ATTR_DEVICE_SYSTEM_NAME_A
#endif

/* ---- SCardControl() codes and part 10 features ----------------------------------------- */

/* pcsc-lite's control code space; Windows instead builds these with
 * CTL_CODE(FILE_DEVICE_SMARTCARD, code, METHOD_BUFFERED, FILE_ANY_ACCESS). */
#define SCARD_CTL_CODE(code) (0x42000000 + (code))

/* Returns the reader's features as TLVs: tag (FEATURE_*), length 4, control code. */
#define CM_IOCTL_GET_FEATURE_REQUEST SCARD_CTL_CODE(3400)

#define FEATURE_VERIFY_PIN_START         0x01
#define FEATURE_VERIFY_PIN_FINISH        0x02
#define FEATURE_MODIFY_PIN_START         0x03
#define FEATURE_MODIFY_PIN_FINISH        0x04
#define FEATURE_GET_KEY_PRESSED          0x05
#define FEATURE_VERIFY_PIN_DIRECT        0x06
#define FEATURE_MODIFY_PIN_DIRECT        0x07
#define FEATURE_MCT_READER_DIRECT        0x08
#define FEATURE_MCT_UNIVERSAL            0x09
#define FEATURE_IFD_PIN_PROPERTIES       0x0A
#define FEATURE_ABORT                    0x0B
#define FEATURE_SET_SPE_MESSAGE          0x0C
#define FEATURE_VERIFY_PIN_DIRECT_APP_ID 0x0D
#define FEATURE_MODIFY_PIN_DIRECT_APP_ID 0x0E
#define FEATURE_WRITE_DISPLAY            0x0F
#define FEATURE_GET_KEY                  0x10
#define FEATURE_IFD_DISPLAY_PROPERTIES   0x11
#define FEATURE_GET_TLV_PROPERTIES       0x12
#define FEATURE_CCID_ESC_COMMAND         0x13 /* pcsc-lite/libccid addition */
#define FEATURE_EXECUTE_PACE             0x20 /* PC/SC part 10 amendment 1 */

/* Tags of the TLVs FEATURE_GET_TLV_PROPERTIES returns; the prefix letter of each name
 * gives the value's type (b: byte, w: 16-bit, dw: 32-bit, s: string). */
#define PCSCv2_PART10_PROPERTY_wLcdLayout                1
#define PCSCv2_PART10_PROPERTY_bEntryValidationCondition 2
#define PCSCv2_PART10_PROPERTY_bTimeOut2                 3
#define PCSCv2_PART10_PROPERTY_wLcdMaxCharacters         4
#define PCSCv2_PART10_PROPERTY_wLcdMaxLines              5
#define PCSCv2_PART10_PROPERTY_bMinPINSize               6
#define PCSCv2_PART10_PROPERTY_bMaxPINSize               7
#define PCSCv2_PART10_PROPERTY_sFirmwareID               8
#define PCSCv2_PART10_PROPERTY_bPPDUSupport              9
#define PCSCv2_PART10_PROPERTY_dwMaxAPDUDataSize         10
#define PCSCv2_PART10_PROPERTY_wIdVendor                 11
#define PCSCv2_PART10_PROPERTY_wIdProduct                12

/* Byte-order helpers for the structures below. The CCID driver accepts host order
 * since long ago, so both are identities; kept for old callers. */
#define HOST_TO_CCID_16(x) (x)
#define HOST_TO_CCID_32(x) (x)

/* ---- part 10 structures ------------------------------------------------------------ */

/* These go to the reader as raw bytes, so no padding anywhere. Some older compilers
 * (Apple's, Sun's, NetBSD's) know only the plain pack(n) form. */
#if defined(__APPLE__) || defined(sun) || defined(__NetBSD__)
#pragma pack(1)
#else
#pragma pack(push, 1)
#endif

/* One entry of the CM_IOCTL_GET_FEATURE_REQUEST answer: 6 bytes. */
typedef struct {
	uint8_t tag;
	uint8_t length;
	uint32_t value; /* the control code, big endian on the wire (part 10, 2.2) */
} PCSC_TLV_STRUCTURE;

/* C++ has no flexible array members; the zero-length array is the usual extension. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L
#define CALAIS__PCSC_FLEX_ARRAY
#else
#define CALAIS__PCSC_FLEX_ARRAY 0
#endif

/* FEATURE_VERIFY_PIN_DIRECT input: 19 bytes, then the APDU in abData. */
typedef struct {
	uint8_t bTimerOut;                 /* seconds; 0: the reader's default */
	uint8_t bTimerOut2;                /* seconds after the first key */
	uint8_t bmFormatString;
	uint8_t bmPINBlockString;
	uint8_t bmPINLengthFormat;
	uint16_t wPINMaxExtraDigit;        /* min digits << 8 | max digits */
	uint8_t bEntryValidationCondition;
	uint8_t bNumberMessage;
	uint16_t wLangId;
	uint8_t bMsgIndex;
	uint8_t bTeoPrologue[3];           /* T=1 prologue; zeros */
	uint32_t ulDataLength;             /* bytes in abData */
	uint8_t abData[CALAIS__PCSC_FLEX_ARRAY];
} PIN_VERIFY_STRUCTURE;

/* FEATURE_MODIFY_PIN_DIRECT input: 24 bytes, then the APDU in abData. */
typedef struct {
	uint8_t bTimerOut;
	uint8_t bTimerOut2;
	uint8_t bmFormatString;
	uint8_t bmPINBlockString;
	uint8_t bmPINLengthFormat;
	uint8_t bInsertionOffsetOld;
	uint8_t bInsertionOffsetNew;
	uint16_t wPINMaxExtraDigit;
	uint8_t bConfirmPIN;
	uint8_t bEntryValidationCondition;
	uint8_t bNumberMessage;
	uint16_t wLangId;
	uint8_t bMsgIndex1;
	uint8_t bMsgIndex2;
	uint8_t bMsgIndex3;
	uint8_t bTeoPrologue[3];
	uint32_t ulDataLength;
	uint8_t abData[CALAIS__PCSC_FLEX_ARRAY];
} PIN_MODIFY_STRUCTURE;

/* FEATURE_IFD_PIN_PROPERTIES answer: 4 bytes. */
typedef struct {
	uint16_t wLcdLayout; /* lines << 8 | characters per line; 0: no display */
	uint8_t bEntryValidationCondition;
	uint8_t bTimeOut2;
} PIN_PROPERTIES_STRUCTURE;

#undef CALAIS__PCSC_FLEX_ARRAY

#if defined(__APPLE__) || defined(sun) || defined(__NetBSD__)
#pragma pack()
#else
#pragma pack(pop)
#endif

#endif /* __reader_h__ */
