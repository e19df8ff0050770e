/* The WebSocket frame codec (RFC 6455 section 5) for the server side of SIP over secure
 * WebSocket (RFC 7118): frame headers read from a client and written to it, payload
 * unmasking, close frames, UTF-8 checks and the fragmentation rules of one message.
 *
 * Pure and in place: bytes in, results out; no I/O, no allocation, no clock. Frames are
 * read where TLS decrypted them, in the connection's input buffer (core/inbuf), which
 * io/ owns and recycles: the header parser copies what it reads into the caller's struct
 * and keeps no pointer into the buffer, the unmasker rewrites payload bytes where they
 * lie, and a fragmented message is gathered by the caller in its own buffer with the
 * state of struct slb_ws_msg. A general library (libwslay's event layer) allocates and
 * copies every message instead, which the per-message path may not do. Nothing is kept
 * between calls but what the caller holds, so a partial header is simply parsed again
 * when more bytes arrive: it is at most SLB_WS_HDR_MAX bytes. Any thread. */
#ifndef SLB_CORE_WS_FRAME_H
#define SLB_CORE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest frame header: 2 fixed bytes, a 64-bit extended length and a masking key. */
#define SLB_WS_HDR_MAX 14u
/* 5.5: the largest payload of a control frame (close, ping, pong). */
#define SLB_WS_CONTROL_MAX 125u

/* 5.2, 11.8: the opcodes RFC 6455 defines; 3-7 and 11-15 are reserved. */
enum slb_ws_opcode {
    SLB_WS_CONT = 0,   /* a later fragment of a text or binary message */
    SLB_WS_TEXT = 1,   /* the first (or only) frame of a UTF-8 message */
    SLB_WS_BINARY = 2, /* the first (or only) frame of a binary message */
    SLB_WS_CLOSE = 8,  /* control: the closing handshake */
    SLB_WS_PING = 9,   /* control: answered with a pong of the same payload */
    SLB_WS_PONG = 10,  /* control: an answer, or an unsolicited heartbeat */
};

/* One frame's header as read. Owned by the caller; filled only by a successful
 * slb_ws_frame_parse, and holds no pointers. */
struct slb_ws_frame_hdr {
    bool fin;             /* the last frame of its message (always so for control frames) */
    uint8_t opcode;       /* an enum slb_ws_opcode value */
    bool masked;          /* the payload is masked with mask[] */
    uint8_t mask[4];      /* the masking key, zero when !masked */
    uint8_t hdr_len;      /* 2..14: the payload starts this far into the frame */
    uint64_t payload_len; /* < 2^63, and <= the caller's max_payload */
};

/* A message being gathered across its frames. Owned by the caller (embedded in the
 * connection's record); zero is "between messages". */
struct slb_ws_msg {
    bool in_message; /* a TEXT or BINARY frame without FIN came, its final CONT not yet */
    uint8_t opcode;  /* SLB_WS_TEXT or SLB_WS_BINARY: the message's type */
    uint64_t len;    /* payload bytes of the message so far, <= max_msg */
};

/* Parses the frame header at the start of buf[0, len). Bytes after the header (the
 * payload) are not looked at.
 *
 * Returns the header's length (2..14, also in h->hdr_len), 0 when buf is a valid
 * beginning of a header that is not complete yet (call again with more bytes), or:
 * - -EPROTO for a header the peer must not send: an RSV bit set (we negotiate no
 *   extension), a reserved opcode, a control frame without FIN or with a payload over
 *   125 bytes, a 64-bit length with its top bit set, or a length not in its shortest
 *   encoding (5.2 says the minimal number of bytes MUST be used; we hold the peer to it,
 *   so that every length has one header and a caller can trust hdr_len from the length);
 * - -EACCES when require_mask and the frame is not masked (5.1: a server fails the
 *   connection on an unmasked client frame);
 * - -EMSGSIZE when the payload length is over max_payload.
 * Each is returned as soon as the bytes that decide it are present (the first two bytes
 * for all but the extended length), and every longer buffer gives the same answer. Never
 * reads past buf[len - 1] nor past SLB_WS_HDR_MAX bytes; with SLB_WS_HDR_MAX bytes
 * present it never returns 0. *h is written only when the return is > 0. */
int slb_ws_frame_parse(const void *buf, size_t len, bool require_mask, uint64_t max_payload,
                       struct slb_ws_frame_hdr *h);

/* Unmasks (or masks: XOR is its own inverse) data[0, len) in place with mask, data being
 * the payload's bytes from offset on (5.3: payload byte i is XORed with mask[i % 4]), so a
 * payload handled piece by piece, as its bytes arrive, comes out as if done whole. Works
 * a word at a time; data needs no alignment. */
void slb_ws_unmask(void *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Writes the header of a server frame (never masked: 5.1) into out, which has room for at
 * least SLB_WS_HDR_MAX bytes, in its shortest encoding. Returns its length: 2, 4 or 10.
 * opcode must be one RFC 6455 defines, payload_len below 2^63, and a control frame must
 * have fin and at most SLB_WS_CONTROL_MAX bytes; anything else is the caller's bug and
 * aborts (the peer would fail the connection on such a frame). */
size_t slb_ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, uint64_t payload_len);

/* Reads the (unmasked) payload of a close frame (5.5.1): empty, or a status code in
 * network order and a UTF-8 reason. Returns 0 with *code set (1005, "no status", when the
 * payload is empty), or -EPROTO for a 1-byte payload, one over SLB_WS_CONTROL_MAX, a code
 * not valid on the wire (7.4: below 1000, 1004-1006, 1015, the unassigned 1016-2999, and
 * 5000 up; 1000-1003, 1007-1014 and 3000-4999 are taken), or a reason that is not valid
 * UTF-8 (8.1). *code is written only on success. */
int slb_ws_close_parse(const uint8_t *payload, size_t len, uint16_t *code);

/* Writes a whole close frame for us to send into out[0, cap): header, code and reason
 * (NULL for none). Code 1005 writes an empty close (no code, no reason); any other code
 * must be valid on the wire (as slb_ws_close_parse takes it), else the caller's bug
 * aborts. The reason is cut to what fits both cap and the 125-byte control payload, at a
 * character boundary; one that is not valid UTF-8 is left out. Returns the frame's length,
 * or 0 when cap cannot hold the header and code (nothing useful written). */
size_t slb_ws_close_build(uint8_t *out, size_t cap, uint16_t code, const char *reason);

/* Whether s[0, len) is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates
 * (U+D800-U+DFFF), nothing past U+10FFFF, no sequence cut short at the end. */
bool slb_ws_utf8_valid(const uint8_t *s, size_t len);

/* Applies the fragmentation rules (5.4) to the next data frame of a connection, h being
 * its parsed header (control frames may come between fragments and are not given here).
 * Returns 1 when the frame ends a message (FIN), 0 when more fragments follow, or:
 * - -EPROTO for a CONT frame with no message started, or a TEXT or BINARY frame while
 *   one is in progress;
 * - -EMSGSIZE when the message would grow past max_msg bytes;
 * - -EINVAL for a control opcode (the caller's bug).
 * On success m takes the frame: after a return of 1, m->opcode and m->len describe the
 * message just ended, and m->in_message is false. On error m is left as it was. */
int slb_ws_msg_frame(struct slb_ws_msg *m, const struct slb_ws_frame_hdr *h, uint64_t max_msg);

#endif
