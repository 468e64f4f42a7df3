/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ATR parser: a hand-verified table checked field by field, malformed ATRs with
 * their reasons, the decoder's text, the card-name lookup, and the whole ATR corpus of
 * pcsc-tools' smartcard_list.txt (every entry without wildcards goes through it). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calais/atr.h"
#include "iso7816/iso7816.h"

static size_t hex(const char *s, uint8_t *out)
{
	size_t n = 0;
	int half = -1;
	for (; *s; s++) {
		int v = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
		        : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
		if (v < 0)
			continue;
		if (half < 0)
			half = v;
		else
			out[n++] = (uint8_t)(half << 4 | v), half = -1;
	}
	return n;
}

/* Appends the TCK to an ATR of n bytes; returns the new length. */
static size_t with_tck(uint8_t *b, size_t n)
{
	uint8_t x = 0;
	for (size_t i = 1; i < n; i++)
		x ^= b[i];
	b[n] = x;
	return n + 1;
}

static struct calais__atr parse_ok(const char *s)
{
	uint8_t b[64];
	size_t n = hex(s, b);
	struct calais__atr a;
	LONG rv = calais__atr_parse(b, n, &a);
	cr_assert_eq(rv, SCARD_S_SUCCESS, "%s rejected: %s", s, a.reason);
	return a;
}

Test(atr, demo_card)
{
	struct calais__atr a = parse_ok("3B 8E 01 43 61 6C 61 69 73 44 65 6D 6F 43 61 72 64 AD");
	cr_assert_not(a.inverse);
	cr_assert_eq(a.hist_len, 14);
	cr_assert_eq(a.raw[a.hist_offset], 'C');
	cr_assert_eq(a.protocols, 1u << 1);
	cr_assert_eq(a.first_protocol, 1);
	cr_assert(a.has_tck);
	cr_assert_eq(a.tck, 0xAD);
	cr_assert_eq(a.fi, 372);
	cr_assert_eq(a.di, 1);
	cr_assert_eq(a.ifsc, 32);
	cr_assert_eq(a.bwi, 4);
	cr_assert_eq(a.cwi, 13);
	cr_assert_not(a.edc_crc);
	cr_assert_not(a.specific);
}

Test(atr, t0_only_minimal)
{
	struct calais__atr a = parse_ok("3B 02 14 50");
	cr_assert_eq(a.protocols, 1);
	cr_assert_eq(a.first_protocol, 0);
	cr_assert_eq(a.hist_len, 2);
	cr_assert_not(a.has_tck);
	cr_assert_eq(a.wi, 10);
	cr_assert_eq(a.fi, 372);
	cr_assert_eq(a.fmax_khz, 5000);
}

Test(atr, jcop_t1_with_ta1_and_t1_bytes)
{
	/* TA1 13: Fi 372, Di 4; TD1 81 -> TD2 31: TA3 FE (IFSC 254), TB3 45 (BWI 4, CWI 5). */
	struct calais__atr a = parse_ok("3B FA 13 00 00 81 31 FE 45 4A 43 4F 50 34 31 56 32 32 31 96");
	cr_assert_eq(a.fi_index, 1);
	cr_assert_eq(a.di, 4);
	cr_assert_eq(a.n, 0);
	cr_assert_eq(a.ifsc, 254);
	cr_assert_eq(a.bwi, 4);
	cr_assert_eq(a.cwi, 5);
	cr_assert_eq(a.hist_len, 10);
	cr_assert_eq(a.protocols, 2);
}

Test(atr, t15_clock_stop_and_class)
{
	/* 3B 80 80 91 45 1F C3: TD1 80 (T=0), TD2 91 (T=1, TA3 + TD3), TA3 45 (IFSC 69),
	 * TD3 1F (T=15, TA4), TA4 C3 (clock stop: no preference; classes A and B). */
	uint8_t b[16] = { 0x3B, 0x80, 0x80, 0x91, 0x45, 0x1F, 0xC3 };
	struct calais__atr a;
	cr_assert_eq(calais__atr_parse(b, with_tck(b, 7), &a), SCARD_S_SUCCESS, "%s", a.reason);
	cr_assert_eq(a.protocols, (1u << 0) | (1u << 1) | (1u << 15));
	cr_assert_eq(a.first_protocol, 0);
	cr_assert_eq(a.ifsc, 0x45);
	cr_assert_eq(a.clock_stop, 3);
	cr_assert_eq(a.class_indicator, 3);
}

Test(atr, specific_mode_and_crc)
{
	/* TA1 96 (Fi 512, Di 32), TD1 91 (T=1, TA2 + TD2), TA2 81 (specific T=1, not
	 * changeable), TD2 41 (T=1, TC3), TC3 01 (CRC). */
	uint8_t b[16] = { 0x3B, 0x90, 0x96, 0x91, 0x81, 0x41, 0x01 };
	struct calais__atr a;
	cr_assert_eq(calais__atr_parse(b, with_tck(b, 7), &a), SCARD_S_SUCCESS, "%s", a.reason);
	cr_assert_eq(a.fi, 512);
	cr_assert_eq(a.di, 32);
	cr_assert_eq(a.fmax_khz, 5000);
	cr_assert(a.specific);
	cr_assert_eq(a.specific_protocol, 1);
	cr_assert_not(a.specific_changeable);
	cr_assert(a.edc_crc);
	struct calais__atr_info ai;
	cr_assert_eq(calais__atr_protocols(b, 8, &ai), SCARD_S_SUCCESS);
	cr_assert(ai.specific);
	cr_assert_eq(ai.specific_proto, SCARD_PROTOCOL_T1);
}

Test(atr, inverse_convention)
{
	/* A 3F ATR already decoded by the reader, and the same ATR as raw line bytes
	 * (03 ...), which the parser decodes itself. */
	struct calais__atr a = parse_ok("3F 65 25 00 2C 09 69 90 00");
	cr_assert(a.inverse);
	/* T0 65: TB1 25 and TC1 00, no TA1 (default Fi/Di), 5 historical bytes. */
	cr_assert_eq(a.hist_len, 5);
	cr_assert_eq(a.groups[0].present, 0x6);
	cr_assert_eq(a.groups[0].byte[1], 0x25);
	cr_assert_eq(a.fi_index, 1);
	cr_assert_eq(a.di_index, 1);
	cr_assert_eq(a.n, 0);
	uint8_t raw[9];
	size_t n = hex("3F 65 25 00 2C 09 69 90 00", raw);
	uint8_t line[9];
	for (size_t i = 0; i < n; i++) {
		/* the inverse of the decoding is itself */
		line[i] = calais__atr_inverse_byte(raw[i]);
		cr_assert_eq(calais__atr_inverse_byte(line[i]), raw[i]);
	}
	cr_assert_eq(line[0], 0x03);
	struct calais__atr b;
	cr_assert_eq(calais__atr_parse(line, n, &b), SCARD_S_SUCCESS, "%s", b.reason);
	cr_assert(b.converted);
	cr_assert(b.inverse);
	cr_assert_arr_eq(b.raw, raw, n);
}

static void rejects(const char *s, const char *why)
{
	uint8_t b[64];
	size_t n = hex(s, b);
	struct calais__atr a;
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR, "%s accepted", s);
	cr_assert_not_null(strstr(a.reason, why), "%s: reason \"%s\", want \"%s\"", s, a.reason, why);
}

Test(atr, malformed_with_reasons)
{
	rejects("", "empty");
	rejects("3A 00", "TS");
	rejects("3B", "T0 missing");
	rejects("3B 8E 01 43 61", "truncated in the historical bytes");
	rejects("3B 8E 01 43 61 6C 61 69 73 44 65 6D 6F 43 61 72 64", "TCK missing");
	rejects("3B 8E 01 43 61 6C 61 69 73 44 65 6D 6F 43 61 72 64 AC", "TCK mismatch");
	rejects("3B 10", "truncated in the interface bytes");
	rejects("3B 10 71", "reserved Fi");
	rejects("3B 10 1A", "reserved Di");
	rejects("3B 02 14 50 00 00", "extra bytes");
	rejects("3B 80 0F 0F", "TD1 indicates T=15");
	rejects("3B 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", "longer than 33");
	/* TB3 for T=1 with BWI 15. */
	rejects("3B 80 81 21 F5 D5", "BWI");
}

Test(atr, protocols_survive_a_bad_tck)
{
	/* The core still finds T=1 in an ATR whose TCK is wrong (a real card's, from
	 * pcsc-tools' list), but not in one cut inside its interface bytes. */
	uint8_t b[40];
	size_t n = hex("3B 86 80 01 06 75 77 81 02 8F 00", b);
	struct calais__atr_info ai;
	cr_assert_eq(calais__atr_protocols(b, n, &ai), SCARD_S_SUCCESS);
	cr_assert_eq(ai.protocols, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1);
	n = hex("3B 80", b);
	cr_assert_eq(calais__atr_protocols(b, n, &ai), SCARD_E_INVALID_ATR);
}

/* An ATR that fails a late check still gives sane parameters: the defaults for what it
 * leaves out, its own values for the rest (a real card with a wrong TCK is used, as
 * pcscd + libccid use it; with IFSC 0 the T=1 engine once chained empty blocks for ever). */
Test(atr, a_rejected_atr_keeps_defaults_and_its_own_values)
{
	uint8_t b[40];
	struct calais__atr a;
	size_t n = hex("3B 80 01 8F", b); /* T=1, TCK should be 81 */
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR);
	cr_assert(strstr(a.reason, "TCK"), "%s", a.reason);
	cr_assert_eq(a.ifsc, 32);
	cr_assert_eq(a.bwi, 4);
	cr_assert_eq(a.cwi, 13);
	cr_assert_eq(a.wi, 10);
	cr_assert_eq(a.fi, 372);
	cr_assert_eq(a.di, 1);
	cr_assert_eq(a.fi_index, 1);
	cr_assert_eq(a.di_index, 1);
	cr_assert(!a.edc_crc);
	/* TA1 13, TA3 FE, TB3 45, TC3 01 (CRC), a wrong TCK: every value read all the same. */
	n = hex("3B 90 13 81 71 FE 45 01 00", b);
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR);
	cr_assert(strstr(a.reason, "TCK"), "%s", a.reason);
	cr_assert_eq(a.ifsc, 254);
	cr_assert_eq(a.bwi, 4);
	cr_assert_eq(a.cwi, 5);
	cr_assert(a.edc_crc);
	cr_assert_eq(a.fi_index, 1);
	cr_assert_eq(a.di_index, 3);
	/* IFSC 00 and FF are rejected, and bounded to 32 and 254 for a card used anyway. */
	n = with_tck(b, hex("3B 80 81 11 00", b));
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR);
	cr_assert_eq(a.ifsc, 32);
	n = with_tck(b, hex("3B 80 81 11 FF", b));
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR);
	cr_assert_eq(a.ifsc, 254);
	/* A reserved Fi keeps the default Fi and Di. */
	n = hex("3B 10 71", b);
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_E_INVALID_ATR);
	cr_assert_eq(a.fi, 372);
	cr_assert_eq(a.di, 1);
}

Test(atr, t0_card_with_a_tck_it_need_not_send)
{
	struct calais__atr a = parse_ok("3B 02 14 50 46");
	cr_assert(a.unexpected_tck);
}

Test(atr, describe_text)
{
	uint8_t b[40];
	size_t n = hex("3B FA 13 00 00 81 31 FE 45 4A 43 4F 50 34 31 56 32 32 31 96", b);
	char text[2048];
	cr_assert_eq(calais_atr_describe(b, n, text, sizeof(text)), SCARD_S_SUCCESS);
	cr_assert_not_null(strstr(text, "Fi = 372, Di = 4"), "%s", text);
	cr_assert_not_null(strstr(text, "T=1: IFSC = 254, BWI = 4, CWI = 5, EDC = LRC"), "%s", text);
	cr_assert_not_null(strstr(text, "TCK = 96 (correct)"), "%s", text);
	n = hex("3B 8E 01 43 61", b);
	cr_assert_eq(calais_atr_describe(b, n, text, sizeof(text)), SCARD_E_INVALID_ATR);
	cr_assert_not_null(strstr(text, "invalid ATR: truncated"), "%s", text);
	cr_assert_eq(calais_atr_describe(b, n, text, 4), SCARD_E_INVALID_ATR);
	cr_assert_eq(strlen(text), 3, "truncated, still terminated");
}

Test(atr, lookup_in_a_list)
{
	char path[] = "/tmp/calais-atr-list-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	fputs("# comment\n\n3B 02 14 50\n\tSchlumberger Multiflex 3k\n\tsecond line\n\n"
	      "3B 8E 01 43 61 6C 61 69 73 .. 65 6D 6F 43 61 72 64 ..\n\tCalais demo card\n", f);
	fclose(f);
	uint8_t b[40];
	char out[256];
	size_t n = hex("3B 02 14 50", b);
	cr_assert_eq(calais_atr_lookup(b, n, path, out, sizeof(out)), SCARD_S_SUCCESS);
	cr_assert_str_eq(out, "Schlumberger Multiflex 3k\nsecond line\n");
	n = hex("3B 8E 01 43 61 6C 61 69 73 44 65 6D 6F 43 61 72 64 AD", b);
	cr_assert_eq(calais_atr_lookup(b, n, path, out, sizeof(out)), SCARD_S_SUCCESS);
	cr_assert_str_eq(out, "Calais demo card\n");
	n = hex("3B 02 14 51", b);
	cr_assert_eq(calais_atr_lookup(b, n, path, out, sizeof(out)), SCARD_E_UNKNOWN_CARD);
	cr_assert_eq(calais_atr_lookup(b, n, "/nonexistent/list", out, sizeof(out)), SCARD_E_FILE_NOT_FOUND);
	unlink(path);
}

/* Every ATR of pcsc-tools' list without wildcards goes through the parser (and the
 * decoder); the counts are printed. The list is installed by scripts/test (pcsc-tools);
 * without it this test fails, loudly. */
Test(atr, smartcard_list_corpus, .timeout = 60)
{
	FILE *f = fopen(CALAIS_SMARTCARD_LIST, "r");
	cr_assert_not_null(f, "%s missing: install pcsc-tools", CALAIS_SMARTCARD_LIST);
	char line[1024];
	unsigned accepted = 0, rejected = 0, wildcards = 0;
	unsigned reasons[16] = { 0 };
	const char *reason_text[16] = { 0 };
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#' || line[0] == '\t' || line[0] == '\n' || line[0] == '\r')
			continue;
		if (strchr(line, '.') || strchr(line, '[')) {
			wildcards++;
			continue;
		}
		uint8_t b[64];
		size_t n = hex(line, b);
		if (n > sizeof(b) - 1)
			continue;
		struct calais__atr a;
		char text[4096];
		LONG rv = calais__atr_parse(b, n, &a);
		calais_atr_describe(b, n, text, sizeof(text));
		if (rv == SCARD_S_SUCCESS) {
			accepted++;
		} else {
			rejected++;
			for (int i = 0; i < 16; i++)
				if (!reason_text[i] || reason_text[i] == a.reason) {
					reason_text[i] = a.reason;
					reasons[i]++;
					break;
				}
		}
	}
	fclose(f);
	printf("smartcard_list.txt: %u ATRs accepted, %u rejected, %u patterns with wildcards skipped\n",
	       accepted, rejected, wildcards);
	for (int i = 0; i < 16 && reason_text[i]; i++)
		printf("  %5u  %s\n", reasons[i], reason_text[i]);
	cr_assert_gt(accepted, 2000, "only %u ATRs accepted", accepted);
	cr_assert_lt(rejected, accepted / 5, "%u rejected", rejected);
}
