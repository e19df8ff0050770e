/* What sip_stream.c shares with sip_stream_ws.c (the WebSocket layer of the same stream).
 * Not for owners. Thread: the loop's. */
#ifndef SLB_BALANCER_SIP_STREAM_PRIV_H
#define SLB_BALANCER_SIP_STREAM_PRIV_H

#include "balancer/sip_stream.h"

/* Closes the stream at once for a reason its counter names, with a rate-limited line. */
void stream_close_for(struct slb_stream *s, _Atomic uint64_t *counter);

/* Bytes out as they are (through TLS when there is TLS): the HTTP answers and the
 * WebSocket control frames. Returns 0 or a negative errno (no room: -ENOBUFS). */
int stream_write_raw(struct slb_stream *s, const struct iovec *iov, int n, size_t total);

/* Hands msg[0, len), one whole SIP message, to the owner as a frame. Returns what the
 * owner returned (false: stop; the stream may be closing). */
bool stream_deliver(struct slb_stream *s, const char *msg, size_t len);

/* The WebSocket layer's consume (sip_stream.c's for a WebSocket stream): frames and hands
 * over the messages in buf[0, *len), which it may rewrite in place (unmasking, gathering
 * fragments; *len shrinks by the frame headers it removed). Returns the bytes consumed. */
size_t ws_consume(struct slb_stream *s, char *buf, size_t *len, bool *stop);

/* A WebSocket frame header for a message of total bytes, into hdr (masked with a zero key
 * on a client stream); returns its length. */
size_t ws_message_header(const struct slb_stream *s, uint8_t hdr[SLB_WS_HDR_MAX], size_t total);

static inline void stream_count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

#endif
