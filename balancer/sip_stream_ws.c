/* SIP over WebSocket (RFC 7118) inside a SIP stream: after TLS, the HTTP/1.1 Upgrade
 * handshake (core/ws_handshake: "sip" subprotocol required, --ws-origin allow-list), then
 * RFC 6455 frames (core/ws_frame) where each message carries exactly one SIP message,
 * handed to the owner as a frame like any other.
 *
 * In place, no allocation: a frame's payload is unmasked where it lies in the stream's
 * input bytes, and a message is handed over from there; fragments are gathered by moving
 * each payload over the frame header behind the previous one, so the message ends up
 * whole at the head of the unconsumed bytes. A message the owner stops on (backpressure)
 * is moved there too and marked ready, so that resuming hands it over again without
 * unmasking it twice. Why not libwslay: its event layer allocates and copies each message,
 * its frame layer pulls bytes through callbacks; neither fits a pending buffer framed in
 * place. Control frames: ping answered with pong, pong ignored, close answered and the
 * connection closed. Every refusal has its status (HTTP) or close code, and a counter.
 *
 * Thread: the loop's. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "balancer/sip_stream-priv.h"
#include "core/ws_handshake.h"

void slb_stream_ws(struct slb_stream *s)
{
    s->ws = SLB_STREAM_WS_HTTP;
}

/* A frame header; a client's says "masked" with a zero key, so the payload goes as it is. */
static size_t ws_header(const struct slb_stream *s, uint8_t *out, uint8_t opcode, size_t len)
{
    size_t n = slb_ws_frame_header(out, opcode, true, len);
    if (!s->ws_client)
        return n;
    out[1] |= 0x80;
    memset(out + n, 0, 4);
    return n + 4;
}

size_t ws_message_header(const struct slb_stream *s, uint8_t hdr[SLB_WS_HDR_MAX], size_t total)
{
    /* Text frames: SIP messages are UTF-8 text (RFC 7118 5.1 allows either). */
    return ws_header(s, hdr, SLB_WS_TEXT, total);
}

int slb_stream_ws_request(struct slb_stream *s, const char *host)
{
    char req[512];
    /* A fixed key: the answer's accept value is not checked (we are the test client). */
    int n = snprintf(req, sizeof(req),
                     "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: c2lwc2xiLWxvYWQtd3NzIQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n",
                     host);
    if (n < 0 || (size_t)n >= sizeof(req))
        return -EINVAL;
    s->ws = SLB_STREAM_WS_HTTP;
    s->ws_client = true;
    struct iovec iov = {req, (size_t)n};
    return stream_write_raw(s, &iov, 1, (size_t)n);
}

/* The client side's 101 (any other answer ends the stream). */
static bool answered(struct slb_stream *s, const char *buf, size_t len, size_t *at)
{
    size_t scan = len < SLB_WS_HANDSHAKE_MAX ? len : SLB_WS_HANDSHAKE_MAX;
    const char *end = memmem(buf, scan, "\r\n\r\n", 4);
    if (!end && len < SLB_WS_HANDSHAKE_MAX)
        return false;
    if (!end || len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        stream_count(&s->env->c.ws_refused);
        s->ws = SLB_STREAM_WS_SHUT;
        slb_stream_shutdown(s);
        return false;
    }
    stream_count(&s->env->c.ws_upgrades);
    s->ws = SLB_STREAM_WS_OPEN;
    *at = (size_t)(end + 4 - buf);
    if (s->env->ops->ws_open)
        s->env->ops->ws_open(s);
    return s->state == SLB_STREAM_OPEN;
}

static int write_one(struct slb_stream *s, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return stream_write_raw(s, &iov, 1, len);
}

/* The handshake refused with an HTTP status: answered, then closed once it is out. */
static void refuse(struct slb_stream *s, int status)
{
    char out[256];
    int n = slb_ws_handshake_error(status, out, sizeof(out));
    stream_count(&s->env->c.ws_refused);
    if (n > 0)
        (void)write_one(s, out, (size_t)n);
    s->ws = SLB_STREAM_WS_SHUT;
    slb_stream_shutdown(s);
}

/* A close frame with code, then the connection closed once it is out. */
static void close_with(struct slb_stream *s, uint16_t code)
{
    uint8_t out[SLB_WS_HDR_MAX + 2];
    size_t n = s->ws_client ? ws_header(s, out, SLB_WS_CLOSE, 2) : 0;
    if (n) {
        out[n] = (uint8_t)(code >> 8);
        out[n + 1] = (uint8_t)code;
        n += 2;
    } else {
        n = slb_ws_close_build(out, sizeof(out), code, NULL);
    }
    if (n)
        (void)write_one(s, out, n);
    s->ws = SLB_STREAM_WS_SHUT;
    slb_stream_shutdown(s);
}

static void protocol_error(struct slb_stream *s, uint16_t code)
{
    stream_count(&s->env->c.ws_protocol_errors);
    close_with(s, code);
}

static void control(struct slb_stream *s, const struct slb_ws_frame_hdr *h, const uint8_t *pl,
                    size_t plen)
{
    if (h->opcode == SLB_WS_PING) {
        uint8_t out[SLB_WS_HDR_MAX + SLB_WS_CONTROL_MAX];
        size_t n = ws_header(s, out, SLB_WS_PONG, plen);
        memcpy(out + n, pl, plen);
        stream_count(&s->env->c.ws_pings);
        (void)write_one(s, out, n + plen); /* no room: the peer's next ping gets one */
        return;
    }
    if (h->opcode != SLB_WS_CLOSE)
        return; /* a pong */
    uint16_t code;
    if (slb_ws_close_parse(pl, plen, &code) < 0) {
        protocol_error(s, 1002);
        return;
    }
    stream_count(&s->env->c.ws_peer_closes);
    /* RFC 6455 5.5.1: answer with a close, echoing its code (none: none). */
    close_with(s, code == 1005 ? 1000 : code);
}

static bool handshake(struct slb_stream *s, const char *buf, size_t len, size_t *at)
{
    struct slb_ws_handshake h;
    int r = slb_ws_handshake_parse(buf, len, &h);
    if (r == 0)
        return false;
    if (r > 0 && !slb_ws_origin_allowed(s->env->ws_origin, h.origin, h.origin_len))
        r = -403;
    if (r < 0) {
        refuse(s, -r);
        return false;
    }
    char out[256];
    int n = slb_ws_handshake_response(&h, out, sizeof(out));
    if (n < 0 || write_one(s, out, (size_t)n) < 0) {
        refuse(s, 503);
        return false;
    }
    stream_count(&s->env->c.ws_upgrades);
    s->ws = SLB_STREAM_WS_OPEN;
    *at = (size_t)r;
    if (s->env->ops->ws_open)
        s->env->ops->ws_open(s);
    return s->state == SLB_STREAM_OPEN;
}

/* Removes buf[from, to) from the unconsumed bytes. */
static void cut(char *buf, size_t *len, size_t from, size_t to)
{
    memmove(buf + from, buf + to, *len - to);
    *len -= to - from;
}

size_t ws_consume(struct slb_stream *s, char *buf, size_t *len, bool *stop)
{
    struct slb_stream_env *env = s->env;
    uint64_t max = env->lim.max_msg_bytes;
    size_t at = 0;
    *stop = false;
    if (s->ws == SLB_STREAM_WS_HTTP &&
        !(s->ws_client ? answered(s, buf, *len, &at) : handshake(s, buf, *len, &at))) {
        *stop = s->state != SLB_STREAM_OPEN;
        return *stop ? *len : 0;
    }
    while (s->state == SLB_STREAM_OPEN && s->ws == SLB_STREAM_WS_OPEN) {
        if (s->ws_ready) {
            if (!stream_deliver(s, buf + at, s->ws_acc)) {
                *stop = true;
                return s->state == SLB_STREAM_OPEN ? at : *len;
            }
            at += s->ws_acc;
            s->ws_acc = 0;
            s->ws_ready = false;
            continue;
        }
        size_t head = at + s->ws_acc; /* the next frame, behind what is gathered */
        if (head >= *len)
            break;
        struct slb_ws_frame_hdr h;
        int r = slb_ws_frame_parse(buf + head, *len - head, !s->ws_client, max, &h);
        if (r == 0)
            break;
        if (r < 0) {
            /* 1009 for a frame over the bound, 1002 for anything else (an unmasked client
             * frame included: RFC 6455 5.1). */
            protocol_error(s, r == -EMSGSIZE ? 1009 : 1002);
            break;
        }
        if (h.payload_len > *len - head - h.hdr_len)
            break; /* the rest of the frame has not come */
        char *pl = buf + head + h.hdr_len;
        size_t plen = (size_t)h.payload_len, end = head + h.hdr_len + plen;
        slb_ws_unmask(pl, plen, h.mask, 0);
        if (h.opcode >= SLB_WS_CLOSE) {
            control(s, &h, (const uint8_t *)pl, plen);
            if (s->ws_acc)
                cut(buf, len, head, end); /* between fragments: out of the gathered bytes */
            else
                at = end;
            continue;
        }
        int m = slb_ws_msg_frame(&s->ws_msg, &h, max);
        if (m < 0) {
            protocol_error(s, m == -EMSGSIZE ? 1009 : 1002);
            break;
        }
        if (m == 1 && s->ws_acc == 0) {
            /* A whole message in one frame: handed over where it lies. */
            if (s->ws_msg.opcode == SLB_WS_TEXT && !slb_ws_utf8_valid((uint8_t *)pl, plen)) {
                protocol_error(s, 1007);
                break;
            }
            if (!stream_deliver(s, pl, plen)) {
                *stop = true;
                if (s->state != SLB_STREAM_OPEN)
                    return *len;
                cut(buf, len, head, head + h.hdr_len); /* waits, unmasked, at the head */
                s->ws_acc = (uint32_t)plen;
                s->ws_ready = true;
                return at;
            }
            at = end;
            continue;
        }
        /* A fragment: its payload joins the gathered ones, over its own header. */
        cut(buf, len, head, head + h.hdr_len);
        s->ws_acc += (uint32_t)plen;
        if (m == 1) {
            if (s->ws_msg.opcode == SLB_WS_TEXT &&
                !slb_ws_utf8_valid((uint8_t *)buf + at, s->ws_acc)) {
                protocol_error(s, 1007);
                break;
            }
            s->ws_ready = true;
        }
    }
    if (s->state != SLB_STREAM_OPEN || s->ws != SLB_STREAM_WS_OPEN) {
        *stop = true;
        return *len;
    }
    return at;
}
