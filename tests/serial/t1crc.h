/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * t1crc: the T=1 CRC as the serial test peers (simcard.c) and ccidsim.c compute it,
 * written from its definition and independent of lib/iso7816/t1.c (and of
 * tests/unit/t1card.c, which divides instead): the
 * CRC-16/CCITT generator x^16 + x^12 + x^5 + 1 over the bits in line order (least
 * significant bit of each byte first), register preset to FFFF, no final inversion.
 * The register's high byte is sent first. This is what libccid, OpenCT and real cards
 * use; checked against a GemPC Twin's trace: 00 C1 01 FE -> 54 4E, 00 E1 01 FE -> 57 75,
 * 00 80 00 -> B5 FF, 00 C0 00 -> F3 99.
 */
#ifndef T1CRC_H
#define T1CRC_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t t1crc(const uint8_t *b, size_t n)
{
    uint16_t reg = 0xFFFF;
    size_t i;
    int bit;
    for (i = 0; i < n; i++)
        for (bit = 0; bit < 8; bit++) {
            /* one bit in: the register shifts towards its low end, and the generator
             * (1021 with its bit order reversed, 8408) is added when the bit leaving
             * differs from the one coming in */
            unsigned in = (b[i] >> bit) & 1u;
            unsigned out = reg & 1u;
            reg = (uint16_t)(reg >> 1);
            if (in ^ out)
                reg ^= 0x8408;
        }
    return reg;
}

#endif
