/* SHA-1, FIPS 180-4 sections 5.1.1 (padding), 5.3.1 (initial value) and 6.1.2 (the
 * computation); see core/sha1.h for why it exists.
 *
 * Invariants: ctx->block_used < 64 between calls; words are read and written big-endian
 * byte by byte, so the result does not depend on the host's byte order or on alignment.
 * Pure; any thread. */
#include "core/sha1.h"

#include <string.h>

static uint32_t rol32(uint32_t x, unsigned n)
{
    return x << n | x >> (32 - n);
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* 6.1.2 steps 1-4 on one 512-bit block. The schedule is kept as a 16-word ring instead of
 * all 80 words: each W[t] only needs the last 16. */
static void compress(uint32_t h[5], const uint8_t block[64])
{
    uint32_t w[16];
    for (unsigned t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (unsigned t = 0; t < 80; t++) {
        if (t >= 16)
            w[t & 15] = rol32(w[(t - 3) & 15] ^ w[(t - 8) & 15] ^ w[(t - 14) & 15] ^ w[t & 15], 1);
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d); /* Ch */
            k = 0x5A827999;
        } else if (t < 40) {
            f = b ^ c ^ d; /* Parity */
            k = 0x6ED9EBA1;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d); /* Maj */
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t tmp = rol32(a, 5) + f + e + k + w[t & 15];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void slb_sha1_init(struct slb_sha1_ctx *ctx)
{
    static const uint32_t h0[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    memcpy(ctx->h, h0, sizeof(h0));
    ctx->len_bytes = 0;
    ctx->block_used = 0;
}

void slb_sha1_update(struct slb_sha1_ctx *ctx, const void *data, size_t len)
{
    if (len == 0)
        return; /* data may be NULL then, which memcpy may not be given */
    const uint8_t *p = data;
    ctx->len_bytes += len;
    if (ctx->block_used > 0) {
        size_t take = 64 - ctx->block_used;
        if (take > len)
            take = len;
        memcpy(ctx->block + ctx->block_used, p, take);
        ctx->block_used += take;
        p += take;
        len -= take;
        if (ctx->block_used < 64)
            return;
        compress(ctx->h, ctx->block);
        ctx->block_used = 0;
    }
    /* Whole blocks straight from the caller's bytes, without a copy. */
    for (; len >= 64; p += 64, len -= 64)
        compress(ctx->h, p);
    if (len > 0)
        memcpy(ctx->block, p, len);
    ctx->block_used = len;
}

void slb_sha1_final(struct slb_sha1_ctx *ctx, uint8_t out[SLB_SHA1_LEN])
{
    /* 5.1.1: a 1 bit, zeros up to 448 mod 512 bits, then the length in bits as 64 bits
     * big-endian (lengths up to 2^64 bits; ours are a few dozen bytes). */
    uint64_t len_bits = ctx->len_bytes * 8;
    ctx->block[ctx->block_used++] = 0x80;
    if (ctx->block_used > 56) {
        memset(ctx->block + ctx->block_used, 0, 64 - ctx->block_used);
        compress(ctx->h, ctx->block);
        ctx->block_used = 0;
    }
    memset(ctx->block + ctx->block_used, 0, 56 - ctx->block_used);
    store_be32(ctx->block + 56, (uint32_t)(len_bits >> 32));
    store_be32(ctx->block + 60, (uint32_t)len_bits);
    compress(ctx->h, ctx->block);
    for (unsigned i = 0; i < 5; i++)
        store_be32(out + 4 * i, ctx->h[i]);
    ctx->block_used = 0;
}

void slb_sha1(const void *data, size_t len, uint8_t out[SLB_SHA1_LEN])
{
    struct slb_sha1_ctx ctx;
    slb_sha1_init(&ctx);
    slb_sha1_update(&ctx, data, len);
    slb_sha1_final(&ctx, out);
}
