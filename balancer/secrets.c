/* secrets.c — --secret-file: parse, permission check, and the keys derived from a secret.
 * Runs on the main thread only (boot and SIGHUP). */
#include "balancer/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls/tls.h"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int slb_secrets_parse(const char *text, size_t len, struct slb_secrets *out, char *err,
                      size_t errlen)
{
    out->n = 0;
    unsigned line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        line_no++;
        size_t a = pos, b = end;
        pos = end + 1;
        const char *hash = memchr(text + a, '#', b - a);
        if (hash)
            b = (size_t)(hash - text);
        while (a < b && is_blank(text[a]))
            a++;
        while (b > a && is_blank(text[b - 1]))
            b--;
        if (a == b)
            continue;
        if (b - a != 2 * SLB_SECRET_BYTES) {
            snprintf(err, errlen,
                     "line %u: a key is 64 hexadecimal digits (openssl rand -hex 32), "
                     "this line has %zu characters",
                     line_no, b - a);
            return -EINVAL;
        }
        if (out->n == SLB_SECRETS_MAX) {
            snprintf(err, errlen, "line %u: more than %u keys", line_no, SLB_SECRETS_MAX);
            return -EINVAL;
        }
        uint8_t *k = out->key[out->n];
        for (unsigned i = 0; i < SLB_SECRET_BYTES; i++) {
            int hi = hex_digit(text[a + 2 * i]), lo = hex_digit(text[a + 2 * i + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(err, errlen, "line %u: not a hexadecimal digit at column %u", line_no,
                         2 * i + (hi < 0 ? 1 : 2));
                return -EINVAL;
            }
            k[i] = (uint8_t)(hi << 4 | lo);
        }
        for (unsigned j = 0; j < out->n; j++)
            if (!memcmp(out->key[j], k, SLB_SECRET_BYTES)) {
                snprintf(err, errlen, "line %u: the same key as key %u", line_no, j + 1);
                return -EINVAL;
            }
        out->n++;
    }
    if (out->n == 0) {
        snprintf(err, errlen, "no key (one per line, 64 hexadecimal digits: openssl rand -hex 32)");
        return -EINVAL;
    }
    return (int)out->n;
}

int slb_secrets_read(const char *path, struct slb_secrets *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "%s: readable by group or others (mode %04o): it holds secrets; "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -EPERM;
    }
    char text[SLB_SECRETS_FILE_MAX + 1];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, text + len, sizeof(text) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > SLB_SECRETS_FILE_MAX) {
            snprintf(err, errlen, "%s: over %u bytes", path, SLB_SECRETS_FILE_MAX);
            close(fd);
            return -EINVAL;
        }
    }
    close(fd);
    char why[200];
    int rc = slb_secrets_parse(text, len, out, why, sizeof(why));
    explicit_bzero(text, sizeof(text));
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", path, why);
    return rc;
}

int slb_secret_mac_key(const uint8_t secret[SLB_SECRET_BYTES], struct slb_siphash_key *out)
{
    uint8_t b[16];
    int rc = slb_tls_hkdf_sha256(secret, SLB_SECRET_BYTES, "sipslb v1 token mac", b, sizeof(b));
    if (rc == 0) {
        memcpy(&out->k0, b, 8);
        memcpy(&out->k1, b + 8, 8);
    }
    explicit_bzero(b, sizeof(b));
    return rc;
}

int slb_secret_ticket_key(const uint8_t secret[SLB_SECRET_BYTES], uint8_t out[48])
{
    return slb_tls_hkdf_sha256(secret, SLB_SECRET_BYTES, "sipslb v1 tls ticket", out, 48);
}
