/* Framing SIP messages on a stream transport (RFC 3261 18.3): a message is its headers up
 * to the empty line plus Content-Length bytes of body. Also RFC 5626 3.5.1 keepalives
 * and the CRLFs RFC 3261 7.5 lets appear between messages. And the mapping of every
 * rejection to what the proxy does about it.
 *
 * Invariants: never reads outside [buf, buf + len); cost per call is linear in the bytes
 * not yet known to be header-free (fr->resume), so a message dribbled in one byte at a
 * time costs linear, not quadratic, time. Pure; any thread. */
#include "core/sip.h"

#include <errno.h>
#include <string.h>

struct err_info {
    uint16_t status;
    bool closes; /* the stream cannot be framed past this fault */
    const char *reason;
};

static const struct err_info err_table[SLB_SIP_E__COUNT] = {
    [SLB_SIP_E_NONE] = {200, false, "OK"},
    [SLB_SIP_E_GARBAGE] = {400, true, "Bad Request - Not SIP"},
    [SLB_SIP_E_START_LINE] = {400, false, "Bad Request - Malformed Start Line"},
    [SLB_SIP_E_VERSION] = {505, false, "Version Not Supported"},
    [SLB_SIP_E_CTL_BYTE] = {400, false, "Bad Request - Control Byte In Start Line"},
    [SLB_SIP_E_CTL_NAME] = {400, true, "Bad Request - Control Byte In Header Name"},
    [SLB_SIP_E_HEADER_SYNTAX] = {400, true, "Bad Request - Malformed Header Line"},
    [SLB_SIP_E_LINE_TOO_LONG] = {513, true, "Message Too Large - Line Too Long"},
    [SLB_SIP_E_TOO_MANY_HEADERS] = {513, true, "Message Too Large - Too Many Headers"},
    [SLB_SIP_E_TOO_LARGE] = {513, true, "Message Too Large"},
    [SLB_SIP_E_NO_CONTENT_LENGTH] = {400, true, "Bad Request - Missing Content-Length"},
    [SLB_SIP_E_CONTENT_LENGTH] = {400, true, "Bad Request - Malformed Content-Length"},
    [SLB_SIP_E_CONTENT_LENGTH_CONFLICT] = {400, true, "Bad Request - Conflicting Content-Length"},
    [SLB_SIP_E_NO_CALL_ID] = {400, false, "Bad Request - Missing Call-ID"},
    [SLB_SIP_E_DUP_CALL_ID] = {400, false, "Bad Request - Multiple Call-ID"},
    [SLB_SIP_E_NO_VIA] = {400, false, "Bad Request - Missing Via"},
    [SLB_SIP_E_VIA] = {400, false, "Bad Request - Malformed Via"},
    [SLB_SIP_E_NO_CSEQ] = {400, false, "Bad Request - Missing CSeq"},
    [SLB_SIP_E_CSEQ] = {400, false, "Bad Request - Malformed CSeq"},
    [SLB_SIP_E_NO_FROM] = {400, false, "Bad Request - Missing From"},
    [SLB_SIP_E_NO_TO] = {400, false, "Bad Request - Missing To"},
    [SLB_SIP_E_MAX_FORWARDS] = {400, false, "Bad Request - Malformed Max-Forwards"},
    [SLB_SIP_E_CTL_VALUE] = {400, false, "Bad Request - Control Byte In Header Value"},
    [SLB_SIP_E_FROM_TO] = {400, false, "Bad Request - Malformed From or To"},
};

int slb_sip_err_status(enum slb_sip_err err)
{
    return err < SLB_SIP_E__COUNT ? err_table[err].status : 400;
}

const char *slb_sip_err_reason(enum slb_sip_err err)
{
    return err < SLB_SIP_E__COUNT ? err_table[err].reason : "Bad Request";
}

bool slb_sip_err_closes(enum slb_sip_err err)
{
    return err >= SLB_SIP_E__COUNT || err_table[err].closes;
}

/* Whether the header end (an empty line) lies in buf[from, len). Lines end in LF with an
 * optional CR, as the scanner accepts. */
static bool has_header_end(const char *buf, size_t len, size_t from)
{
    const char *p = buf + from, *end = buf + len;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf || lf + 1 >= end)
            return false;
        if (lf[1] == '\n' || (lf[1] == '\r' && lf + 2 < end && lf[2] == '\n'))
            return true;
        p = lf + 1;
    }
    return false;
}

/* A fatal frame found before any scan: msg must not describe the previous message (its
 * offsets and pointers belong to other bytes, and an error response built from them would
 * copy those bytes), so it describes nothing that could be answered. */
static void forget(struct slb_sip_msg *msg, enum slb_sip_err err)
{
    msg->is_request = false;
    msg->header_count = 0;
    msg->via_count = 0;
    memset(msg->first, 0xff, sizeof(msg->first));
    msg->err = err;
}

/* CRLFs in front of a message: a double CRLF is a keepalive ping, a single one a pong or
 * padding. Returns false when buf does not start with CR or LF. */
static bool frame_crlf(const char *buf, size_t len, struct slb_sip_msg *msg,
                       struct slb_sip_frame *fr)
{
    if (buf[0] == '\n') {
        fr->kind = SLB_FRAME_SKIP;
        fr->frame_len = 1;
        return true;
    }
    if (buf[0] != '\r')
        return false;
    static const char ping[4] = {'\r', '\n', '\r', '\n'};
    size_t n = len < 4 ? len : 4;
    if (memcmp(buf, ping, n) == 0 && n < 4) {
        /* Could still become a ping: wait rather than answer a half ping twice. */
        fr->kind = SLB_FRAME_NEED_MORE;
    } else if (n == 4 && memcmp(buf, ping, 4) == 0) {
        fr->kind = SLB_FRAME_PING;
        fr->frame_len = 4;
    } else if (buf[1] == '\n') {
        fr->kind = SLB_FRAME_SKIP;
        fr->frame_len = 2;
    } else {
        forget(msg, SLB_SIP_E_GARBAGE);
        fr->kind = SLB_FRAME_FATAL;
    }
    return true;
}

void slb_sip_frame(const char *buf, size_t len, const struct slb_sip_limits *lim,
                   struct slb_sip_msg *msg, struct slb_sip_header *headers, size_t max_headers,
                   struct slb_sip_frame *fr)
{
    fr->kind = SLB_FRAME_NEED_MORE;
    fr->frame_len = 0;
    msg->err = SLB_SIP_E_NONE;
    if (len == 0 || frame_crlf(buf, len, msg, fr))
        return;
    if (fr->need > len)
        return; /* headers seen, body still arriving */
    /* Until the header end has arrived, look only at the new bytes (minus 3, as the
     * empty line may straddle the old end). */
    if (fr->resume > 0 && fr->resume <= len) {
        size_t from = fr->resume > 3 ? fr->resume - 3 : 0;
        if (!has_header_end(buf, len, from)) {
            fr->resume = (uint32_t)len;
            if (len >= lim->max_msg_bytes) {
                forget(msg, SLB_SIP_E_TOO_LARGE);
                fr->kind = SLB_FRAME_FATAL;
            }
            return;
        }
    }
    int rc = slb_sip_scan(buf, len, lim, msg, headers, max_headers);
    if (rc == -EAGAIN) {
        fr->resume = (uint32_t)len;
        if (len >= lim->max_msg_bytes) {
            msg->err = SLB_SIP_E_TOO_LARGE;
            fr->kind = SLB_FRAME_FATAL;
        }
        return;
    }
    fr->resume = 0;
    if (rc < 0 && (slb_sip_err_closes(msg->err) || msg->msg_len == 0)) {
        fr->kind = SLB_FRAME_FATAL;
        return;
    }
    if (msg->msg_len > len) {
        fr->need = msg->msg_len; /* the headers are scanned again once, when it is all in */
        return;
    }
    fr->kind = rc == 0 ? SLB_FRAME_MESSAGE : SLB_FRAME_BAD;
    fr->frame_len = msg->msg_len;
}
