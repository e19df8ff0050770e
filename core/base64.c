/* Base64 encoding and strict decoding (RFC 4648 section 4); see core/base64.h.
 *
 * Invariants: never reads outside in[0, len) nor writes outside out[0, cap) (decoding) or
 * out[0, SLB_BASE64_ENCODED_LEN(len)) (encoding); decoding checks the output's size
 * before it writes a byte, and may leave part of a result behind when it then finds the
 * input invalid. Pure; any thread. */
#include "core/base64.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of an alphabet character, or -1 (padding included). */
static int sextet(char ch)
{
    unsigned char c = (unsigned char)ch;
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t slb_base64_encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        size_t n = len - i < 3 ? len - i : 3;
        uint32_t v = (uint32_t)in[i] << 16;
        if (n > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = n > 1 ? alphabet[v >> 6 & 63] : '=';
        out[o++] = n > 2 ? alphabet[v & 63] : '=';
    }
    return o;
}

int slb_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len % 4 != 0 || len / 4 > INT_MAX / 3)
        return -EINVAL;
    if (len == 0)
        return 0;
    /* Padding can only be the last one or two characters of the last quantum. */
    size_t pad = in[len - 1] != '=' ? 0 : in[len - 2] != '=' ? 1 : 2;
    size_t out_len = len / 4 * 3 - pad;
    if (out_len > cap)
        return -ENOSPC;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        size_t data_chars = last ? 4 - pad : 4;
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int s = j < data_chars ? sextet(in[i + j]) : 0;
            if (s < 0)
                return -EINVAL; /* a stray '=', whitespace, or off the alphabet */
            v = v << 6 | (uint32_t)s;
        }
        /* RFC 4648 3.5: bits under the padding must be zero, or two encodings would
         * decode to the same bytes. */
        if ((pad == 1 && last && (v & 0xFF) != 0) || (pad == 2 && last && (v & 0xFFFF) != 0))
            return -EINVAL;
        out[o++] = (uint8_t)(v >> 16);
        if (data_chars > 2)
            out[o++] = (uint8_t)(v >> 8);
        if (data_chars > 3)
            out[o++] = (uint8_t)v;
    }
    return (int)out_len;
}
