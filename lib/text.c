/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Text from devices (USB strings, reader firmware, the platform service's reader names)
 * made safe before it becomes a reader name or part of a log line: a control character
 * would break a multi-string or forge a log line, and a terminal obeys escape sequences. */
#include "calais-internal.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0. Overlong forms, surrogates and
 * code points past U+10FFFF are invalid; so are the C1 controls U+0080..U+009F, which
 * some terminals obey. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n;
	unsigned cp, min;
	if (c < 0xC2 || c > 0xF4)
		return 0;
	if (c < 0xE0) {
		n = 2, cp = c & 0x1F, min = 0xA0;
	} else if (c < 0xF0) {
		n = 3, cp = c & 0x0F, min = 0x800;
	} else {
		n = 4, cp = c & 0x07, min = 0x10000;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3Fu);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

void calais__sanitise(char *s, char with)
{
	unsigned char *p = (unsigned char *)s;
	while (*p) {
		if (*p >= 0x20 && *p < 0x7F) {
			p++;
			continue;
		}
		size_t n = *p >= 0x80 ? utf8_len(p) : 0;
		if (n) {
			p += n;
			continue;
		}
		*p++ = (unsigned char)with;
	}
}
