/* The admin side's text buffer (textbuf.h). */
#include "balancer/textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static bool reserve(struct slb_textbuf *b, size_t more)
{
    if (b->failed)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void slb_textbuf_printf(struct slb_textbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void slb_textbuf_quoted(struct slb_textbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == '"')
            slb_textbuf_printf(b, "\\%c", c);
        else if (c == '\n')
            slb_textbuf_printf(b, "\\n");
        else if (c < 0x20)
            slb_textbuf_printf(b, "\\u%04x", c);
        else
            slb_textbuf_printf(b, "%c", c);
    }
}

void slb_textbuf_free(struct slb_textbuf *b)
{
    free(b->p);
    *b = (struct slb_textbuf){0};
}
