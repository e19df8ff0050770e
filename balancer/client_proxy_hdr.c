/* PROXY protocol in front of a client connection (--proxy-protocol-from): behind an L4
 * balancer the peer is the balancer, and the client's own address comes in a PROXY header
 * ahead of the TLS bytes. Only sources in the list are asked for one, with its own short
 * timeout; the address in it becomes the connection's for received/rport, logs, the
 * per-source limits and bans (admitted only now, against the real source), the backend
 * allow-list, --log-connections. From any other source a header is refused, so that no
 * client can claim another's address.
 *
 * The header is parsed in place from the first read, which holds all of it in practice;
 * only a header split across reads borrows one of the worker's few buffers, and a
 * connection that cannot get one is closed (counted): nobody can pin memory with
 * trickled headers beyond PROXY_HDR_BUFS x SLB_PROXY_HDR_MAX per worker.
 *
 * Thread: the worker's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/worker-priv.h"
#include "core/proxy_proto.h"

int proxy_hdr_init(struct slb_worker *w)
{
    if (!w->cfg->n_proxy_from)
        return 0;
    w->proxy_bufs = calloc(PROXY_HDR_BUFS, SLB_PROXY_HDR_MAX);
    if (!w->proxy_bufs)
        return -ENOMEM;
    for (unsigned i = 0; i < PROXY_HDR_BUFS; i++)
        w->proxy_free[i] = (uint16_t)(PROXY_HDR_BUFS - 1 - i);
    w->n_proxy_free = PROXY_HDR_BUFS;
    return 0;
}

bool proxy_hdr_expected(const struct slb_worker *w, const struct slb_conn *conn)
{
    return w->cfg->n_proxy_from &&
           slb_cidr_match(w->cfg->proxy_from, w->cfg->n_proxy_from, &conn->peer);
}

static uint8_t *buf_of(struct slb_worker *w, const struct relay_conn *c)
{
    return w->proxy_bufs + (size_t)(c->proxy_slot - 1) * SLB_PROXY_HDR_MAX;
}

void proxy_hdr_release(struct slb_worker *w, struct relay_conn *c)
{
    if (!c->proxy_slot)
        return;
    w->proxy_free[w->n_proxy_free++] = (uint16_t)(c->proxy_slot - 1);
    c->proxy_slot = 0;
    c->proxy_len = 0;
}

static void refuse(struct slb_worker *w, struct relay_conn *c, const char *why)
{
    COUNT(w, proxy_hdr_refused);
    slb_log_limited(&w->rl_limit, slb_loop_now_ms(&w->loop), SLB_LOG_WARN,
                    "proxy protocol: %s:%u: %s: closed", c->ip, c->port, why);
    conn_close(c, false);
}

bool proxy_hdr_unexpected(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len)
{
    /* The first bytes of a connection that was not asked for a header: a v2 signature or a
     * v1 "PROXY " (no TLS record and no SIP method starts so) is someone claiming an
     * address. */
    static const char v2[12] = "\r\n\r\n\0\r\nQUIT\n";
    size_t n2 = len < sizeof(v2) ? len : sizeof(v2), n1 = len < 6 ? len : 6;
    if (len == 0 || (memcmp(data, v2, n2) && memcmp(data, "PROXY ", n1)))
        return false;
    refuse(w, c, "a PROXY header from a source not in --proxy-protocol-from");
    return true;
}

void proxy_hdr_input(struct slb_worker *w, struct relay_conn *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t n = len, before = c->proxy_len; /* bytes of the header read earlier */
    if (c->proxy_slot) {
        size_t room = SLB_PROXY_HDR_MAX - c->proxy_len, take = len < room ? len : room;
        memcpy(buf_of(w, c) + c->proxy_len, data, take);
        c->proxy_len = (uint16_t)(c->proxy_len + take);
        p = buf_of(w, c);
        n = c->proxy_len;
    }
    struct slb_proxy_hdr h;
    int r = slb_proxy_hdr_parse(p, n, &h);
    if (r == 0) {
        if (!c->proxy_slot) {
            if (!w->n_proxy_free) {
                refuse(w, c, "a header split across reads and no buffer free");
                return;
            }
            c->proxy_slot = (uint16_t)(w->proxy_free[--w->n_proxy_free] + 1);
            memcpy(buf_of(w, c), data, len);
            c->proxy_len = (uint16_t)len;
        }
        return;
    }
    if (r < 0) {
        refuse(w, c,
               r == -EPROTONOSUPPORT ? "a PROXY header of an address family we do not take"
                                     : "no valid PROXY header");
        return;
    }
    c->proxy_wait = false;
    COUNT(w, proxy_hdr_ok);
    /* The bytes after the header belong to TLS (or plain SIP). The header ends in this read
     * (the earlier bytes alone were not a whole one), so they are the rest of this read. */
    const uint8_t *rest = (const uint8_t *)data + ((size_t)r - before);
    size_t rest_len = len - ((size_t)r - before);
    proxy_hdr_release(w, c);
    if (!h.local) {
        slb_sockaddr_text((const struct sockaddr *)&h.src, c->ip, sizeof(c->ip), &c->port);
        c->ip_len = (uint8_t)strlen(c->ip);
    }
    if (admit_source(w, c, h.local ? &c->s.conn->peer : &h.src) < 0) {
        conn_close(c, false);
        return;
    }
    slb_conn_set_timeout(
        c->s.conn, (uint32_t)(c->s.plain ? w->cfg->idle_timeout_ms : w->cfg->handshake_timeout_ms));
    if (rest_len)
        client_input(w, c, rest, rest_len);
}
