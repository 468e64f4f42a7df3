/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* calais-apdu: sends APDUs given in hex and prints each response and its status word.
 *
 *   calais-apdu [--sim] [-r READER-SUBSTRING] [-p t0|t1|any] APDU...
 *   calais-apdu --sim 00A4000C023F00 "00 B0 00 00 10"
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <winscard.h>
#include <calais/calais.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: calais-apdu [--sim] [-r reader] [-p t0|t1|any] APDU...\n"
	           "  APDU     hex bytes; spaces and colons allowed (\"00 A4 04 00 00\")\n"
	           "  --sim    use the simulated reader and its demo card\n"
	           "  -r TEXT  use the first reader whose name contains TEXT\n"
	           "  -p P     preferred protocol (default any)\n");
}

/* Parses hex with optional separators; returns the length or -1 with a message. */
static long parse_hex(const char *s, BYTE *out, size_t cap)
{
	size_t n = 0;
	int half = -1;
	for (const char *p = s; *p; p++) {
		if (*p == ' ' || *p == ':' || *p == '\t')
			continue;
		if (!isxdigit((unsigned char)*p)) {
			fprintf(stderr, "calais-apdu: '%c' is not a hex digit in \"%s\"\n", *p, s);
			return -1;
		}
		int v = isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10);
		if (half < 0) {
			half = v;
		} else {
			if (n == cap) {
				fprintf(stderr, "calais-apdu: APDU longer than %zu bytes\n", cap);
				return -1;
			}
			out[n++] = (BYTE)(half << 4 | v);
			half = -1;
		}
	}
	if (half >= 0) {
		fprintf(stderr, "calais-apdu: odd number of hex digits in \"%s\"\n", s);
		return -1;
	}
	if (n < 4) {
		fprintf(stderr, "calais-apdu: \"%s\" is shorter than an APDU header (4 bytes)\n", s);
		return -1;
	}
	return (long)n;
}

static const char *sw_meaning(BYTE sw1, BYTE sw2)
{
	static char buf[64];
	switch (sw1) {
	case 0x90:
		return sw2 == 0 ? "success" : "success (proprietary)";
	case 0x61:
		snprintf(buf, sizeof(buf), "%u more bytes available (GET RESPONSE)", sw2 ? sw2 : 256);
		return buf;
	case 0x62:
		return sw2 == 0x82 ? "end of file reached before Le bytes" : "warning, memory unchanged";
	case 0x63:
		if ((sw2 & 0xF0) == 0xC0) {
			snprintf(buf, sizeof(buf), "verification failed, %u tries left", sw2 & 0x0F);
			return buf;
		}
		return "warning, memory changed";
	case 0x67:
		return "wrong length";
	case 0x69:
		return sw2 == 0x82 ? "security status not satisfied"
		       : sw2 == 0x83 ? "authentication method blocked"
		       : sw2 == 0x85 ? "conditions of use not satisfied"
		       : sw2 == 0x86 ? "command not allowed (no current EF)"
		                     : "command not allowed";
	case 0x6A:
		return sw2 == 0x82 ? "file or application not found"
		       : sw2 == 0x86 ? "incorrect parameters P1-P2"
		       : sw2 == 0x81 ? "function not supported"
		                     : "wrong parameters";
	case 0x6B:
		return "wrong parameters P1-P2 (offset outside the file)";
	case 0x6C:
		snprintf(buf, sizeof(buf), "wrong Le: %u bytes available", sw2 ? sw2 : 256);
		return buf;
	case 0x6D:
		return "instruction not supported";
	case 0x6E:
		return "class not supported";
	case 0x6F:
		return "no precise diagnosis";
	default:
		return "";
	}
}

int main(int argc, char **argv)
{
	bool sim = false;
	const char *want = NULL;
	DWORD protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
	int first = argc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--sim") == 0) {
			sim = true;
		} else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
			want = argv[++i];
		} else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
			const char *p = argv[++i];
			protocols = strcmp(p, "t0") == 0   ? SCARD_PROTOCOL_T0
			            : strcmp(p, "t1") == 0 ? SCARD_PROTOCOL_T1
			                                   : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-') {
			usage(stderr);
			return 2;
		} else {
			first = i;
			break;
		}
	}
	if (first == argc) {
		usage(stderr);
		return 2;
	}
	/* Check every APDU before touching a card. */
	static BYTE apdus[64][MAX_BUFFER_SIZE_EXTENDED];
	long lens[64];
	int n = argc - first;
	if (n > 64) {
		fprintf(stderr, "calais-apdu: at most 64 APDUs\n");
		return 2;
	}
	for (int i = 0; i < n; i++)
		if ((lens[i] = parse_hex(argv[first + i], apdus[i], sizeof(apdus[i]))) < 0)
			return 2;

	if (sim) {
		struct calais_config cfg;
		calais_config_init(&cfg);
		cfg.backends = "sim";
		LONG rv = calais_start(&cfg);
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "calais_start: %s\n", pcsc_stringify_error(rv));
			return 1;
		}
	}

	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardEstablishContext: %s\n", pcsc_stringify_error(rv));
		return 1;
	}
	char *readers = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	rv = SCardListReaders(ctx, NULL, (LPSTR)&readers, &len);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardListReaders: %s\n", pcsc_stringify_error(rv));
		SCardReleaseContext(ctx);
		return 1;
	}
	const char *reader = NULL;
	for (const char *r = readers; *r && !reader; r += strlen(r) + 1)
		if (!want || strstr(r, want))
			reader = r;
	if (!reader) {
		fprintf(stderr, "calais-apdu: no reader matches \"%s\"\n", want);
		SCardFreeMemory(ctx, readers);
		SCardReleaseContext(ctx);
		return 1;
	}
	printf("Reader: %s\n", reader);

	SCARDHANDLE card;
	DWORD proto;
	rv = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, protocols, &card, &proto);
	SCardFreeMemory(ctx, readers);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardConnect: %s\n", pcsc_stringify_error(rv));
		SCardReleaseContext(ctx);
		return 1;
	}
	printf("Protocol: T=%d\n", proto == SCARD_PROTOCOL_T1 ? 1 : 0);
	const SCARD_IO_REQUEST *pci = proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;

	int status = 0;
	static BYTE resp[MAX_BUFFER_SIZE_EXTENDED];
	for (int i = 0; i < n && status == 0; i++) {
		printf("> ");
		for (long k = 0; k < lens[i]; k++)
			printf("%02X ", apdus[i][k]);
		printf("\n");
		DWORD rlen = sizeof(resp);
		rv = SCardTransmit(card, pci, apdus[i], (DWORD)lens[i], NULL, resp, &rlen);
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "SCardTransmit: %s\n", pcsc_stringify_error(rv));
			status = 1;
			break;
		}
		printf("< ");
		for (DWORD k = 0; k + 2 < rlen; k++)
			printf("%02X%s", resp[k], (k % 16 == 15 && k + 3 < rlen) ? "\n  " : " ");
		if (rlen > 2)
			printf("\n  ");
		if (rlen >= 2)
			printf("%02X %02X (%s)\n", resp[rlen - 2], resp[rlen - 1],
			       sw_meaning(resp[rlen - 2], resp[rlen - 1]));
	}
	SCardDisconnect(card, SCARD_LEAVE_CARD);
	SCardReleaseContext(ctx);
	calais_shutdown();
	return status;
}
