/* A SIP stream: one TLS-or-plain connection carrying SIP messages (RFC 3261 18.3 framing),
 * written once for everything that speaks SIP over io/: the relay's clients and backend
 * links, the health checker's probes, the load generator and the mock backend.
 *
 * A stream owns the plumbing between io/ and its owner's SIP logic: ciphertext in through
 * tls/, plaintext into the loop's input pool (core/inbuf: a scratch, or the stream's own
 * pending buffer when a message is split across records or its owner stopped part way),
 * framing and scanning by core/, each frame handed to the owner; output written whole or
 * not at all, within its connection's bound; a refused write is retried by io/'s
 * on_drained, which the owner passes to slb_stream_flush. For outbound streams a
 * struct slb_redial keeps the backoff between dials and the TLS session to resume.
 *
 * Thread: the loop's. Nothing here allocates per message, locks or logs. */
#ifndef SLB_BALANCER_SIP_STREAM_H
#define SLB_BALANCER_SIP_STREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/inbuf.h"
#include "core/log.h"
#include "core/sip.h"
#include "core/ws_frame.h"
#include "io/conn.h"
#include "io/timer.h"
#include "tls/tls.h"

/* TLS output per record, generous: header, tag, content type. */
#define SLB_STREAM_TLS_OVERHEAD 64u
/* Pieces of one message slb_stream_send takes (a WebSocket frame header adds one). */
#define SLB_STREAM_IOV_MAX 64u
/* TLS feeds per slb_stream_input call: bounds the work one connection gets per turn. */
#define SLB_STREAM_FEED_ROUNDS 64u

enum slb_stream_state {
    SLB_STREAM_FREE,      /* no connection */
    SLB_STREAM_HANDSHAKE, /* TLS handshake in progress */
    SLB_STREAM_OPEN,      /* messages flow */
    SLB_STREAM_CLOSING,   /* closed by us or the peer; io/'s on_close follows */
};

struct slb_stream;

/* What a stream tells its owner, on the loop's thread, from inside slb_stream_input and
 * slb_stream_resume. The owner may close the stream from any of them. */
struct slb_stream_ops {
    /* One frame in base[0, fr->frame_len): a message (m is its scan), a keepalive, or a
     * bad or fatal frame (m->err says why). Returns true to go on with the next, false to
     * stop: the frame and what follows stay pending for slb_stream_resume (unless the
     * stream is closing). After a fatal frame the stream closes whatever the owner returns.
     * m is valid until return. */
    bool (*frame)(struct slb_stream *s, const char *base, const struct slb_sip_frame *fr,
                  const struct slb_sip_msg *m);
    /* The events of one TLS feed (SLB_TLS_EV_*), before its plaintext is framed. Optional. */
    void (*tls_events)(struct slb_stream *s, int ev);
    /* TLS failed with rc; the stream closes right after (sending the alert). Optional. */
    void (*tls_failed)(struct slb_stream *s, int rc);
    /* A WebSocket stream's opening handshake succeeded (the 101 is queued): messages
     * follow. Optional. */
    void (*ws_open)(struct slb_stream *s);
};

/* Counters of a stream environment (summed into the owner's). Written by the loop's thread
 * only, with relaxed atomic stores: another thread may read them while it runs. */
struct slb_stream_counters {
    _Atomic uint64_t pending_pool_empty; /* no pending buffer free: the stream was closed */
    _Atomic uint64_t closed_bad_input;   /* a frame its owner refused, or a rest that cannot fit */
    _Atomic uint64_t closed_input_flood; /* more than a whole message pending while held */
    _Atomic uint64_t closed_cut_write;   /* part of a message written and not the rest */
    _Atomic uint64_t ws_upgrades;        /* WebSocket handshakes answered 101 */
    _Atomic uint64_t ws_refused;         /* handshakes answered with an HTTP error */
    _Atomic uint64_t ws_protocol_errors; /* closed for a frame or a message we refuse */
    _Atomic uint64_t ws_peer_closes;     /* the peer's close frames, answered */
    _Atomic uint64_t ws_pings;           /* pings answered with a pong */
};

/* What the streams of one loop share: the input pool and the scanner's workspace. Owned by
 * the loop's owner; one per loop, on its thread. */
struct slb_stream_env {
    const struct slb_stream_ops *ops;
    struct slb_inbuf_pool inbufs;
    struct slb_sip_limits lim;
    struct slb_sip_msg msg;
    struct slb_sip_header hdrs[SLB_SIP_MAX_HEADERS_DEFAULT];
    struct slb_stream_counters c;
    struct slb_ratelimit rl; /* the log line of a stream closed for one of those */
    const char *ws_origin;   /* WebSocket streams: the Origin allow-list (NULL: any) */
};

/* One stream, embedded in its owner's record (owner: whoever embeds it). */
struct slb_stream {
    struct slb_stream_env *env;
    struct slb_conn *conn;
    struct slb_conn_id id;
    struct slb_tls_conn tls;
    uint8_t state;    /* enum slb_stream_state */
    bool plain;       /* no TLS: SIP over TCP */
    bool held;        /* the owner stopped its input (backpressure): nothing is framed */
    bool tls_more;    /* TLS holds input not yet decrypted */
    bool peer_closed; /* its close_notify came while held: shut down once resumed */
    struct slb_inbuf in;
    struct slb_sip_frame fr;
    uint64_t frames; /* frames handed to the owner */
    /* SIP over WebSocket (RFC 7118; sip_stream_ws.c): each WebSocket message is one SIP
     * message. A message is gathered (fragments) and unmasked in place, at the head of the
     * bytes not yet consumed: ws_acc bytes of payload there, ws_ready once whole (a
     * message its owner stopped on waits there, already unmasked). */
    uint8_t ws;     /* enum slb_stream_ws */
    bool ws_client; /* our side opened it (sipslb-load --wss): we mask, the peer does not */
    bool ws_ready;
    uint32_t ws_acc;
    struct slb_ws_msg ws_msg;
};

enum slb_stream_ws {
    SLB_STREAM_WS_NONE, /* SIP framed by Content-Length (RFC 3261 18.3) */
    SLB_STREAM_WS_HTTP, /* WebSocket: the HTTP Upgrade request has not come whole yet */
    SLB_STREAM_WS_OPEN, /* WebSocket: frames */
    SLB_STREAM_WS_SHUT, /* WebSocket: our close frame is out; nothing more is read */
};

/* Makes a stream just opened a WebSocket one: its first bytes (after TLS) must be an
 * HTTP/1.1 Upgrade request with the "sip" subprotocol (RFC 6455, RFC 7118). */
void slb_stream_ws(struct slb_stream *s);

/* The client side (sipslb-load --wss): once TLS is up, sends the Upgrade request for host
 * with the "sip" subprotocol; the 101 makes the stream open (ops->ws_open). Our frames
 * carry a zero masking key: RFC 6455 asks clients to mask, against proxies that cache,
 * which a load generator has no use for. Returns 0 or a negative errno. */
int slb_stream_ws_request(struct slb_stream *s, const char *host);

/* Sets up env for up to n_streams streams at once, each message at most max_msg bytes.
 * Returns 0 or -ENOMEM (env is then deinit-safe). */
int slb_stream_env_init(struct slb_stream_env *env, const struct slb_stream_ops *ops,
                        uint32_t n_streams, size_t max_msg);
void slb_stream_env_deinit(struct slb_stream_env *env);

/* Binds s to an io/ connection just accepted or connected and sets conn->owner = owner.
 * ctx NULL: plain TCP, open at once; else a TLS session toward `host` (NULL for a server
 * side). Returns 0, or -ENOMEM (s stays FREE). */
int slb_stream_open(struct slb_stream_env *env, struct slb_stream *s, struct slb_conn *conn,
                    struct slb_tls_ctx *ctx, const char *host, void *owner);

/* Bytes from io/ (ciphertext, or plaintext for a plain stream); len 0 with data NULL
 * continues with what TLS holds. Feeds TLS, frames, hands frames to ops->frame, keeps the
 * rest pending; stops when the owner stops or holds the stream, or when it closes. */
void slb_stream_input(struct slb_stream *s, const void *data, size_t len);

/* Bytes that arrive while the stream is held: decrypted (or, plain, copied) behind what is
 * pending, as much as the pending buffer holds; TLS keeps the rest, within its stash
 * bound. Closes the stream when no buffer is free or TLS fails. */
void slb_stream_input_held(struct slb_stream *s, const void *data, size_t len);

/* After the owner released its hold: frames what is pending, then what TLS holds. */
void slb_stream_resume(struct slb_stream *s);

/* Writes one whole message (total bytes over iov[0, n)), or nothing. Returns 0, -ENOBUFS
 * (not open, or no room within the connection's bound: io/ calls on_drained once there is),
 * or -EPIPE (a TLS write cut part way: the stream is closed). */
int slb_stream_send(struct slb_stream *s, const struct iovec *iov, int n, size_t total);

/* io/'s on_drained: retries the output TLS holds. Returns the TLS event mask (0 for plain;
 * SLB_TLS_EV_WANT_WRITE when still blocked, SLB_TLS_EV_MORE when input waits), or a
 * negative errno: TLS failed and the stream closes (ops->tls_failed first). */
int slb_stream_flush(struct slb_stream *s);

/* Closes the stream (after its queued output when graceful); io/'s on_close follows,
 * where the owner calls slb_stream_release. */
void slb_stream_close(struct slb_stream *s, bool graceful);

/* Closes it gracefully after a TLS close_notify (the peer's own close, or ours). */
void slb_stream_shutdown(struct slb_stream *s);

/* Frees what the stream holds (pending buffer, TLS session) and makes it FREE. In io/'s
 * on_close, or right after slb_stream_close for an owner that forgets the connection at
 * once (conn->owner is cleared: io/'s later callbacks for it are the owner's to ignore). */
void slb_stream_release(struct slb_stream *s);

/* The backoff and session of one outbound stream, kept across its connections. Owned by
 * whoever embeds it; the loop's thread. */
struct slb_redial {
    uint32_t backoff_ms; /* the last delay (0: the next failure waits min_ms) */
    uint32_t min_ms, max_ms;
    struct slb_timer timer;          /* fires the owner's redial */
    struct slb_tls_session *session; /* offered on the next dial */
};

void slb_redial_init(struct slb_redial *r, uint32_t min_ms, uint32_t max_ms,
                     void (*fire)(struct slb_timer *t));
/* Frees the kept session and cancels the timer. */
void slb_redial_deinit(struct slb_redial *r);

/* Starts a connection to addr on the loop (tagged tag), with timeout_ms to connect and
 * finish the handshake. Returns 0 with *id set, or a negative errno (no callback). */
int slb_redial_connect(struct slb_loop *loop, const struct sockaddr *addr, socklen_t len,
                       uint32_t tag, uint32_t timeout_ms, struct slb_conn_id *id);

/* A failure: arms the timer after twice the last delay (min_ms first, at most max_ms).
 * Returns the delay. */
uint32_t slb_redial_backoff(struct slb_redial *r, struct slb_loop *loop);

/* Arms the timer after exactly ms (a local cause, not the peer's failure). */
void slb_redial_after(struct slb_redial *r, struct slb_loop *loop, uint32_t ms);

/* The connection works: the next failure starts from min_ms again. */
static inline void slb_redial_ok(struct slb_redial *r)
{
    r->backoff_ms = 0;
}

/* Offers the kept session to a new connection's TLS (before its handshake starts). */
void slb_redial_offer_session(struct slb_redial *r, struct slb_stream *s);

/* Keeps the stream's current session for the next dial (on SLB_TLS_EV_NEW_SESSION). */
void slb_redial_keep_session(struct slb_redial *r, struct slb_stream *s);

#endif
