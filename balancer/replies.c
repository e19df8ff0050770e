/* The responses sipslb writes itself (RFC 3261 16.3 checks, errors, 503s, 430s), counted
 * by status, and the answer to a keepalive. A reply that cannot be queued is dropped: the
 * client is backed up and the stall bound handles it.
 *
 * Thread: the worker's. */
#include <stdio.h>
#include <strings.h>

#include "balancer/worker-priv.h"

static void count_reply(struct slb_worker *w, int status)
{
    switch (status) {
    case 400:
        COUNT(w, replied_400);
        break;
    case 483:
        COUNT(w, replied_483);
        break;
    case 503:
        COUNT(w, replied_503);
        break;
    case 505:
        COUNT(w, replied_505);
        break;
    case 513:
        COUNT(w, replied_513);
        break;
    default:
        COUNT(w, replied_other);
    }
}

void reply(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im, int status,
           const char *reason, const char *extra)
{
    const struct slb_sip_msg *m = im->m;
    if (!slb_proxy_can_reply(m))
        return;
    char tag[16];
    snprintf(tag, sizeof(tag), "slb%08x", (unsigned)slb_route_hash(m->call_id));
    int n = slb_proxy_reply(w->reply, w->reply_cap, m, im->base, status, reason, extra, tag);
    if (n < 0)
        return;
    struct iovec iov = {w->reply, (size_t)n};
    if (send_to(w, c, &iov, 1, (size_t)n) < 0)
        return;
    count_reply(w, status);
}

void reply_busy(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im,
                const char *reason, unsigned retry_after_s)
{
    char extra[RETRY_AFTER_LINE];
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_after_s);
    reply(w, c, im, 503, reason, extra);
}

void pong(struct slb_worker *w, struct relay_conn *c)
{
    static const char crlf[2] = {'\r', '\n'};
    struct iovec iov = {(void *)crlf, 2};
    if (send_to(w, c, &iov, 1, 2) < 0)
        COUNT(w, pongs_dropped); /* backed up: the stall bound tells it, not a pong */
}

bool reject_request(struct slb_worker *w, struct relay_conn *c, const struct in_msg *im)
{
    const struct slb_sip_msg *m = im->m;
    /* RFC 5630: a sips: request travels over TLS only; on a tcp:// listener it is refused
     * (no RFC sets the code: 403, with the reason in the phrase). */
    if (c->s.plain && m->ruri.len >= 5 && !strncasecmp(m->ruri.ptr, "sips:", 5)) {
        reply(w, c, im, 403, "Forbidden - SIPS Requires TLS", NULL);
        return true;
    }
    const char *reason;
    char extra[SLB_SIP_MAX_LINE_BYTES_DEFAULT + 64]; /* a whole Unsupported line */
    int status =
        slb_proxy_check_request(m, &w->self, w->cfg->sips_only, &reason, extra, sizeof(extra));
    if (status == 0)
        return false;
    if (status == 482)
        COUNT(w, loops);
    reply(w, c, im, status, reason, extra[0] ? extra : NULL);
    return true;
}
