/* libFuzzer target over the proxy rules end to end, without sockets: the calls the relay
 * worker makes on each message (route_request.c, relay_response.c, toward_client.c,
 * replies.c), on a client's byte stream and a backend's.
 *
 * Input: two bytes (little endian) give the length of the client's stream, the rest is the
 * backend's. Client requests go through the 16.3 checks (our answer when they fail) or the
 * forwarding edits; the backend then answers each forwarded request, and that answer goes
 * back through the response rules. Backend requests carrying a flow token go toward the
 * client they name. Invariants, each an abort when broken:
 *  - every message we write (forwarded request, relayed response, our own answer) scans
 *    as valid SIP, to exactly its length, with the Call-ID it had;
 *  - no request leaves without our Via on top, whose branch names the connection it came
 *    from and its side; it has exactly one Via more than it came with;
 *  - a response goes only to the connection its branch names: the backend's answer to a
 *    forwarded request comes back to the client that sent it, with our Via gone;
 *  - a response whose top Via we did not make is never taken for ours.
 * Run with ASan+UBSan (deploy/fuzz-campaign.sh). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/proxy.h"
#include "balancer/token.h"
#include "core/sip.h"
#include "core/sip_edit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CLIENT_CONN   UINT64_C(0x0001000000000042) /* the client's connection id */
#define BACKEND_CONN  UINT64_C(0x0002000000000007) /* our link to the backend */
#define BACKEND_TOKEN 0x5eedu

static struct slb_proxy_self self;
static struct slb_sip_msg in, fwd, resp, back;
static struct slb_sip_header in_h[SLB_SIP_MAX_HEADERS_DEFAULT];
static struct slb_sip_header fwd_h[SLB_SIP_MAX_HEADERS_DEFAULT + 8];
static struct slb_sip_header resp_h[SLB_SIP_MAX_HEADERS_DEFAULT + 8];
static struct slb_sip_header back_h[SLB_SIP_MAX_HEADERS_DEFAULT + 8];
static struct slb_sip_edit ed;
static char out[SLB_SIP_MAX_MSG_BYTES_DEFAULT + 8192],
    reply_buf[SLB_SIP_MAX_MSG_BYTES_DEFAULT + 8192];
static char back_buf[SLB_SIP_MAX_MSG_BYTES_DEFAULT + 8192];
static struct slb_sip_limits lim, big;

static void fail(const char *why, const char *m, size_t n)
{
    fprintf(stderr, "fuzz_proxy: %s\n", why);
    if (m)
        fwrite(m, 1, n, stderr);
    abort();
}

/* What we wrote scans back as valid, to its length, with the Call-ID of its origin. */
static void must_scan(const char *m, size_t n, struct slb_sip_msg *msg, struct slb_sip_header *h,
                      struct slb_slice call_id, const char *what)
{
    if (slb_sip_scan(m, n, &big, msg, h, SLB_SIP_MAX_HEADERS_DEFAULT + 8) != 0)
        fail(what, m, n);
    if (msg->msg_len != n || !slb_slice_eq(msg->call_id, call_id))
        fail(what, m, n);
}

/* Our own answer to request `in` (its bytes at base): a valid response to it. */
static void answer(const char *base, int status)
{
    if (!slb_proxy_can_reply(&in))
        return;
    int n = slb_proxy_reply(reply_buf, sizeof(reply_buf), &in, base, status, "Fuzz", NULL, "tag1");
    if (n < 0)
        return; /* did not fit: the relay drops it (counted) */
    /* The client's own malformed Via, From, To or CSeq given back, as RFC 3261 8.2.6 says:
     * our answer copies its Via lines, its From and To whole (a To tag added cannot end a
     * quoted string) and its CSeq, so such a fault in the answer is the request's. */
    if (slb_sip_scan(reply_buf, (size_t)n, &big, &resp, resp_h, SLB_SIP_MAX_HEADERS_DEFAULT + 8) <
            0 &&
        (resp.err == SLB_SIP_E_VIA || resp.err == SLB_SIP_E_FROM_TO || resp.err == SLB_SIP_E_CSEQ))
        return;
    must_scan(reply_buf, (size_t)n, &resp, resp_h, in.call_id, "our answer does not scan");
    if (resp.is_request || resp.status != status || resp.via_count != in.via_count)
        fail("our answer is not the response to its request", reply_buf, (size_t)n);
}

/* Flattens the edit and checks the forwarded request: valid, our Via on top naming conn
 * and side, one Via more. Returns its length, or 0 when it did not fit. */
static size_t forwarded(uint64_t conn, bool backend_side)
{
    int n = slb_sip_edit_flatten(&ed, out, sizeof(out));
    if (n < 0 || (size_t)n != slb_sip_edit_len(&ed))
        fail("edit flatten", NULL, 0);
    must_scan(out, (size_t)n, &fwd, fwd_h, in.call_id, "forwarded request does not scan");
    uint64_t named;
    uint32_t tx;
    struct slb_sip_via v;
    if (!fwd.is_request || fwd.via_count != in.via_count + 1 ||
        slb_sip_via_parse(fwd.vias[0].value, &v) < 0 ||
        !slb_branch_parse(v.branch, &self.branch_key, &named, &tx, NULL) || named != conn ||
        ((tx & SLB_BRANCH_TX_BACKEND_SIDE) != 0) != backend_side)
        fail("forwarded request without our Via naming its origin", out, (size_t)n);
    return (size_t)n;
}

/* The next hop answers the forwarded request (copying its Vias, as RFC 3261 8.2.6 says);
 * that answer comes back through the response rules to the connection that sent it. */
static void answered_back(int status, uint64_t origin, bool origin_backend_side)
{
    int n = slb_proxy_reply(back_buf, sizeof(back_buf), &fwd, out, status, "OK", NULL, "tag2");
    if (n < 0)
        return;
    must_scan(back_buf, (size_t)n, &back, back_h, in.call_id, "next hop's answer does not scan");
    uint64_t named;
    bool side;
    if (!slb_proxy_response_target(&back, &self, &named, NULL, &side) || named != origin ||
        side != origin_backend_side)
        fail("the answer does not go back to the connection that sent the request", back_buf,
             (size_t)n);
    slb_sip_edit_init(&ed, back_buf, (size_t)n);
    if (slb_sip_edit_pop_via(&ed, &back) < 0)
        fail("our Via cannot be popped", back_buf, (size_t)n);
    int m = slb_sip_edit_flatten(&ed, reply_buf, sizeof(reply_buf));
    if (m < 0)
        fail("flatten", NULL, 0);
    /* The origin's own Via is on top again; its next Vias were never checked by anyone, so
     * only the top one is required to scan. */
    must_scan(reply_buf, (size_t)m, &resp, resp_h, in.call_id, "relayed answer does not scan");
    if (resp.via_count != in.via_count)
        fail("relayed answer lost or kept a Via", reply_buf, (size_t)m);
}

/* route_request.c: a client's request, checked, then forwarded (or answered by us). */
static void client_request(const char *base, int status)
{
    struct slb_route_info ri;
    slb_proxy_route_info(&in, &self, &ri);
    bool strict = !ri.ours && slb_proxy_strict_routed(&in, &self, &ri);
    bool ack = in.method_id == SLB_METHOD_ACK;
    if (in.max_forwards == 0 || in.via_count >= SLB_SIP_MAX_VIAS) {
        if (!ack)
            answer(base, 483);
        return;
    }
    const char *reason;
    char extra[SLB_SIP_MAX_LINE_BYTES_DEFAULT + 64];
    int st = ack ? 0 : slb_proxy_check_request(&in, &self, false, &reason, extra, sizeof(extra));
    if (st) {
        answer(base, st);
        return;
    }
    slb_sip_edit_init(&ed, base, in.msg_len);
    uint32_t tx;
    int rc = slb_proxy_request_edits(&ed, &in, &self, "192.0.2.1", 9, 5061, CLIENT_CONN, false,
                                     ack ? 0 : 0x123456789ull, &tx);
    if (rc == 0 && ri.ours)
        rc = strict ? slb_sip_edit_strict_route(&ed, &in)
                    : slb_sip_edit_pop_list_values(&ed, &in, SLB_HDR_ROUTE, ri.count);
    if (rc == -ENOENT)
        rc = 0;
    if (rc == 0 && slb_proxy_dialog_forming(&in))
        rc = slb_proxy_record_route(&ed, &in, &self, BACKEND_TOKEN, CLIENT_CONN, 0, false);
    if (rc == 0 && in.method_id == SLB_METHOD_REGISTER)
        rc = slb_proxy_path(&ed, &in, &self, CLIENT_CONN, 0);
    if (rc < 0) {
        answer(base, 513); /* too large to edit */
        return;
    }
    forwarded(CLIENT_CONN, false);
    if (!ack)
        answered_back(status, CLIENT_CONN, false);
}

/* toward_client.c: a backend's request with a valid flow token goes to that client. */
static void backend_request(const char *base, int status)
{
    struct slb_route_info ri;
    slb_proxy_route_info(&in, &self, &ri);
    if (!ri.has_flow || !ri.flow_ok || in.max_forwards == 0 || in.via_count >= SLB_SIP_MAX_VIAS)
        return;
    slb_sip_edit_init(&ed, base, in.msg_len);
    int rc =
        slb_proxy_request_edits(&ed, &in, &self, "192.0.2.2", 9, 5061, BACKEND_CONN, true, 0, NULL);
    if (rc == 0)
        rc = slb_sip_edit_pop_list_values(&ed, &in, SLB_HDR_ROUTE, ri.count);
    if (rc == 0 && slb_proxy_dialog_forming(&in))
        rc = slb_proxy_record_route(&ed, &in, &self, BACKEND_TOKEN, ri.flow, ri.flow_flags, true);
    if (rc < 0)
        return;
    forwarded(BACKEND_CONN, true);
    if (in.method_id != SLB_METHOD_ACK)
        answered_back(status, BACKEND_CONN, true);
}

/* relay_response.c: a response is relayed only when its top Via is one we made. */
static void response(const char *base)
{
    uint64_t named;
    bool side;
    if (!slb_proxy_response_target(&in, &self, &named, NULL, &side))
        return;
    /* The fuzzer cannot forge our MAC: it can only replay a branch the seeds hold. */
    if (in.via_count == 0 || in.top_via.branch.len != SLB_BRANCH_LEN)
        fail("a response taken for ours without our branch", base, in.msg_len);
    slb_sip_edit_init(&ed, base, in.msg_len);
    if (slb_sip_edit_pop_via(&ed, &in) < 0)
        fail("our Via cannot be popped", base, in.msg_len);
    if (slb_sip_edit_flatten(&ed, out, sizeof(out)) < 0)
        fail("flatten", NULL, 0);
}

static void stream(const char *buf, size_t size, bool from_backend, uint8_t seed)
{
    size_t at = 0;
    for (int frames = 0; at < size && frames < 200; frames++) {
        struct slb_sip_frame fr = {0};
        slb_sip_frame(buf + at, size - at, &lim, &in, in_h, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        if (fr.kind == SLB_FRAME_NEED_MORE || fr.kind == SLB_FRAME_FATAL)
            break;
        if (fr.frame_len == 0 || fr.frame_len > size - at)
            fail("a frame that does not advance or overruns", NULL, 0);
        const char *base = buf + at;
        int status = 100 + (seed + frames * 37) % 600; /* the next hop's answer */
        if (fr.kind == SLB_FRAME_BAD && in.is_request && slb_proxy_can_reply(&in))
            answer(base, slb_sip_err_status(in.err));
        else if (fr.kind == SLB_FRAME_MESSAGE && !in.is_request)
            response(base);
        else if (fr.kind == SLB_FRAME_MESSAGE && from_backend)
            backend_request(base, status);
        else if (fr.kind == SLB_FRAME_MESSAGE)
            client_request(base, status);
        at += fr.frame_len;
    }
}

static void setup(void)
{
    if (!self.via_sent_by_len) {
        strcpy(self.via_sent_by, "lb.example.com:5061");
        self.via_sent_by_len = strlen(self.via_sent_by);
        struct slb_siphash_key key = {0x736970736c622d66ull, 0x757a7a2d6b657921ull};
        slb_proxy_self_set_keys(&self, &key, 1, 0x5eed);
        slb_sip_limits_default(&lim);
        big = lim;
        /* Our edits lengthen a message, add header lines and lengthen a Via line. */
        big.max_msg_bytes += 4096;
        big.max_headers += 8;
        big.max_line_bytes += 512;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Seeds that reach past the MAC checks: the fuzzer cannot forge our tokens, so the seed
 * corpus carries real ones (made with this target's fixed key). Written when
 * SLB_FUZZ_PROXY_SEEDS names a directory (deploy/fuzz-campaign.sh --make-seeds). */
static void write_seed(const char *dir, const char *name, const char *client, size_t clen,
                       const char *backend, size_t blen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    unsigned char len[2] = {(unsigned char)(clen & 0xff), (unsigned char)(clen >> 8)};
    fwrite(len, 1, 2, f);
    fwrite(client, 1, clen, f);
    fwrite(backend, 1, blen, f);
    fclose(f);
}

static const char seed_register[] =
    "REGISTER sips:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.9:40000;branch=z9hG4bKseed1;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sips:alice@example.com>;tag=a1\r\n"
    "To: <sips:alice@example.com>\r\nCall-ID: seed-reg@192.0.2.9\r\nCSeq: 1 REGISTER\r\n"
    "Contact: <sips:alice@192.0.2.9:40000;transport=tls>\r\nContent-Length: 0\r\n\r\n";
static const char seed_invite[] =
    "INVITE sips:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.9:40000;branch=z9hG4bKseed2\r\n"
    "Max-Forwards: 70\r\nFrom: <sips:alice@example.com>;tag=a2\r\n"
    "To: <sips:bob@example.com>\r\nCall-ID: seed-inv@192.0.2.9\r\nCSeq: 1 INVITE\r\n"
    "Contact: <sips:alice@192.0.2.9:40000>\r\nContent-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    const char *dir = getenv("SLB_FUZZ_PROXY_SEEDS");
    if (!dir)
        return 0;
    static char backend[8192];
    /* A client REGISTER: forwarded with our Path (a flow token), answered by the backend
     * with our branch in its top Via. */
    static char reg[sizeof(seed_register)];
    memcpy(reg, seed_register, sizeof(seed_register));
    if (slb_sip_scan(reg, sizeof(seed_register) - 1, &lim, &in, in_h,
                     SLB_SIP_MAX_HEADERS_DEFAULT) != 0)
        fail("seed REGISTER does not scan", NULL, 0);
    client_request(reg, 200);
    /* The forwarded REGISTER is in out: its Path value becomes a backend INVITE's Route. */
    const char *path = strstr(out, "Path: ");
    const char *eol = path ? strstr(path, "\r\n") : NULL;
    if (!eol)
        fail("no Path in the forwarded REGISTER", NULL, 0);
    int blen = snprintf(backend, sizeof(backend),
                        "INVITE sips:alice@192.0.2.9:40000;transport=tls SIP/2.0\r\n"
                        "Via: SIP/2.0/TLS registrar.example.com;branch=z9hG4bKback1\r\n"
                        "Max-Forwards: 69\r\nRoute: %.*s\r\n"
                        "From: <sips:carol@example.com>;tag=c1\r\n"
                        "To: <sips:alice@example.com>\r\nCall-ID: seed-back@registrar\r\n"
                        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                        (int)(eol - path - 6), path + 6);
    /* And the backend's answer to the forwarded REGISTER (our branch on top). */
    int alen = slb_proxy_reply(backend + blen, sizeof(backend) - (size_t)blen, &fwd, out, 200, "OK",
                               NULL, "r1");
    if (alen < 0)
        fail("seed answer", NULL, 0);
    write_seed(dir, "register-path-and-flow", seed_register, sizeof(seed_register) - 1, backend,
               (size_t)blen + (size_t)alen);
    write_seed(dir, "invite", seed_invite, sizeof(seed_invite) - 1, backend, (size_t)blen);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 2)
        return 0;
    size_t client_len = (size_t)(data[0] | data[1] << 8);
    uint8_t seed = data[0];
    size -= 2;
    data += 2;
    if (client_len > size)
        client_len = size;
    /* Each part in its own heap block, so an over-read past it is caught by ASan. */
    char *client = malloc(client_len ? client_len : 1);
    char *backend = malloc(size > client_len ? size - client_len : 1);
    memcpy(client, data, client_len);
    memcpy(backend, data + client_len, size - client_len);
    stream(client, client_len, false, seed);
    stream(backend, size - client_len, true, seed);
    free(client);
    free(backend);
    return 0;
}
