/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Card names from pcsc-tools' smartcard_list.txt: ATR patterns (hex digits, "." for any
 * digit, spaces ignored) each followed by tab-indented description lines. The file is
 * read line by line; nothing in it is trusted (long lines are cut, odd patterns skip). */
#include "calais-internal.h"

#include <ctype.h>
#include <stdio.h>

/* Compares a pattern line with the ATR's hex form; "." matches any digit. */
static bool pattern_matches(const char *pat, const char *hex)
{
	size_t n = 0;
	for (const char *p = pat; *p && *p != '\n' && *p != '\r'; p++) {
		if (*p == ' ')
			continue;
		if (!hex[n])
			return false;
		if (*p != '.' && toupper((unsigned char)*p) != hex[n])
			return false;
		n++;
	}
	return hex[n] == '\0';
}

LONG calais_atr_lookup(const uint8_t *atr, size_t len, const char *path, char *buf, size_t cap)
{
	if (!atr || !len || len > MAX_ATR_SIZE || !buf || !cap)
		return SCARD_E_INVALID_PARAMETER;
	buf[0] = '\0';
	FILE *f = fopen(path ? path : CALAIS_SMARTCARD_LIST, "r");
	if (!f)
		return SCARD_E_FILE_NOT_FOUND;
	LONG rv = calais__atr_lookup_file(f, atr, len, buf, cap);
	fclose(f);
	return rv;
}

LONG calais__atr_lookup_file(FILE *f, const uint8_t *atr, size_t len, char *buf, size_t cap)
{
	buf[0] = '\0';
	char hex[2 * MAX_ATR_SIZE + 1];
	for (size_t i = 0; i < len; i++)
		snprintf(hex + 2 * i, 3, "%02X", atr[i]);
	char line[1024];
	bool matched = false;
	size_t out = 0;
	while (fgets(line, sizeof(line), f)) {
		/* A line longer than the buffer is cut: its rest is skipped, never taken for
		 * a line of its own. */
		if (!strchr(line, '\n')) {
			int c;
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
		}
		if (matched) {
			if (line[0] != '\t')
				break;
			size_t l = strcspn(line + 1, "\r\n");
			if (out + l + 2 <= cap) {
				memcpy(buf + out, line + 1, l);
				out += l;
				buf[out++] = '\n';
				buf[out] = '\0';
			}
			continue;
		}
		if (line[0] == '#' || line[0] == '\t' || line[0] == '\n')
			continue;
		matched = pattern_matches(line, hex);
	}
	return matched ? SCARD_S_SUCCESS : SCARD_E_UNKNOWN_CARD;
}
