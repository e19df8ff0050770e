/* Base64 with the standard alphabet and padding (RFC 4648 section 4), as the WebSocket
 * handshake uses it for Sec-WebSocket-Key and Sec-WebSocket-Accept (RFC 6455 4.1, 4.2.2).
 * Pure: no allocation; the caller owns every buffer. Any thread. */
#ifndef SLB_CORE_BASE64_H
#define SLB_CORE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* The characters that encoding n bytes takes: 4 * ceil(n / 3). */
#define SLB_BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/* Encodes in[0, len) into out, which must have room for SLB_BASE64_ENCODED_LEN(len)
 * characters; no NUL is written. Returns the number of characters written. */
size_t slb_base64_encode(const uint8_t *in, size_t len, char *out);

/* Decodes in[0, len) strictly: len a multiple of 4, only alphabet characters, padding
 * ('=' or "==") only at the very end and required there, and the bits that padding leaves
 * unused all zero (RFC 4648 3.5: so each byte string has exactly one encoding). No
 * whitespace or line breaks are skipped. Returns the decoded length (written to out),
 * -EINVAL when in is not such an encoding, or -ENOSPC when it does not fit in cap bytes;
 * on either error out[0, cap) is unspecified. */
int slb_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
