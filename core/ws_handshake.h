/* The server side of the WebSocket opening handshake (RFC 6455 section 4.2) for SIP over
 * secure WebSocket (RFC 7118): the client's HTTP/1.1 Upgrade request, read from the
 * decrypted first bytes of a connection, and the bytes we answer with.
 *
 * Pure: bytes in, result out; no I/O, no allocation, no clock. The request sits in a
 * receive buffer that the caller owns; the parser keeps no state between calls, so the
 * caller calls again on the grown buffer until it gets an answer other than 0. A request
 * is at most SLB_WS_HANDSHAKE_MAX bytes, which bounds both what a connection may hold
 * before it is a WebSocket and each call's work. Any thread. */
#ifndef SLB_CORE_WS_HANDSHAKE_H
#define SLB_CORE_WS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of a request, request line and header fields included: browsers send well under
 * 2 KiB (cookies are the bulk), and 8 KiB is the limit common HTTP servers default to. */
#define SLB_WS_HANDSHAKE_MAX 8192u

/* The status that slb_ws_handshake_parse names (negated) for a well-formed handshake
 * whose Sec-WebSocket-Protocol list lacks "sip": see ws_handshake.c for why 403. */
#define SLB_WS_STATUS_NO_SIP 403

/* What a handshake request says. Owned by the caller; filled only by a successful
 * slb_ws_handshake_parse. The slices borrow from the parsed buffer and are valid while
 * its bytes are (not past the buffer's recycling). */
struct slb_ws_handshake {
    const char *host; /* Host, without surrounding whitespace; never empty */
    size_t host_len;
    const char *origin; /* Origin, without surrounding whitespace; NULL when absent */
    size_t origin_len;
    const char *path; /* the request-target, as sent */
    size_t path_len;
    char accept[29];    /* Sec-WebSocket-Accept value, NUL-terminated */
    size_t request_len; /* bytes up to and including the empty line */
};

/* Parses the handshake request at the start of buf[0, len). It must be "GET target
 * HTTP/1.x" with x >= 1, and carry exactly one Host (non-empty, only characters an
 * authority may hold), an Upgrade listing
 * "websocket" and a Connection listing "upgrade" (token lists, case-insensitive, over one
 * or more lines), exactly one Sec-WebSocket-Key that is the base64 of 16 bytes, exactly
 * one Sec-WebSocket-Version, which must be 13, and "sip" in its Sec-WebSocket-Protocol
 * list (case-sensitive, as the 101 echoes it; the list may span several lines). Header
 * names are case-insensitive; lines end with CRLF; obs-fold, whitespace before a colon,
 * control bytes in a value, a second Origin, Transfer-Encoding and a Content-Length
 * other than 0 are refused (the bytes after the request must be WebSocket frames).
 *
 * Returns:
 *   > 0   the request's length (also in h->request_len); bytes after it are not read;
 *   0     no CRLFCRLF yet within fewer than SLB_WS_HANDSHAKE_MAX bytes: call again with
 *         more bytes;
 *   -400  malformed or not a WebSocket handshake;
 *   -426  Sec-WebSocket-Version is not 13 (answer it with slb_ws_handshake_error(426),
 *         which names the version we speak);
 *   -SLB_WS_STATUS_NO_SIP  a valid handshake that does not offer the "sip" subprotocol;
 *   -431  SLB_WS_HANDSHAKE_MAX bytes without the request's end.
 * When a request has several faults, -400 wins over -426, and -426 over the missing
 * subprotocol. Never reads past buf[len - 1] nor past SLB_WS_HANDSHAKE_MAX bytes. *h is
 * written only when the return is > 0. */
int slb_ws_handshake_parse(const char *buf, size_t len, struct slb_ws_handshake *h);

/* Whether a request's Origin passes list, a comma-separated list of serialized origins
 * (RFC 6454 6.2: "https://app.example.com", with ":port" only when not the default; no
 * path, no trailing slash). Entries may have spaces or tabs around them; they match the
 * whole Origin value, ASCII case-insensitively (scheme and host are case-insensitive,
 * the port is digits). A NULL or "" list allows every request, with or without Origin;
 * any other list allows only the origins it names (so a request without Origin, origin ==
 * NULL, is refused, and a list of nothing but commas and spaces refuses everything). */
bool slb_ws_origin_allowed(const char *list, const char *origin, size_t origin_len);

/* The 101 Switching Protocols response accepting h with the "sip" subprotocol (RFC 6455
 * 4.2.2 step 5, RFC 7118 4.1), into out[0, cap) without a NUL. Returns its length, or
 * -ENOSPC when cap is too small (out is then unspecified). */
int slb_ws_handshake_response(const struct slb_ws_handshake *h, char *out, size_t cap);

/* A response refusing the handshake with status (400-599), with "Content-Length: 0" and
 * "Connection: close"; for 426 also "Upgrade: websocket" (RFC 7231 6.5.15) and
 * "Sec-WebSocket-Version: 13" (RFC 6455 4.4), and then Connection lists "Upgrade" too
 * (RFC 7230 6.7). Into out[0, cap) without a NUL. Returns its length, -EINVAL for a status
 * outside 400-599, or -ENOSPC when cap is too small. */
int slb_ws_handshake_error(int status, char *out, size_t cap);

#endif
