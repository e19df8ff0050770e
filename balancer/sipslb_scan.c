/* sipslb-scan: shows how sipslb reads captured SIP messages. Each FILE holds raw messages
 * back to back (CRLF line ends, as on the wire); one line per message says what the
 * scanner found, or why the message was rejected and what sipslb would answer.
 * Exit status: 0 all messages valid, 1 some rejected or truncated, 2 usage or I/O error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sip.h"

static struct slb_sip_header headers[SLB_SIP_MAX_HEADERS_DEFAULT];
static struct slb_sip_msg msg;

/* Prints a slice with anything unprintable escaped: message bytes are not C strings. */
static void put_slice(struct slb_slice s)
{
    if (!s.ptr) {
        fputs("-", stdout);
        return;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c >= 0x7f || c == '\\')
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static void put_message(void)
{
    if (msg.is_request) {
        fputs("request ", stdout);
        put_slice(msg.method);
    } else {
        printf("response %u", msg.status);
    }
    fputs(" call-id=", stdout);
    put_slice(msg.call_id);
    printf(" vias=%u cseq=%u ", msg.via_count, msg.cseq);
    put_slice(msg.cseq_method);
    printf(" content-length=%lld branch=", (long long)msg.content_length);
    put_slice(msg.top_via.branch);
    putchar('\n');
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger)
            free(buf);
        buf = bigger;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Returns the number of rejected messages in the file, or -1 when it cannot be read. */
static int scan_file(const char *path, const struct slb_sip_limits *lim)
{
    size_t len;
    char *data = read_file(path, &len);
    if (!data) {
        fprintf(stderr, "sipslb-scan: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rejected = 0;
    size_t at = 0;
    while (at < len) {
        struct slb_sip_frame fr = {0};
        slb_sip_frame(data + at, len - at, lim, &msg, headers, SLB_SIP_MAX_HEADERS_DEFAULT, &fr);
        printf("%s:%zu: ", path, at);
        switch (fr.kind) {
        case SLB_FRAME_MESSAGE:
            put_message();
            break;
        case SLB_FRAME_PING:
            puts("keepalive ping (answered with CRLF)");
            break;
        case SLB_FRAME_SKIP:
            puts("CRLF between messages (skipped)");
            break;
        case SLB_FRAME_BAD:
        case SLB_FRAME_FATAL:
            rejected++;
            printf("rejected: %s -> %d%s\n", slb_sip_err_reason(msg.err),
                   slb_sip_err_status(msg.err),
                   fr.kind == SLB_FRAME_FATAL ? ", connection closed" : "");
            break;
        case SLB_FRAME_NEED_MORE:
            rejected++;
            printf("truncated: %zu bytes do not hold a whole message\n", len - at);
            break;
        }
        if (fr.kind == SLB_FRAME_FATAL || fr.kind == SLB_FRAME_NEED_MORE)
            break;
        at += fr.frame_len;
    }
    free(data);
    return rejected;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: sipslb-scan FILE...\n"
                "Prints, one line per SIP message in each FILE (raw messages back to back,\n"
                "CRLF line ends), what sipslb's scanner finds: method or status, Call-ID,\n"
                "Via count, CSeq, Content-Length, top Via branch; or why it is rejected.\n"
                "Exit status: 0 all valid, 1 some rejected or truncated, 2 unreadable file.\n");
        return argc < 2 ? 2 : 0;
    }
    struct slb_sip_limits lim;
    slb_sip_limits_default(&lim);
    int status = 0;
    for (int i = 1; i < argc; i++) {
        int r = scan_file(argv[i], &lim);
        if (r < 0)
            status = 2;
        else if (r > 0 && status == 0)
            status = 1;
    }
    return status;
}
