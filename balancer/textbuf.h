/* A growing text buffer for the admin side (metrics, JSON): printf-style appends, one
 * allocation failure remembered. Off the message path: it allocates freely. Owned by the
 * caller; one thread. */
#ifndef SLB_BALANCER_TEXTBUF_H
#define SLB_BALANCER_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

struct slb_textbuf {
    char *p;
    size_t len, cap;
    bool failed; /* an append ran out of memory: the text is incomplete */
};

void slb_textbuf_printf(struct slb_textbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends s as the inside of a JSON or Prometheus label string (\, " and control
 * characters escaped). */
void slb_textbuf_quoted(struct slb_textbuf *b, const char *s);

void slb_textbuf_free(struct slb_textbuf *b);

#endif
