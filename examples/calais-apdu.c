/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* calais-apdu: sends APDUs given in hex and prints each response and its status word.
 *
 *   calais-apdu [--sim] [-r READER-SUBSTRING] [-p t0|t1|any] APDU...
 *   calais-apdu --sim 00A4000C023F00 "00 B0 00 00 10"
 *
 * Exit status: 0 when every APDU was exchanged (whatever its status word), 1 on a PC/SC
 * error, 2 on a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <winscard.h>
#include <calais/calais.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: calais-apdu [--sim] [-r reader] [-p t0|t1|any] APDU...\n"
	           "  APDU        hex bytes; spaces, tabs and colons allowed (\"00 A4 04 00 00\")\n"
	           "  --sim       use the simulated reader and its demo card\n"
	           "  -r TEXT     use the first reader whose name contains TEXT\n"
	           "  -p P        protocols to accept: t0, t1 or any (the default)\n"
	           "  -h, --help  this text\n");
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses hex with optional separators into a new buffer; false with a message. */
static bool parse_hex(const char *s, BYTE **out, DWORD *len)
{
	size_t digits = 0;
	for (const char *p = s; *p; p++) {
		if (*p == ' ' || *p == ':' || *p == '\t')
			continue;
		if (hex_digit(*p) < 0) {
			fprintf(stderr, "calais-apdu: '%c' is not a hex digit in \"%s\"\n", *p, s);
			return false;
		}
		digits++;
	}
	if (digits % 2) {
		fprintf(stderr, "calais-apdu: odd number of hex digits in \"%s\"\n", s);
		return false;
	}
	size_t n = digits / 2;
	if (n < 4) {
		fprintf(stderr, "calais-apdu: \"%s\" is shorter than an APDU header (4 bytes)\n", s);
		return false;
	}
	if (n > MAX_BUFFER_SIZE_EXTENDED) {
		fprintf(stderr, "calais-apdu: \"%.20s...\" is longer than %d bytes\n", s,
		        MAX_BUFFER_SIZE_EXTENDED);
		return false;
	}
	BYTE *b = malloc(n);
	if (!b) {
		fprintf(stderr, "calais-apdu: out of memory\n");
		return false;
	}
	size_t i = 0;
	int high = -1;
	for (const char *p = s; *p; p++) {
		int v = hex_digit(*p);
		if (v < 0)
			continue;
		if (high < 0) {
			high = v;
		} else {
			b[i++] = (BYTE)(high << 4 | v);
			high = -1;
		}
	}
	*out = b;
	*len = (DWORD)n;
	return true;
}

/* The meaning of a status word (ISO/IEC 7816-4, 5.6), written into buf. */
static const char *sw_meaning(BYTE sw1, BYTE sw2, char *buf, size_t cap)
{
	const char *m = NULL;
	switch (sw1) {
	case 0x90:
		m = sw2 == 0 ? "success" : "success (proprietary)";
		break;
	case 0x61:
		snprintf(buf, cap, "success, %u more bytes to fetch with GET RESPONSE",
		         sw2 ? sw2 : 256);
		return buf;
	case 0x62:
		m = sw2 == 0x81   ? "warning: part of returned data may be corrupted"
		    : sw2 == 0x82 ? "warning: end of file reached before Le bytes"
		    : sw2 == 0x83 ? "warning: selected file deactivated"
		    : sw2 == 0x84 ? "warning: file control information not formatted"
		                  : "warning, memory unchanged";
		break;
	case 0x63:
		if ((sw2 & 0xF0) == 0xC0) {
			snprintf(buf, cap, "verification failed, %u tries left", sw2 & 0x0F);
			return buf;
		}
		m = sw2 == 0x81 ? "warning: file filled up by the last write"
		                : "warning, memory changed";
		break;
	case 0x64:
		m = "execution error, memory unchanged";
		break;
	case 0x65:
		m = sw2 == 0x81 ? "memory failure" : "execution error, memory changed";
		break;
	case 0x66:
		m = "security-related issue";
		break;
	case 0x67:
		m = "wrong length";
		break;
	case 0x68:
		m = sw2 == 0x81   ? "logical channel not supported"
		    : sw2 == 0x82 ? "secure messaging not supported"
		                  : "function in CLA not supported";
		break;
	case 0x69:
		m = sw2 == 0x81   ? "command incompatible with file structure"
		    : sw2 == 0x82 ? "security status not satisfied"
		    : sw2 == 0x83 ? "authentication method blocked"
		    : sw2 == 0x84 ? "reference data not usable"
		    : sw2 == 0x85 ? "conditions of use not satisfied"
		    : sw2 == 0x86 ? "command not allowed (no current EF)"
		                  : "command not allowed";
		break;
	case 0x6A:
		m = sw2 == 0x80   ? "incorrect parameters in the data field"
		    : sw2 == 0x81 ? "function not supported"
		    : sw2 == 0x82 ? "file or application not found"
		    : sw2 == 0x83 ? "record not found"
		    : sw2 == 0x84 ? "not enough memory space in the file"
		    : sw2 == 0x86 ? "incorrect parameters P1-P2"
		    : sw2 == 0x87 ? "Lc inconsistent with P1-P2"
		    : sw2 == 0x88 ? "referenced data not found"
		                  : "wrong parameters P1-P2";
		break;
	case 0x6B:
		m = "wrong parameters P1-P2 (offset outside the file)";
		break;
	case 0x6C:
		snprintf(buf, cap, "wrong Le: %u bytes available", sw2 ? sw2 : 256);
		return buf;
	case 0x6D:
		m = "instruction not supported";
		break;
	case 0x6E:
		m = "class not supported";
		break;
	case 0x6F:
		m = "no precise diagnosis";
		break;
	}
	snprintf(buf, cap, "%s", m ? m : "unknown status word");
	return buf;
}

/* Prints bytes as hex, 16 a line, each line followed (with text) by its printable
 * characters. */
static void dump(const char *first_prefix, const BYTE *b, DWORD n, bool text)
{
	for (DWORD row = 0; row < n; row += 16) {
		DWORD k, end = n - row < 16 ? n : row + 16;
		printf("%s", row == 0 ? first_prefix : "  ");
		for (k = row; k < end; k++)
			printf(k + 1 < end || text ? "%02X " : "%02X", b[k]);
		if (text) {
			printf("%*s |", (int)(3 * (16 - (end - row))), "");
			for (k = row; k < end; k++)
				putchar(b[k] >= 0x20 && b[k] < 0x7F ? b[k] : '.');
			putchar('|');
		}
		putchar('\n');
	}
}

static const char *protocol_name(DWORD p)
{
	return p == SCARD_PROTOCOL_T0 ? "T=0" : p == SCARD_PROTOCOL_T1 ? "T=1" : "raw";
}

int main(int argc, char **argv)
{
	bool use_sim = false;
	const char *want = NULL;
	DWORD protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
	int first = argc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--sim") == 0) {
			use_sim = true;
		} else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
			want = argv[++i];
		} else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
			const char *p = argv[++i];
			if (strcmp(p, "t0") == 0) {
				protocols = SCARD_PROTOCOL_T0;
			} else if (strcmp(p, "t1") == 0) {
				protocols = SCARD_PROTOCOL_T1;
			} else if (strcmp(p, "any") == 0) {
				protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
			} else {
				fprintf(stderr, "calais-apdu: -p takes t0, t1 or any, not \"%s\"\n", p);
				return 2;
			}
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--") == 0) {
			first = i + 1;
			break;
		} else if (argv[i][0] == '-') {
			usage(stderr);
			return 2;
		} else {
			first = i;
			break;
		}
	}
	int n = argc - first;
	if (n <= 0) {
		usage(stderr);
		return 2;
	}
	/* Every APDU is checked before a card is touched. */
	BYTE **apdus = calloc((size_t)n, sizeof(*apdus));
	DWORD *lens = calloc((size_t)n, sizeof(*lens));
	BYTE *resp = malloc(MAX_BUFFER_SIZE_EXTENDED);
	int status = 2;
	if (!apdus || !lens || !resp) {
		fprintf(stderr, "calais-apdu: out of memory\n");
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (!parse_hex(argv[first + i], &apdus[i], &lens[i]))
			goto out;

	status = 1;
	if (use_sim) {
		/* As CALAIS_BACKENDS=sim would: the backend's default reader holds the demo
		 * card. */
		struct calais_config cfg;
		calais_config_init(&cfg);
		cfg.backends = "sim";
		LONG rv = calais_start(&cfg);
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "calais_start: %s\n", pcsc_stringify_error(rv));
			goto out;
		}
	}

	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardEstablishContext: %s\n", pcsc_stringify_error(rv));
		goto out;
	}
	char *readers = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	rv = SCardListReaders(ctx, NULL, (LPSTR)&readers, &len);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardListReaders: %s\n", pcsc_stringify_error(rv));
		goto out_ctx;
	}
	const char *reader = NULL;
	for (const char *r = readers; *r && !reader; r += strlen(r) + 1)
		if (!want || strstr(r, want))
			reader = r;
	if (!reader) {
		fprintf(stderr, "calais-apdu: no reader name contains \"%s\"\n", want);
		SCardFreeMemory(ctx, readers);
		goto out_ctx;
	}
	printf("Reader: %s\n", reader);

	SCARDHANDLE card;
	DWORD proto;
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, protocols, &card, &proto);
	SCardFreeMemory(ctx, readers);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardConnect: %s\n", pcsc_stringify_error(rv));
		goto out_ctx;
	}
	printf("Protocol: %s\n", protocol_name(proto));
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T0   ? SCARD_PCI_T0
	                              : proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1
	                                                           : SCARD_PCI_RAW;

	status = 0;
	for (int i = 0; i < n; i++) {
		dump("> ", apdus[i], lens[i], false);
		DWORD rlen = MAX_BUFFER_SIZE_EXTENDED;
		rv = SCardTransmit(card, pci, apdus[i], lens[i], NULL, resp, &rlen);
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "SCardTransmit: %s\n", pcsc_stringify_error(rv));
			status = 1;
			break;
		}
		if (rlen < 2) {
			fprintf(stderr, "calais-apdu: a %lu-byte response has no status word\n",
			        (unsigned long)rlen);
			status = 1;
			break;
		}
		char meaning[80];
		BYTE sw1 = resp[rlen - 2], sw2 = resp[rlen - 1];
		if (rlen > 2)
			dump("< ", resp, rlen - 2, true);
		printf("%s%02X %02X (%s)\n", rlen > 2 ? "  " : "< ", sw1, sw2,
		       sw_meaning(sw1, sw2, meaning, sizeof(meaning)));
	}
	SCardDisconnect(card, SCARD_LEAVE_CARD);
out_ctx:
	SCardReleaseContext(ctx);
	calais_shutdown();
out:
	for (int i = 0; apdus && i < n; i++)
		free(apdus[i]);
	free(apdus);
	free(lens);
	free(resp);
	return status;
}
